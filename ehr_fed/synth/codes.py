"""The code tables the synthetic hospitals write: conditions, labs, drugs, procedures, visits.

Every code is a concept of the OHDSI vocabulary subset shipped in each OMOP file
(:mod:`ehr_fed.synth.vocabulary`), with its real OHDSI concept id and the vocabulary's own
name, which is also the FHIR ``display``. OMOP rows follow OHDSI ETL conventions: standard
concepts (SNOMED CT, RxNorm, LOINC, UCUM) in ``*_concept_id``, the code as the site holds it
in ``*_source_value`` and its concept in ``*_source_concept_id`` (an ICD-10-CM diagnosis
'Maps to' its SNOMED CT concept).
"""

from __future__ import annotations

from dataclasses import dataclass

from ehr_fed.synth.vocabulary import MAPS_TO, concept_by_code, concepts

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

_CONCEPTS = concepts()


def name_of(concept_id: int) -> str:
    """The vocabulary's name of a shipped concept."""
    return _CONCEPTS[concept_id].concept_name


@dataclass(frozen=True)
class Condition:
    """A diagnosis: its SNOMED CT code and, when ICD-10-CM sites code it so, its ICD-10-CM code.

    ``icd10 is None`` marks a condition every site records in SNOMED CT (a problem-list
    entry). ``charlson`` is the weight of the condition in the data-generating process's
    Charlson-like burden score (0 = not a Charlson condition).
    """

    key: str
    snomed: str
    icd10: str | None = None
    charlson: int = 0

    @property
    def snomed_concept(self) -> int:
        return concept_by_code("SNOMED", self.snomed).concept_id

    @property
    def snomed_display(self) -> str:
        return concept_by_code("SNOMED", self.snomed).concept_name

    @property
    def icd10_concept(self) -> int:
        return concept_by_code("ICD10CM", self.icd10).concept_id

    @property
    def icd10_display(self) -> str:
        return concept_by_code("ICD10CM", self.icd10).concept_name

    @property
    def icd10_maps_to(self) -> int:
        """The standard concept the ICD-10-CM concept 'Maps to'."""
        return MAPS_TO[self.icd10_concept]


CONDITIONS: dict[str, Condition] = {c.key: c for c in (
    # chronic conditions (study feature flags)
    Condition("diabetes", "44054006", "E11.9", 1),
    Condition("heart_failure", "84114007", "I50.9", 1),
    Condition("copd", "13645005", "J44.9", 1),
    Condition("ckd", "433144002", "N18.3", 2),
    Condition("hypertension", "59621000", "I10", 0),
    Condition("cancer", "363406005", None, 2),
    # other Charlson conditions (burden only)
    Condition("mi", "22298006", "I25.2", 1),
    Condition("stroke", "230690007", "I63.9", 1),
    Condition("dementia", "52448006", "F03.90", 1),
    # prediabetes finding (T2D study)
    Condition("prediabetes", "714628002", None, 0),
    # acute admission reasons (no feature)
    Condition("pneumonia", "233604007", "J18.9", 0),
    Condition("uti", "68566005", "N39.0", 0),
    Condition("sepsis", "91302008", "A41.9", 0),
    Condition("afib", "49436004", "I48.91", 0),
    Condition("chest_pain", "29857009", "R07.9", 0),
)}

#: chronic conditions that are study feature flags, with the comorbidity order used everywhere
CHRONIC = ("diabetes", "heart_failure", "copd", "ckd", "hypertension", "cancer", "mi", "stroke", "dementia")
#: acute reasons for an admission or ED visit
ACUTE = ("pneumonia", "uti", "sepsis", "afib", "chest_pain")


@dataclass(frozen=True)
class Lab:
    """A lab: its LOINC code, canonical UCUM unit, and the site-local form.

    ``local_unit`` / ``to_local`` give the unit some sites report in and the factor
    ``local = canonical * to_local`` (the inverse of the conversion in ``docs/internals.md``);
    ``decimals`` / ``local_decimals`` the precision values are reported with.
    """

    key: str
    loinc: str
    unit: str
    decimals: int
    local_code: str
    local_unit: str | None = None
    to_local: float = 1.0
    local_decimals: int = 1

    @property
    def source_concept(self) -> int:
        """The LOINC concept of the code the site reports (may be non-standard)."""
        return concept_by_code("LOINC", self.loinc).concept_id

    @property
    def concept(self) -> int:
        """The standard concept of ``measurement_concept_id`` (the code's 'Maps to' target)."""
        return MAPS_TO.get(self.source_concept, self.source_concept)

    @property
    def display(self) -> str:
        return concept_by_code("LOINC", self.loinc).concept_name


