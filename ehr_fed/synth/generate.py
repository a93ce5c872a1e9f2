"""Generate a synthetic federation: one folder per hospital plus ``federation.yaml``.

Patients are simulated one at a time, each from its own random stream (seeded by the
federation seed, the site and the patient number), and written in chunks, so memory does
not grow with the number of patients and the output does not depend on the chunk size.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ehr_fed.synth.configs import STUDIES, dump_yaml, federation_config, fhir_mapping, omop_mapping
from ehr_fed.synth.fhir_writer import FhirWriter
from ehr_fed.synth.omop_writer import OmopWriter
from ehr_fed.synth.patients import simulate_patient
from ehr_fed.synth.profiles import SiteProfile, default_profiles, site_sizes

FORMATS = ("fhir", "omop", "both")
MANIFEST = "synth-manifest.json"
#: bump when the generated data change for the same parameters
GENERATOR_VERSION = 2
CHUNK_PATIENTS = 2_000

_TRUTH_COLUMNS = (
    "age", "sex_female", "los_days", "prior_inpatient_365d", "prior_ed_180d", "charlson",
    "cond_diabetes", "cond_heart_failure", "cond_copd", "cond_ckd", "cond_hypertension", "cond_cancer",
    "lab_creatinine", "lab_hemoglobin", "lab_sodium", "lab_glucose", "lab_hba1c", "lab_egfr", "n_active_meds",
    "latent_hba1c",
)


#: columns of ``truth.parquet`` (one row per index event of either study)
TRUTH_SCHEMA = pa.schema(
    [("study", pa.string()), ("site_id", pa.string()), ("person_id", pa.string()),
     ("person_key", pa.string()), ("index_time", pa.timestamp("ns")), ("label", pa.int8()),
     ("risk", pa.float64()), ("censored", pa.bool_()), ("site_shift", pa.float64())]
    + [(c, pa.float64()) for c in _TRUTH_COLUMNS])


@dataclass
class SiteResult:
    site_id: str
    patients: int
    fhir_resources: dict[str, int]
    omop_rows: dict[str, int]
    index_events: dict[str, int]
    positives: dict[str, int]


def person_key(site_id: str, person_id: str) -> str:
    """The cohort stage's ``person_key`` (:func:`ehr_fed.cohort.table.person_key`): HMAC-SHA256 of the local
    id under the site's secret ``EHR_FED_PERSON_SALT``; synthetic hospitals use the public test secret
    unless one is set (:func:`ehr_fed.cohort.table.use_test_secret`)."""
    from ehr_fed.cohort.table import person_key as keyed
    from ehr_fed.cohort.table import person_salt, use_test_secret

    use_test_secret()
    return keyed(person_salt(site_id), person_id)


class _Ids:
    """Deterministic resource ids (UUIDs) drawn from one patient's random stream."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def __call__(self, kind: str, n: int) -> list[str]:
        bits = self.rng.getrandbits
        return [str(uuid.UUID(int=bits(128), version=4)) for _ in range(n)]


class _TruthWriter:
    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.counts: dict[str, int] = {}
        self.positives: dict[str, int] = {}

    def add(self, site_id: str, person_id: str, rows: list[dict]) -> None:
        for r in rows:
            out = {"study": r["study"], "site_id": site_id, "person_id": person_id,
                   "person_key": person_key(site_id, person_id), "index_time": r["index_time"] * 1_000_000_000,
                   "label": r["label"], "risk": r["risk"], "censored": r["censored"],
                   "site_shift": r["site_shift"]}
            for c in _TRUTH_COLUMNS:
                out[c] = r.get(c, float("nan"))
            self.rows.append(out)
            self.counts[r["study"]] = self.counts.get(r["study"], 0) + 1
            self.positives[r["study"]] = self.positives.get(r["study"], 0) + r["label"]

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=TRUTH_SCHEMA)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, TRUTH_SCHEMA, compression="zstd")
        self.writer.write_table(table)
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        if self.writer is None:
            pq.write_table(TRUTH_SCHEMA.empty_table(), self.path, compression="zstd")
        else:
            self.writer.close()


