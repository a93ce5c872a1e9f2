"""Site archetypes: how the synthetic hospitals of a federation differ.

Site 0 is an academic centre, the last site of a federation of three or more a small
rural hospital, every other site a community hospital (alternating two coding styles).
Each profile fixes the size, case mix, baseline risk shift, coding (ICD-10-CM or SNOMED CT
diagnoses; LOINC labs in canonical units, LOINC labs in other units and spellings, or
local lab codes), encounter classes and OMOP visit concepts, time zone and lab missingness.
"""

from __future__ import annotations

from dataclasses import dataclass

from ehr_fed.synth.codes import ACTCODE


@dataclass(frozen=True)
class VisitCoding:
    """How a site codes its visits: FHIR ``Encounter.class`` and OMOP ``visit_concept_id``."""

    system: str
    inpatient: str
    emergency: str
    outpatient: str
    omop_inpatient: int = 9201
    omop_emergency: int = 9203
    omop_outpatient: int = 9202


@dataclass(frozen=True)
class SiteProfile:
    """One synthetic hospital.

    Attributes
    ----------
    site_id, archetype : str
        ``site_id`` such as ``site_a``; ``archetype`` one of academic, community, rural.
    weight : float
        Relative size (patients = ``weight / mean(weights) * patients``).
    dx_vocabulary : {"icd10cm", "snomed"}
        Vocabulary of the site's diagnoses (FHIR ``Condition.code`` and OMOP condition concepts).
    lab_coding : {"loinc", "loinc_local_units", "local"}
        ``loinc``: LOINC codes, canonical UCUM units. ``loinc_local_units``: LOINC codes,
        creatinine in umol/L and glucose in mmol/L, units spelled in lower case (mapped by the
        site's ``units:``). ``local``: the laboratory's own codes and units (mapped by
        ``local_codes:``), creatinine umol/L, hemoglobin g/L, glucose mmol/L.
    visits : VisitCoding
    tz_minutes : int
        UTC offset of the FHIR timestamps (the OMOP file stores the same instants in UTC).
    missing_lab : float
        Probability that one lab of an inpatient panel is not measured.
    age_shift, comorbidity, admission_rate, los_factor : float
        Case mix: older (years added to the mean age), sicker (multiplier of comorbidity odds),
        admitted more often, longer stays.
    risk_shift, t2d_shift : float
        Site baseline shifts (logit scale) of the readmission and T2D progression models.
    prediabetes_dx : float
        Probability that a prediabetes finding is also coded as a diagnosis.
    """

    site_id: str
    archetype: str
    weight: float
    dx_vocabulary: str
    lab_coding: str
    visits: VisitCoding
    tz_minutes: int
    missing_lab: float
    age_shift: float
    comorbidity: float
    admission_rate: float
    los_factor: float
    risk_shift: float
    t2d_shift: float
    prediabetes_dx: float
    description: str = ""

    @property
    def lab_system(self) -> str:
        """FHIR code system URL of the site's local lab codes."""
        return f"urn:oid:2.16.840.1.113883.3.9999.{self.index + 1}.1"

    @property
    def lab_vocabulary(self) -> str:
        """OMOP ``vocabulary_id`` of the site's local lab concepts (<= 20 characters)."""
        return f"LAB_{self.site_id.upper()}"[:20]

    @property
    def index(self) -> int:
        return _site_index(self.site_id)


def _site_index(site_id: str) -> int:
    suffix = site_id.rsplit("_", 1)[-1]
    if suffix.isdigit():
        return int(suffix) - 1
    value = 0
    for ch in suffix:
        value = value * 26 + (ord(ch) - 96)
    return value - 1


def site_name(i: int) -> str:
    """``site_a`` ... ``site_z``, then ``site_027`` onwards."""
    return f"site_{chr(97 + i)}" if i < 26 else f"site_{i + 1:03d}"