LABS: dict[str, Lab] = {lab.key: lab for lab in (
    Lab("creatinine", "2160-0", "mg/dL", 2, "CREA", "umol/L", 88.42, 0),
    Lab("hemoglobin", "718-7", "g/dL", 1, "HGB", "g/L", 10.0, 0),
    Lab("sodium", "2951-2", "mmol/L", 0, "NA"),
    Lab("glucose", "2345-7", "mg/dL", 0, "GLU", "mmol/L", 1 / 18.016, 1),
    Lab("hba1c", "4548-4", "%", 1, "A1C"),
    Lab("egfr", "33914-3", "mL/min/{1.73_m2}", 0, "EGFR"),
)}

#: UCUM unit -> OMOP unit concept id (the standard UCUM concepts; 720870's concept_code is the
#: equivalent UCUM expression ``mL/min/(173.10*-2.m2)``)
UNIT_CONCEPTS: dict[str, int] = {
    "mg/dL": 8840, "umol/L": 8749, "mmol/L": 8753, "g/dL": 8713, "g/L": 8636, "%": 8554,
    "mL/min/{1.73_m2}": 720870,
}


@dataclass(frozen=True)
class Drug:
    key: str
    rxnorm: str

    @property
    def concept(self) -> int:
        return concept_by_code("RxNorm", self.rxnorm).concept_id

    @property
    def display(self) -> str:
        return concept_by_code("RxNorm", self.rxnorm).concept_name


DRUGS: dict[str, Drug] = {d.key: d for d in (
    Drug("metformin", "860975"),
    Drug("lisinopril", "314076"),
    Drug("furosemide", "313988"),
    Drug("fluticasone", "895994"),
    Drug("atorvastatin", "259255"),
    Drug("amlodipine", "197361"),
    Drug("donepezil", "997223"),
    Drug("amoxicillin", "308192"),
    Drug("acetaminophen", "313782"),
    Drug("ondansetron", "1740467"),
    Drug("heparin", "1659263"),
)}

#: chronic condition -> the long-term drug it is treated with
CHRONIC_DRUG: dict[str, str] = {
    "diabetes": "metformin", "heart_failure": "furosemide", "copd": "fluticasone",
    "hypertension": "lisinopril", "mi": "atorvastatin", "stroke": "atorvastatin",
    "dementia": "donepezil", "ckd": "amlodipine",
}
#: short courses started at discharge
DISCHARGE_DRUGS = ("amoxicillin", "acetaminophen", "ondansetron", "heparin")


@dataclass(frozen=True)
class Procedure:
    key: str
    snomed: str

    @property
    def concept(self) -> int:
        return concept_by_code("SNOMED", self.snomed).concept_id

    @property
    def display(self) -> str:
        return concept_by_code("SNOMED", self.snomed).concept_name


PROCEDURES: dict[str, Procedure] = {p.key: p for p in (
    Procedure("chest_xray", "399208008"),
    Procedure("ecg", "29303009"),
    Procedure("dialysis", "302497006"),
    Procedure("ct_head", "303653007"),
    Procedure("echo", "40701008"),
)}

#: OMOP gender concepts
GENDER_CONCEPTS = {"female": 8532, "male": 8507}
#: OMOP type concept "EHR" (provenance of every row)
TYPE_EHR = 32817
#: OMOP race and ethnicity concepts, with the US Core (OMB) codes of the FHIR form
RACES = {"white": (8527, "2106-3", "White"), "black": (8516, "2054-5", "Black or African American")}
ETHNICITIES = {"hispanic": (38003563, "2135-2", "Hispanic or Latino"),
               "not_hispanic": (38003564, "2186-5", "Not Hispanic or Latino")}
#: FHIR admit-source code -> OMOP admitted_from concept (CMS place of service, as OHDSI ETLs map it)
ADMIT_SOURCE_CONCEPTS = {"emd": 8870, "psych": 8971}