def generate_site(
    folder: Path, profile: SiteProfile, n_patients: int, seed: int, fmt: str = "both",
    progress: Callable[[int], None] | None = None,
) -> SiteResult:
    """Write one hospital: ``fhir/``, ``omop.duckdb``, mapping configs and ``truth.parquet``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fhir = FhirWriter(folder / "fhir", profile) if fmt in ("fhir", "both") else None
    omop = OmopWriter(folder / "omop.duckdb", profile) if fmt in ("omop", "both") else None
    truth = _TruthWriter(folder / "truth.parquet")
    for i in range(n_patients):
        rng = random.Random(f"ehr-fed-synth:{seed}:{profile.site_id}:{i}")
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        p = simulate_patient(rng, profile, key)
        ids = _Ids(rng)
        if fhir is not None:
            fhir.add(p, ids)
        if omop is not None:
            omop.add(p)
        truth.add(profile.site_id, key, p.truth)
        if (i + 1) % CHUNK_PATIENTS == 0:
            if fhir is not None:
                fhir.flush()
            truth.flush()
            if progress is not None:
                progress(CHUNK_PATIENTS)
    if progress is not None and n_patients % CHUNK_PATIENTS:
        progress(n_patients % CHUNK_PATIENTS)
    if fhir is not None:
        fhir.close()
        dump_yaml(fhir_mapping(profile), folder / "mapping_fhir.yaml", _HEADER)
    if omop is not None:
        omop.close()
        dump_yaml(omop_mapping(profile), folder / "mapping_omop.yaml", _HEADER)
    truth.close()
    return SiteResult(profile.site_id, n_patients, dict(fhir.counts) if fhir else {},
                      dict(omop.counts) if omop else {}, truth.counts, truth.positives)


_HEADER = "# Generated by `ehr-fed synth`: the site mapping config of a synthetic hospital.\n"


def study_path(study: str) -> Path:
    """The shipped study spec ``mappings/studies/<study>.yaml``."""
    root = Path(__file__).resolve().parents[2] / "mappings" / "studies"
    path = root / f"{study}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in root.glob("*.yaml")) if root.is_dir() else []
        raise FileNotFoundError(f"study spec {study!r} not found in {root}; shipped studies: {have}")
    return path


def _params(n_sites, n_patients, seed, fmt, study) -> dict:
    return {"generator_version": GENERATOR_VERSION, "sites": n_sites, "patients": n_patients, "seed": seed,
            "format": fmt, "study": study}


def is_generated(out: Path, n_sites: int, n_patients: int, seed: int, fmt: str, study: str) -> bool:
    """True when ``out`` holds a complete federation generated with these parameters."""
    manifest = Path(out) / MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return data.get("parameters") == _params(n_sites, n_patients, seed, fmt, study) and (
        Path(out) / "federation.yaml").is_file()


def generate_federation(
    out: str | Path, n_sites: int = 3, n_patients: int = 1000, seed: int = 0, format: str = "both",
    *, study: str = "readmission_30d", if_missing: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a synthetic federation of ``n_sites`` hospitals and return the ``federation.yaml`` path.

    Parameters
    ----------
    out : path
        Output folder (created; an existing federation in it is replaced).
    n_sites : int
        Number of hospitals (site 0 academic, the last of three or more rural, community between).
    n_patients : int
        Mean patients per hospital; each site's size follows its archetype's weight.
    seed : int
        Random seed: the same parameters give byte-identical NDJSON, YAML and Parquet files
        and identical OMOP tables.
    format : {"fhir", "omop", "both"}
        Which forms of each hospital to write; with ``both`` the federation lists FHIR as
        ``input`` and the OMOP file as ``omop_input``.
    study : {"readmission_30d", "t2d_progression"}
        The study spec the federation file names (copied beside it).
    if_missing : bool
        Skip generation when ``out`` already holds this exact federation (a manifest records
        the parameters).
    progress : callable, optional
        Called with the number of patients written since the last call.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if study not in STUDIES:
        raise ValueError(f"study must be one of {STUDIES}, got {study!r}")
    out = Path(out)
    fed_file = out / "federation.yaml"
    if if_missing and is_generated(out, n_sites, n_patients, seed, format, study):
        return fed_file
    spec = study_path(study)
    profiles = default_profiles(n_sites)
    sizes = site_sizes(profiles, n_patients)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    results = []
    for profile, n in zip(profiles, sizes, strict=True):
        site_dir = out / profile.site_id
        if site_dir.exists():
            shutil.rmtree(site_dir)
        results.append(generate_site(site_dir, profile, n, seed, format, progress))
    shutil.copyfile(spec, out / spec.name)
    dump_yaml(federation_config(profiles, spec.name, format), fed_file,
              f"# Synthetic federation: {n_sites} hospitals, seed {seed} (ehr-fed synth).\n")
    manifest = {"parameters": _params(n_sites, n_patients, seed, format, study),
                "sites": [r.__dict__ for r in results]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return fed_file
