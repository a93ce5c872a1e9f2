"""How one site codes a concept: its diagnosis vocabulary, lab codes, units and precision."""

from __future__ import annotations

from ehr_fed.synth.codes import CONDITIONS, ICD10CM, LABS, LOINC, SNOMED
from ehr_fed.synth.profiles import SiteProfile

#: local unit -> canonical factor, as the cohort stage converts (docs/internals.md)
_FROM_LOCAL = {"creatinine": 1 / 88.42, "glucose": 18.016, "hemoglobin": 0.1}
#: local unit spellings of the ``loinc_local_units`` sites (mapped by their ``units:``)
LOCAL_SPELLING = {"mg/dL": "mg/dl", "umol/L": "umol/l", "mmol/L": "mmol/l", "g/dL": "g/dl", "%": "%",
                  "mL/min/{1.73_m2}": "mL/min/1.73m2", "g/L": "g/l"}


def lab_coding(profile: SiteProfile, lab_key: str) -> tuple[str, str, str, str, int]:
    """``(system, code, display, unit, decimals)`` of a lab as the site reports it."""
    lab = LABS[lab_key]
    if profile.lab_coding == "local":
        unit = lab.local_unit or lab.unit
        decimals = lab.local_decimals if lab.local_unit else lab.decimals
        return profile.lab_system, lab.local_code, lab.display, unit, decimals
    if profile.lab_coding == "loinc_local_units" and lab_key in ("creatinine", "glucose"):
        return LOINC, lab.loinc, lab.display, lab.local_unit, lab.local_decimals
    return LOINC, lab.loinc, lab.display, lab.unit, lab.decimals


def lab_value(profile: SiteProfile, lab_key: str, value: float) -> tuple[float, float]:
    """A canonical value as the site reports it, and that report converted back.

    Returns ``(site_value, canonical)``: the value in the site's unit rounded to the site's
    precision, and the canonical value the cohort stage computes from it (with the
    conversion factors of :mod:`ehr_fed.mapping.units`), which is what the outcome model sees.
    """
    lab = LABS[lab_key]
    _, _, _, unit, decimals = lab_coding(profile, lab_key)
    if unit == lab.unit:
        v = float(round(value, decimals))
        return v, v
    v = float(round(value * lab.to_local, decimals))
    return v, v * _FROM_LOCAL[lab_key]


def dx_coding(profile: SiteProfile, key: str) -> tuple[str, str, str]:
    """``(system, code, display)`` of a diagnosis as the site codes it.

    ICD-10-CM sites code diagnoses in ICD-10-CM except the problem-list conditions that have
    no ICD-10-CM code in :data:`~ehr_fed.synth.codes.CONDITIONS` (SNOMED CT everywhere).
    """
    c = CONDITIONS[key]
    if profile.dx_vocabulary == "icd10cm" and c.icd10 is not None:
        return ICD10CM, c.icd10, c.icd10_display
    return SNOMED, c.snomed, c.snomed_display


