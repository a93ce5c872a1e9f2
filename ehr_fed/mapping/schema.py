"""JSON Schemas of the config files, generated from the same pydantic models (for editors)."""

from __future__ import annotations

import json

from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.study import StudySpec

SCHEMA_KINDS = {"mapping": (SiteMapping, "site_mapping"), "study": (StudySpec, "study")}


def json_schema(kind: str = "mapping") -> dict:
    """The JSON Schema of a site mapping (``"mapping"``) or a study spec (``"study"``)."""
    if kind not in SCHEMA_KINDS:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {sorted(SCHEMA_KINDS)}")
    model, name = SCHEMA_KINDS[kind]
    schema = model.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"ehr-fed/{name}.schema.json",
            **schema}


def json_schema_text(kind: str = "mapping") -> str:
    return json.dumps(json_schema(kind), indent=2, sort_keys=False) + "\n"