def _academic(site_id: str) -> SiteProfile:
    return SiteProfile(
        site_id=site_id, archetype="academic", weight=1.6, dx_vocabulary="icd10cm", lab_coding="loinc",
        visits=VisitCoding(ACTCODE, "IMP", "EMER", "AMB"), tz_minutes=-300, missing_lab=0.05,
        age_shift=1.0, comorbidity=1.35, admission_rate=1.3, los_factor=1.25, risk_shift=0.15,
        t2d_shift=0.1, prediabetes_dx=0.6,
        description="academic medical centre: large, sicker case mix, ICD-10-CM, LOINC labs, v3 ActCode",
    )


def _community_snomed(site_id: str, i: int) -> SiteProfile:
    return SiteProfile(
        site_id=site_id, archetype="community", weight=1.0, dx_vocabulary="snomed",
        lab_coding="loinc_local_units", visits=VisitCoding(ACTCODE, "ACUTE", "EMER", "AMB"),
        tz_minutes=-360, missing_lab=0.12, age_shift=0.0, comorbidity=1.0, admission_rate=1.0,
        los_factor=1.0, risk_shift=0.0 - 0.05 * (i // 2), t2d_shift=0.0, prediabetes_dx=0.4,
        description="community hospital: SNOMED CT diagnoses, creatinine in umol/L and glucose in "
        "mmol/L, v3 ActCode ACUTE for inpatient stays",
    )


def _community_local(site_id: str, i: int) -> SiteProfile:
    system = f"http://hospital-{site_id.replace('_', '-')}.example.org/fhir/CodeSystem/encounter-class"
    return SiteProfile(
        site_id=site_id, archetype="community", weight=1.0, dx_vocabulary="icd10cm", lab_coding="loinc",
        visits=VisitCoding(system, "INPT", "ED", "OPD", 8717, 8870, 8756), tz_minutes=0,
        missing_lab=0.15, age_shift=-1.5, comorbidity=0.9, admission_rate=0.9, los_factor=0.9,
        risk_shift=-0.1 + 0.05 * (i // 2), t2d_shift=-0.1, prediabetes_dx=0.5,
        description="community hospital: ICD-10-CM, local encounter classes, OMOP place-of-service "
        "visit concepts",
    )


def _rural(site_id: str) -> SiteProfile:
    system = f"http://hospital-{site_id.replace('_', '-')}.example.org/fhir/CodeSystem/encounter-class"
    return SiteProfile(
        site_id=site_id, archetype="rural", weight=0.4, dx_vocabulary="snomed", lab_coding="local",
        visits=VisitCoding(system, "I", "E", "O", 8717, 8870, 8756), tz_minutes=-420, missing_lab=0.25,
        age_shift=4.0, comorbidity=1.1, admission_rate=0.8, los_factor=0.8, risk_shift=-0.2,
        t2d_shift=0.25, prediabetes_dx=0.25,
        description="small rural hospital: older, SNOMED CT, local lab codes and units, many missing labs",
    )


def default_profiles(n_sites: int) -> list[SiteProfile]:
    """The profiles of a federation of ``n_sites`` hospitals (see the module docstring)."""
    if n_sites < 1:
        raise ValueError(f"a federation needs at least 1 site, got {n_sites}")
    out = []
    for i in range(n_sites):
        sid = site_name(i)
        if i == 0:
            out.append(_academic(sid))
        elif i == n_sites - 1 and n_sites >= 3:
            out.append(_rural(sid))
        elif i % 2 == 1:
            out.append(_community_snomed(sid, i))
        else:
            out.append(_community_local(sid, i))
    return out


def site_sizes(profiles: list[SiteProfile], patients: int) -> list[int]:
    """Patients per site: ``patients`` on average, split by the profiles' weights."""
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    mean_w = sum(p.weight for p in profiles) / len(profiles)
    return [max(1, round(patients * p.weight / mean_w)) for p in profiles]
