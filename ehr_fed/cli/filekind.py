"""Which of ehr-fed's files a path holds, so a command given the wrong one says so and names the right command.

The toolkit reads several YAML and JSON files that look alike to a person: a site YAML (``ehr-fed site
check``), a federation YAML (``--federation``), a site mapping config and a study spec (``--mapping``,
``--study``), model files, key files, the manifest of ``ehr-fed synth``. :func:`file_kind` recognises each by
the keys only it has; :func:`expect_kind` raises one clear error when a command is given another kind.

>>> expect_kind("fed/site_a/mapping_fhir.yaml", "site", "ehr-fed site check")  # doctest: +SKIP
FederationConfigError: fed/site_a/mapping_fhir.yaml is a site mapping config (site site_a, fhir source), not a
site YAML. ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: mapping-config keys that no site YAML or federation YAML has
_MAPPING_KEYS = {"visits", "code_systems", "local_codes", "units", "fhir", "omop", "description"}
#: study-spec keys that no site YAML has
_STUDY_KEYS = {"index_event", "label", "features", "concept_sets", "labs", "exclusions", "windows"}
#: the table or source a site YAML names
_SITE_DATA_KEYS = {"table", "input", "mapping", "keys", "policy", "audit_log"}

#: what each kind is, and which commands take it (``{path}`` is the file)
USES = {
    "site": "a site YAML goes to `ehr-fed site check {path}` or `ehr-fed site serve {path}`",
    "federation": "a federation YAML goes to `--federation {path}` of `ehr-fed stats`, `ehr-fed train` or "
                  "`ehr-fed evaluate`",
    "mapping": "a mapping config goes to `ehr-fed mapping validate {path}`, or to `--mapping {path}` of "
               "`ehr-fed harmonize`, `ehr-fed mapping preview` and `ehr-fed predict` (a site YAML names it "
               "under `mapping:`)",
    "study": "a study spec goes to `--study {path}` of `ehr-fed harmonize`, `train` or `evaluate`, or to "
             "`ehr-fed mapping validate {path}` (a site or federation YAML names it under `study:`)",
    "model": "a model file goes to `--model {path}` of `ehr-fed evaluate` or `ehr-fed predict`",
    "keys": "a key file goes to `ehr-fed keys show {path}` (a site YAML names it under `keys:`)",
    "manifest": "the manifest of `ehr-fed synth` is read by people; its federation YAML (federation.yaml in "
                "the same folder) goes to `--federation`",
}

#: what a command expects, in the words of its message
EXPECTED = {
    "site": "a site YAML (site_id, study, table or source + input + mapping, policy, keys; docs/deployment.md)",
    "federation": "a federation YAML (study, sites, transport, privacy; written by `ehr-fed synth`)",
    "mapping": "site mapping configs and study specs (the kind is detected)",
}


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def file_kind(path: str | Path) -> tuple[str, str] | None:
    """``(kind, detail)`` of a config-like file, or None when it is none of the known kinds (or unreadable).

    ``kind`` is one of the keys of :data:`USES`; ``detail`` says what was recognised ("it lists 3 sites").
    """
    path = Path(path)
    try:
        doc = _read(path) if path.is_file() else None
    except OSError:
        return None
    if not isinstance(doc, dict):
        return None
    keys = set(doc)
    if doc.get("format") == "ehr-fed-model":
        return "model", f"a {doc.get('kind', '?')} model of study {doc.get('study_id', '?')}"
    if "kex_private" in keys or "sign_private" in keys or ("fingerprint" in keys and "scheme" in keys):
        return "keys", f"site {doc.get('site_id', '?')}'s identity and Paillier keys"
    if "paillier_public" in keys and "sites" in keys and "creator" in keys:
        return "keys", "the coordinator's public key file"
    if isinstance(doc.get("parameters"), dict) and "generator_version" in doc["parameters"]:
        return "manifest", "the manifest of a synthetic federation"
    if isinstance(doc.get("sites"), list) and "site_id" not in keys:
        return "federation", f"it lists {len(doc['sites'])} site(s)"
    if "study_id" in keys and keys & _STUDY_KEYS and "site_id" not in keys:
        return "study", f"study {doc['study_id']}"
    if "site_id" in keys and "source" in keys and keys & _MAPPING_KEYS and not keys & _SITE_DATA_KEYS:
        return "mapping", f"site {doc['site_id']}, {doc['source']} source"
    if ("site_id" in keys or "id" in keys) and keys & _SITE_DATA_KEYS:
        return "site", f"site {doc.get('site_id') or doc.get('id')}"
    return None


_NAMES = {"site": "a site YAML", "federation": "a federation YAML", "mapping": "a site mapping config",
          "study": "a study spec", "model": "an ehr-fed model file", "keys": "a key file",
          "manifest": "the manifest of `ehr-fed synth`"}


def wrong_kind(path: str | Path, expected: str, command: str, also: tuple[str, ...] = ()) -> str | None:
    """The message for ``path`` when it is a known file of another kind than ``expected`` (or ``also``);
    None when it is of that kind or of no known kind (left to the command's own loader and its messages)."""
    found = file_kind(path)
    if found is None or found[0] in (expected, *also):
        return None
    kind, detail = found
    return (f"{path} is {_NAMES[kind]} ({detail}), not {_NAMES[expected]}. `{command}` takes "
            f"{EXPECTED[expected]}; " + USES[kind].format(path=path) + ".")


def expect_kind(path: str | Path, expected: str, command: str) -> None:
    """Raise a :class:`~ehr_fed.federation.config.FederationConfigError` when ``path`` is a known file of
    another kind than ``expected`` ("site" or "federation"), saying what it is and which command takes it.

    A file of no known kind is left to the command's own loader (which reports its problems).
    """
    from ehr_fed.federation.config import FederationConfigError

    message = wrong_kind(path, expected, command)
    if message:
        raise FederationConfigError(message)
