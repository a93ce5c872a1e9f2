"""Batch prediction: score every index event of a site with a saved model.

Made for scheduled jobs (cron, Airflow): the site's source is harmonized with
the study spec the model was trained with and the site's mapping config, the
feature table is checked against the model's feature schema, and the scores are
written atomically (a temporary file beside the output, then a rename: a failed
run leaves no partial file and keeps the previous output).

The output is a pure function of its inputs (idempotent): the same model file,
source, mapping and study give byte-identical files. Each row carries the
sha256 of the model file and the model version, and so does the Parquet file's
key-value metadata (keys ``ehr_fed.model_sha256``, ``ehr_fed.model_version``,
``ehr_fed.model_kind``, ``ehr_fed.study_id``, ``ehr_fed.ehr_fed_version``).

Rejected source records go to ``<out>.quarantine.jsonl`` beside the output
(always written, possibly empty), as ``ehr-fed harmonize`` does.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: the identifying columns copied from the feature table into the scores
KEY_COLUMNS = ["site_id", "person_key", "index_time"]
#: the columns of a scores file, in order
OUTPUT_COLUMNS = [*KEY_COLUMNS, "score", "model_sha256", "model_version"]
OUTPUT_SUFFIXES = (".parquet", ".csv")

Log = Callable[..., None]


class ScoringSchemaError(ValueError):
    """The site's feature table (or study) does not match the model's feature schema."""


class StudyRequiredError(ValueError):
    """The model file does not embed its study spec and none was given."""


@dataclass(frozen=True)
class ScoringResult:
    """What a batch prediction wrote."""

    out: Path
    rows: int
    model_sha256: str
    model_version: str
    quarantined: dict[str, int]
    quarantine_file: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "rows": self.rows,
            "model_sha256": self.model_sha256,
            "model_version": self.model_version,
            "quarantined": self.quarantined,
            "quarantine_file": str(self.quarantine_file) if self.quarantine_file else None,
        }


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def quarantine_path(out: str | Path) -> Path:
    """``<out>.quarantine.jsonl`` beside the scores file."""
    out = Path(out)
    return out.with_name(out.name + ".quarantine.jsonl")


def model_version(doc: dict[str, Any]) -> str:
    """The version of a model document: its ``model_version`` when set, else ``<kind>-<created>``.

    ``created`` is written once when the model is saved, so the version names one trained model and
    stays the same however often the file is copied or scored.
    """
    explicit = doc.get("model_version")
    if explicit:
        return str(explicit)
    return f"{doc.get('kind', 'model')}-{doc.get('created') or 'unknown'}"


def _diff(expected: Sequence[str], got: Sequence[str], fromfile: str, tofile: str) -> str:
    return "\n".join(difflib.unified_diff(list(expected), list(got), fromfile, tofile, lineterm="", n=1))


def check_schema(table: pd.DataFrame, feature_names: Sequence[str], dtypes: Sequence[str] | None = None) -> None:
    """Check that ``table`` has the model's feature columns (and dtypes).

    Raises
    ------
    ScoringSchemaError
        When features are missing (the message holds a difflib diff: ``-`` model features the
        table lacks, ``+`` table features the model does not use) or a dtype differs.
    """
    feature_names = [str(n) for n in feature_names]
    missing = [c for c in feature_names if c not in table.columns]
    if missing:
        have = [str(c) for c in table.columns if c not in KEY_COLUMNS and c != "label"]
        raise ScoringSchemaError(
            f"the site's feature table lacks {len(missing)} feature(s) the model was trained on: "
            f"{', '.join(missing)}. Harmonize with the study spec the model was trained with "
            f"(or retrain the model).\n{_diff(feature_names, have, 'model features', 'site feature table')}"
        )
    if dtypes is not None:
        bad = [f"{n}: model {t}, table {table[n].dtype}"
               for n, t in zip(feature_names, dtypes, strict=True) if str(table[n].dtype) != str(t)]
        if bad:
            raise ScoringSchemaError("feature dtypes differ from the model's schema: " + "; ".join(bad))


def check_study(study, doc: dict[str, Any]) -> None:
    """Check that ``study`` is the study of the model document, and declares every model feature."""
    want = doc.get("study_id")
    if want and study.study_id != want:
        raise ScoringSchemaError(
            f"the model was trained for study {want!r}, but the study spec given is {study.study_id!r}; "
            "pass the study spec the model was trained with"
        )
    features = [f["name"] for f in doc["feature_schema"]]
    missing = [f for f in features if f not in study.feature_names]
    if missing:
        raise ScoringSchemaError(
            f"study {study.study_id!r} does not declare {len(missing)} feature(s) the model was trained on: "
            f"{', '.join(missing)}. Use the study spec the model was trained with (or retrain the model).\n"
            f"{_diff(features, study.feature_names, 'model features', f'study {study.study_id} features')}"
        )


def score_table(model, table: pd.DataFrame, *, model_sha256: str, model_version: str,
                dtypes: Sequence[str] | None = None) -> pd.DataFrame:
    """Scores of every row of a feature table, sorted by ``person_key, index_time``.

    Returns
    -------
    DataFrame
        Columns :data:`OUTPUT_COLUMNS`; ``score`` is the predicted probability of the label (float64).
    """
    features = [str(n) for n in model.feature_names_in_]
    check_schema(table, features, dtypes)
    out = table[KEY_COLUMNS].copy()
    out["score"] = model.predict_proba(table[features])[:, 1].astype("float64") if len(table) else []
    out["score"] = out["score"].astype("float64")
    out["model_sha256"] = model_sha256
    out["model_version"] = model_version
    out = out.sort_values(["person_key", "index_time"], kind="mergesort").reset_index(drop=True)
    return out[OUTPUT_COLUMNS]


def check_output_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"the output must end in .parquet or .csv, got {out.name!r}")
    return out


def _atomic(out: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``out``, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(frame: pd.DataFrame, out: str | Path, metadata: dict[str, str]) -> None:
    """Write Parquet (with ``ehr_fed.*`` key-value metadata) or CSV atomically.

    No timestamps and no pandas metadata (which embeds library versions) go into the file, so the
    same frame always gives the same bytes.
    """
    out = check_output_path(out)

    def write(tmp: Path) -> None:
        if out.suffix.lower() == ".parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = {f"ehr_fed.{k}".encode(): str(v).encode() for k, v in sorted(metadata.items())}
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        else:
            frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S", float_format="%.17g")

    _atomic(out, write)


def read_scores_metadata(path: str | Path) -> dict[str, str]:
    """The ``ehr_fed.*`` metadata of a Parquet scores file (prefix removed)."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode()[len("ehr_fed."):]: v.decode() for k, v in meta.items() if k.startswith(b"ehr_fed.")}


