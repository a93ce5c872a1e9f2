"""The site mapping configs and the federation file of a synthetic federation.

Each hospital gets ``mapping_fhir.yaml`` and ``mapping_omop.yaml`` in the format of
``mappings/sites/*.yaml``: its encounter classes / visit concepts, code systems, local lab
codes and unit spellings. ``federation.yaml`` follows ``docs/internals.md`` section 5.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ehr_fed.synth.codes import ICD10CM, LABS, LOINC, RXNORM, SNOMED
from ehr_fed.synth.profiles import SiteProfile
from ehr_fed.synth.sitecodes import LOCAL_SPELLING, lab_coding

ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
#: every study shipped with ehr-fed that the synthetic hospitals support
STUDIES = ("readmission_30d", "t2d_progression")


def _local_codes(profile: SiteProfile, system: str) -> list[dict]:
    out = []
    for key, lab in LABS.items():
        _, code, _, unit, _ = lab_coding(profile, key)
        out.append({"system": system, "code": code, "to": {"vocabulary": "loinc", "code": lab.loinc},
                    "unit": unit})
    return out


def _units(profile: SiteProfile) -> dict[str, str]:
    if profile.lab_coding != "loinc_local_units":
        return {}
    used = {lab_coding(profile, k)[3] for k in LABS}
    return {LOCAL_SPELLING[u]: u for u in sorted(used) if LOCAL_SPELLING.get(u, u) != u}


def fhir_mapping(profile: SiteProfile) -> dict:
    """The site's mapping config for its FHIR export."""
    v = profile.visits
    code_systems = {ICD10CM: "icd10cm"} if profile.dx_vocabulary == "icd10cm" else {}
    code_systems.update({SNOMED: "snomed", LOINC: "loinc", RXNORM: "rxnorm"})
    return {
        "site_id": profile.site_id,
        "source": "fhir",
        "description": f"synthetic {profile.description} (FHIR R4 bulk export)",
        "visits": {
            "inpatient": [{"system": v.system, "code": v.inpatient}],
            "emergency": [{"system": v.system, "code": v.emergency}],
            "outpatient": [{"system": v.system, "code": v.outpatient}],
            "emergency_admission": [f"{ADMIT_SOURCE}|emd"],
        },
        "code_systems": code_systems,
        "local_codes": _local_codes(profile, profile.lab_system) if profile.lab_coding == "local" else [],
        "units": _units(profile),
    }


def omop_mapping(profile: SiteProfile) -> dict:
    """The site's mapping config for its OMOP CDM file."""
    v = profile.visits
    system = "omop:visit_concept_id"
    code_systems = {"ICD10CM": "icd10cm"} if profile.dx_vocabulary == "icd10cm" else {}
    code_systems.update({"SNOMED": "snomed", "LOINC": "loinc", "RxNorm": "rxnorm"})
    return {
        "site_id": profile.site_id,
        "source": "omop",
        "description": f"synthetic {profile.description} (OMOP CDM v5.4 in DuckDB)",
        "visits": {
            "inpatient": [{"system": system, "code": str(v.omop_inpatient)}],
            "emergency": [{"system": system, "code": str(v.omop_emergency)}],
            "outpatient": [{"system": system, "code": str(v.omop_outpatient)}],
            "emergency_admission": ["omop:admitted_from_concept_id|8870"],
        },
        "code_systems": code_systems,
        # OMOP measurement_concept_id holds the LOINC concept even for the laboratory's own codes
        "local_codes": [],
        "units": _units(profile),
        "omop": {
            "person_id_field": "person_source_value",
            "visit_occurrence": {"priority_field": "admitted_from_concept_id"},
        },
    }


def dump_yaml(data: dict, path: Path, header: str = "") -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    Path(path).write_text(header + text, encoding="utf-8")


def federation_config(
    profiles: list[SiteProfile], study_file: str, fmt: str, privacy: dict | None = None, n_length: int = 2048
) -> dict:
    """``federation.yaml`` content (paths relative to the federation file)."""
    sites = []
    for p in profiles:
        sid = p.site_id
        if fmt == "omop":
            entry = {"id": sid, "source": "omop", "input": f"{sid}/omop.duckdb", "mapping": f"{sid}/mapping_omop.yaml"}
        else:
            entry = {"id": sid, "source": "fhir", "input": f"{sid}/fhir", "mapping": f"{sid}/mapping_fhir.yaml"}
            if fmt == "both":
                entry.update(omop_input=f"{sid}/omop.duckdb", omop_mapping=f"{sid}/mapping_omop.yaml")
        sites.append(entry)
    return {
        "study": study_file,
        "sites": sites,
        "transport": {"kind": "in_process"},
        "privacy": privacy or {"min_cell_count": 10, "min_sites": min(3, len(profiles)), "max_params_fraction": 0.1},
        "keys": {"n_length": n_length},
    }
