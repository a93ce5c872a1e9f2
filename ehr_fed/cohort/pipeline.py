"""The site pipeline: records -> mapped records -> index events -> feature table."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from ehr_fed.cohort import charlson
from ehr_fed.cohort.events import build_events
from ehr_fed.cohort.features import compute_features
from ehr_fed.cohort.schema import KEY_COLUMNS, validate_feature_table
from ehr_fed.cohort.table import FeatureTable, person_key, person_salt
from ehr_fed.mapping import SiteMapping, StudySpec, load_mapping, load_study
from ehr_fed.mapping.apply import apply_mapping

#: file mode of every patient-level output (feature tables, quarantine files, summaries, scores): owner only
PRIVATE_MODE = 0o600


def write_private(path, write) -> Path:
    """Write a patient-level file atomically with mode 0600: ``write(tmp_path)`` fills a temporary file
    beside ``path`` (created 0600, so the rows are never readable by others), then it replaces ``path``.

    Returns the path written; on failure no partial file is left and an existing ``path`` is kept.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, PRIVATE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: the packages whose code turns a source into a feature table (their digest keys harmonization caches)
HARMONIZATION_PACKAGES = ("ehr_fed.sources", "ehr_fed.mapping", "ehr_fed.cohort")


@functools.lru_cache(maxsize=1)
def harmonization_code_digest() -> str:
    """sha256 of the toolkit version and of every module of :data:`HARMONIZATION_PACKAGES` (path and bytes).

    A cached feature table keyed on it is rebuilt after an upgrade, or any local change to the code that
    reads sources, applies mappings or builds cohorts, instead of silently reusing a table older code built.
    """
    import hashlib
    import importlib

    from ehr_fed import __version__

    h = hashlib.sha256(f"ehr-fed {__version__}\n".encode())
    for name in HARMONIZATION_PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(f"{name}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


class TooFewIndexEventsError(ValueError):
    """The mapping matched fewer index events than required (often: another site's mapping)."""


def check_index_events(summary: dict, minimum: int) -> None:
    """Raise :class:`TooFewIndexEventsError` when ``summary['index_events'] < minimum``.

    Zero index events from a source that has records almost always means the wrong mapping (another
    site's local codes, or visit classes that match nothing), not an empty hospital.
    """
    n = int(summary.get("index_events") or 0)
    if n >= minimum:
        return
    records = sum((summary.get("source_records") or {}).values())
    site, study = summary.get("site_id"), summary.get("study_id")
    raise TooFewIndexEventsError(
        f"the mapping{f' of site {site!r}' if site else ''} matched {n} index event(s)"
        f"{f' of study {study!r}' if study else ''}{f' in {records} source records' if records else ''}, "
        f"fewer than the required {minimum}. "
        "Check that the mapping belongs to this source (site id, visit classes, local codes: "
        "`ehr-fed mapping profile --mapping ...` shows what it covers), or lower --min-index-events"
    )


class QuarantineThresholdError(RuntimeError):
    """More records were quarantined than the study allows; ``quarantine`` holds them."""

    def __init__(self, message: str, quarantine) -> None:
        super().__init__(message)
        self.quarantine = quarantine


def check_quarantine(records, study: StudySpec) -> None:
    """Raise :class:`QuarantineThresholdError` when the quarantined share passes ``quarantine.max_fraction``."""
    n_bad = len(records.quarantine)
    total = sum(records.source_records.values()) or 0
    limit = study.quarantine.max_fraction
    if n_bad and (total == 0 or n_bad / total > limit):
        share = n_bad / total if total else 1.0
        raise QuarantineThresholdError(
            f"{n_bad} of {total} source records ({share:.1%}) were quarantined, more than the study's "
            f"quarantine.max_fraction of {limit:.1%}; by reason: {records.quarantine.counts()}. "
            "Look at the quarantine file for the records and reasons, fix the source or the site mapping "
            "(e.g. map unknown unit spellings under 'units:'), or raise quarantine.max_fraction in the study spec.",
            records.quarantine,
        )


def build_feature_table(records, mapping: SiteMapping, study: StudySpec) -> FeatureTable:
    """Build the feature table of ``study`` from a site's ``records`` mapped by ``mapping``.

    Parameters
    ----------
    records : SourceRecords
        The site's records (DuckDB tables in local codes).
    mapping : SiteMapping
    study : StudySpec

    Returns
    -------
    FeatureTable

    Raises
    ------
    QuarantineThresholdError
        When more than ``study.quarantine.max_fraction`` of the source records were quarantined.
    """
    apply_mapping(records, mapping, study, extra_concept_sets=charlson.concept_sets())
    check_quarantine(records, study)
    exclusions = build_events(records.con, study)
    events = records.con.execute(
        "SELECT event_id, person_id, index_time, label FROM cohort_event ORDER BY event_id").df()
    features = compute_features(records.con, study)
    salt = person_salt(mapping.site_id)
    table = pd.DataFrame({
        "site_id": pd.Series([mapping.site_id] * len(events), dtype=str),
        "person_key": pd.Series([person_key(salt, p) for p in events["person_id"]], dtype=str),
        "index_time": pd.to_datetime(events["index_time"]).astype("datetime64[ns]"),
        "label": events["label"].astype(np.int8),
    })
    for name in study.feature_names:
        table[name] = features[name].to_numpy(dtype=np.float64)
    table = table.sort_values(["person_key", "index_time"], kind="stable").reset_index(drop=True)
    table = table[[*KEY_COLUMNS, *study.feature_names]]
    validate_feature_table(table, study)
    summary = {
        "site_id": mapping.site_id,
        "study_id": study.study_id,
        "index_events": int(len(table)),
        "positives": int(table["label"].sum()),
        "persons": int(events["person_id"].nunique()),
        "quarantined": records.quarantine.counts(),
        "source_records": dict(records.source_records),
        "exclusions": exclusions,
    }
    return FeatureTable(table=table, summary=summary, quarantine=records.quarantine)


def _as_mapping(mapping) -> SiteMapping:
    return mapping if isinstance(mapping, SiteMapping) else load_mapping(mapping)


def _as_study(study) -> StudySpec:
    return study if isinstance(study, StudySpec) else load_study(study)


def harmonize(kind: str, input, mapping, study, *, strict: bool = False, workdir=None,
              progress=None) -> FeatureTable:
    """Read a site's source and build its feature table: the whole site pipeline.

    Parameters
    ----------
    kind : {"fhir", "omop"}
    input : str or Path
        File, folder, DuckDB file or ``postgresql://`` URL.
    mapping, study : path or loaded SiteMapping / StudySpec
        Both are loaded (and fully validated) before any record is read.
    strict : bool
        Validate every FHIR resource with fhir.resources.
    workdir : path, optional
        Where large sources spill.
    progress : bool or None
        Show a progress bar (None: on long runs only).

    Raises
    ------
    ConfigError
        A mapping or study problem (nothing has been read).
    QuarantineThresholdError
        Too many rejected records.
    """
    from ehr_fed.sources import read_source

    mapping, study = _load_both(mapping, study)
    if kind not in ("fhir", "omop"):
        raise ValueError(f"unknown source kind {kind!r}; expected 'fhir' or 'omop'")
    if mapping.source != kind:
        raise ValueError(f"site mapping {mapping.site_id!r} is for a {mapping.source} source, not {kind}; "
                         f"use --source {mapping.source} or a {kind} mapping")
    options = mapping.fhir if kind == "fhir" else mapping.omop
    records = read_source(kind, str(input) if isinstance(input, Path) else input, options=options,
                          known_systems=list(mapping.code_systems), strict=strict, workdir=workdir,
                          progress=progress)
    with records:
        return build_feature_table(records, mapping, study)


def _load_both(mapping, study) -> tuple[SiteMapping, StudySpec]:
    """Load both configs, reporting the problems of both together."""
    from ehr_fed.mapping import ConfigError

    problems = []
    loaded = []
    for value, load in ((mapping, _as_mapping), (study, _as_study)):
        try:
            loaded.append(load(value))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return loaded[0], loaded[1]