def resolve_study(doc: dict[str, Any], model_path: Path, study):
    """The study spec to harmonize with: ``study`` (path or StudySpec), else the one the model embeds."""
    from ehr_fed.mapping import StudySpec, load_study

    if study is None:
        embedded = doc.get("study")
        if isinstance(embedded, dict):
            return StudySpec.model_validate(embedded)
        sid = doc.get("study_id")
        raise StudyRequiredError(
            f"{model_path} does not embed the study spec it was trained with"
            + (f" (study {sid!r})" if sid else "")
            + ": pass --study FILE, the same study spec the federation used"
        )
    return study if isinstance(study, StudySpec) else load_study(study)


def predict_site(
    model_path: str | Path,
    *,
    source: str,
    input: str | Path,
    mapping: str | Path,
    out: str | Path,
    study: str | Path | None = None,
    strict: bool = False,
    workdir: str | Path | None = None,
    log: Log | None = None,
) -> ScoringResult:
    """Harmonize a site's source and score every index event with the model at ``model_path``.

    Parameters
    ----------
    model_path : path
        A model file written by ``model.save(path)`` or ``ehr-fed train``.
    source, input, mapping :
        The site's source kind (``fhir`` or ``omop``), its input and its mapping config.
    out : path
        ``.parquet`` or ``.csv``; written atomically, with ``<out>.quarantine.jsonl`` beside it.
    study : path or StudySpec, optional
        The study spec the model was trained with; required unless the model file embeds it.
    log : callable, optional
        ``log(event, **fields)`` is called with ``harmonized`` once the feature table is built.

    Raises
    ------
    StudyRequiredError
        No study given and none embedded in the model file.
    ScoringSchemaError
        The study or the site's feature table does not match the model (message with a column diff).
    ModelFormatError, ConfigError, QuarantineThresholdError, FileNotFoundError
        From loading the model, the configs, or harmonizing the source. Nothing is written then.
    """
    from ehr_fed.cohort import harmonize
    from ehr_fed.models.persistence import load_model, read_model_document

    out = check_output_path(out)
    model_path = Path(model_path)
    doc = read_model_document(model_path)
    sha, version = file_sha256(model_path), model_version(doc)
    study_spec = resolve_study(doc, model_path, study)
    check_study(study_spec, doc)
    model = load_model(model_path)
    # no progress bars: scheduled jobs keep stderr for their JSON-lines log
    ft = harmonize(source, str(input), mapping, study_spec, strict=strict, workdir=workdir, progress=False)
    if log is not None:
        log("harmonized", **{k: ft.summary.get(k) for k in ("index_events", "positives", "persons", "quarantined")})
    dtypes = [f.get("dtype", "float64") for f in doc["feature_schema"]]
    scores = score_table(model, ft.table, model_sha256=sha, model_version=version, dtypes=dtypes)
    from ehr_fed import __version__

    write_atomically(scores, out, {
        "model_sha256": sha, "model_version": version, "model_kind": str(doc.get("kind")),
        "study_id": study_spec.study_id, "model_file": model_path.name, "ehr_fed_version": __version__,
    })
    qpath = write_quarantine(ft, out)
    return ScoringResult(out, len(scores), sha, version, dict(ft.summary.get("quarantined", {})), qpath,
                         dict(ft.summary))


def write_quarantine(ft, out: Path) -> Path | None:
    """Write the feature table's quarantine atomically to ``<out>.quarantine.jsonl``."""
    quarantine = getattr(ft, "quarantine", None)
    if quarantine is None:
        return None
    path = quarantine_path(out)
    _atomic(path, quarantine.write)
    return path
