"""Batch prediction: score every index event of a site with a saved model.

Made for scheduled jobs (cron, Airflow): the site's source is harmonized with
the same study spec and the site's mapping config, the feature table is checked
against the model's feature schema, and the scores are written atomically.
The output is a pure function of its inputs (idempotent): the same model file,
source, mapping and study give byte-identical rows and scores. Each row carries
the sha256 of the model file and the model version, and so does the Parquet
file's metadata.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEY_COLUMNS = ["site_id", "person_key", "index_time"]


class ScoringSchemaError(ValueError):
    """The site's feature table does not have the columns the model was trained on."""


@dataclass(frozen=True)
class ScoringResult:
    """What a batch prediction wrote."""

    out: Path
    rows: int
    model_sha256: str
    model_version: str
    quarantined: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "rows": self.rows,
            "model_sha256": self.model_sha256,
            "model_version": self.model_version,
            "quarantined": self.quarantined,
        }


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_schema(table: pd.DataFrame, feature_names: list[str]) -> None:
    """Raise :class:`ScoringSchemaError` with a column diff when ``table`` lacks the model's features."""
    missing = [c for c in feature_names if c not in table.columns]
    if not missing:
        return
    have = [c for c in table.columns if c not in KEY_COLUMNS and c != "label"]
    diff = "\n".join(
        difflib.unified_diff(list(feature_names), have, "model features", "site feature table", lineterm="")
    )
    raise ScoringSchemaError(
        f"the site's feature table lacks {len(missing)} feature(s) the model was trained on: "
        f"{', '.join(missing)}. Harmonize with the study spec the model was trained with "
        f"(or retrain the model).\n{diff}"
    )


def score_table(model, table: pd.DataFrame, *, model_sha256: str, model_version: str) -> pd.DataFrame:
    """Scores of every row of a feature table, in a stable order."""
    features = list(model.feature_names_in_)
    check_schema(table, features)
    proba = model.predict_proba(table[features])[:, 1]
    out = table[KEY_COLUMNS].copy()
    out["score"] = proba.astype("float64")
    out["model_sha256"] = model_sha256
    out["model_version"] = model_version
    return out.sort_values(["person_key", "index_time"], kind="mergesort").reset_index(drop=True)


def write_atomically(frame: pd.DataFrame, out: Path, metadata: dict[str, str]) -> None:
    """Write Parquet (with key-value metadata) or CSV to a temp file beside ``out``, then rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if out.suffix.lower() == ".parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            merged = dict(table.schema.metadata or {})
            merged.update({f"ehr_fed.{k}".encode(): v.encode() for k, v in metadata.items()})
            # no pandas metadata: it embeds library versions, which would break idempotence across upgrades
            merged.pop(b"pandas", None)
            pq.write_table(table.replace_schema_metadata(merged), tmp)
        elif out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S")
        else:
            raise ValueError(f"--out must end in .parquet or .csv, got {out.name!r}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def predict_site(
    model_path: str | Path,
    *,
    source: str,
    input: str | Path,
    mapping: str | Path,
    out: str | Path,
    study: str | Path | None = None,
    strict: bool = False,
) -> ScoringResult:
    """Harmonize a site's source and score every index event with the model at ``model_path``.

    Parameters
    ----------
    model_path : path
        A model saved with ``model.save(path)``.
    source, input, mapping :
        The site's source kind (``fhir`` or ``omop``), its input and its mapping config.
    out : path
        ``.parquet`` or ``.csv``; written atomically.
    study : path, optional
        The study spec; by default the one embedded in the model file.
    """
    from ehr_fed import load_model
    from ehr_fed.cohort import harmonize

    model_path = Path(model_path)
    sha = file_sha256(model_path)
    model = load_model(model_path)
    version = str(getattr(model, "model_version_", None) or _model_file_version(model_path))
    study_spec = study if study is not None else _embedded_study(model, model_path)
    ft = harmonize(source, input, mapping, study_spec, strict=strict)
    scores = score_table(model, ft.table, model_sha256=sha, model_version=version)
    out = Path(out)
    write_atomically(scores, out, {"model_sha256": sha, "model_version": version, "model_file": model_path.name})
    return ScoringResult(out, len(scores), sha, version, dict(ft.summary.get("quarantined", {})))


def _model_file_version(path: Path) -> str:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return "unknown"
    for key in ("model_version", "version", "format_version"):
        if key in doc:
            return str(doc[key])
    return "unknown"


def _embedded_study(model, model_path: Path):
    study = getattr(model, "study_", None)
    if study is not None:
        return study
    raise ValueError(
        f"{model_path} does not embed the study spec it was trained with: pass --study FILE "
        "(the same study spec the federation used)"
    )
