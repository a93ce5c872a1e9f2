"""The code tables the synthetic hospitals write: conditions, labs, drugs, procedures, visits.

Every clinical concept has its standard codes (ICD-10-CM, SNOMED CT, LOINC, RxNorm) and the
OMOP concept id written in the OMOP files. Ids of real OMOP standard concepts are used where
they are well known (visit, gender, UCUM units, LOINC labs, most SNOMED conditions); every
other concept gets an id in the range OMOP reserves for site-local concepts (> 2,000,000,000),
listed with its vocabulary and code in the ``concept`` table that the synthetic OMOP file ships,
so the OMOP reader resolves every id to ``vocabulary_id`` / ``concept_code``.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: first id of the synthetic site-local concepts (OMOP reserves ids above 2 billion)
LOCAL_CONCEPT_BASE = 2_000_000_000


@dataclass(frozen=True)
class Condition:
    """A diagnosis with its codes in both vocabularies.

    ``charlson`` is the weight of the condition in the data-generating process's
    Charlson-like burden score (0 = not a Charlson condition).
    """

    key: str
    display: str
    icd10: str
    icd10_concept: int
    snomed: str
    snomed_concept: int
    charlson: int = 0


_L = LOCAL_CONCEPT_BASE

CONDITIONS: dict[str, Condition] = {c.key: c for c in (
    # chronic conditions (study feature flags)
    Condition("diabetes", "Type 2 diabetes mellitus", "E11.9", _L + 101, "44054006", 201826, 1),
    Condition("heart_failure", "Heart failure", "I50.9", _L + 102, "84114007", 316139, 1),
    Condition("copd", "Chronic obstructive lung disease", "J44.9", _L + 103, "13645005", 255573, 1),
    Condition("ckd", "Chronic kidney disease stage 3", "N18.3", _L + 104, "433144002", 443597, 2),
    Condition("hypertension", "Essential hypertension", "I10", _L + 105, "59621000", 320128, 0),
    Condition("cancer", "Malignant tumor of colon", "C18.9", _L + 106, "363406005", 4180790, 2),
    # other Charlson conditions (burden only)
    Condition("mi", "Acute myocardial infarction", "I21.9", _L + 107, "22298006", _L + 207, 1),
    Condition("stroke", "Cerebral infarction", "I63.9", _L + 108, "230690007", _L + 208, 1),
    Condition("dementia", "Dementia", "F03.90", _L + 109, "52448006", _L + 209, 1),
    # prediabetes finding (T2D study)
    Condition("prediabetes", "Prediabetes", "R73.03", _L + 110, "714628002", 37018196, 0),
    # acute admission reasons (no feature)
    Condition("pneumonia", "Pneumonia", "J18.9", _L + 111, "233604007", _L + 211, 0),
    Condition("uti", "Urinary tract infection", "N39.0", _L + 112, "68566005", _L + 212, 0),
    Condition("sepsis", "Sepsis", "A41.9", _L + 113, "91302008", _L + 213, 0),
    Condition("fracture", "Fracture of neck of femur", "S72.009A", _L + 114, "5913000", _L + 214, 0),
    Condition("chest_pain", "Chest pain", "R07.9", _L + 115, "29857009", _L + 215, 0),
)}

#: chronic conditions that are study feature flags, with the comorbidity order used everywhere
CHRONIC = ("diabetes", "heart_failure", "copd", "ckd", "hypertension", "cancer", "mi", "stroke", "dementia")
#: acute reasons for an admission or ED visit
ACUTE = ("pneumonia", "uti", "sepsis", "fracture", "chest_pain")


@dataclass(frozen=True)
class Lab:
    """A lab: its LOINC code and OMOP concept, canonical UCUM unit, and the site-local form.

    ``local_unit`` / ``to_local`` give the unit some sites report in and the factor
    ``local = canonical * to_local`` (the inverse of the conversion in ``docs/internals.md``);
    ``decimals`` / ``local_decimals`` the precision values are reported with.
    """

    key: str
    display: str
    loinc: str
    concept: int
    unit: str
    decimals: int
    local_code: str
    local_unit: str | None = None
    to_local: float = 1.0
    local_decimals: int = 1


LABS: dict[str, Lab] = {lab.key: lab for lab in (
    Lab("creatinine", "Creatinine [Mass/volume] in Serum or Plasma", "2160-0", 3016723, "mg/dL", 2,
        "CREA", "umol/L", 88.42, 0),
    Lab("hemoglobin", "Hemoglobin [Mass/volume] in Blood", "718-7", 3000963, "g/dL", 1,
        "HGB", "g/L", 10.0, 0),
    Lab("sodium", "Sodium [Moles/volume] in Serum or Plasma", "2951-2", 3019550, "mmol/L", 0, "NA"),
    Lab("glucose", "Glucose [Mass/volume] in Serum or Plasma", "2345-7", 3004501, "mg/dL", 0,
        "GLU", "mmol/L", 1 / 18.016, 1),
    Lab("hba1c", "Hemoglobin A1c/Hemoglobin.total in Blood", "4548-4", 3004410, "%", 1, "A1C"),
    Lab("egfr", "Glomerular filtration rate/1.73 sq M.predicted by Creatinine-based formula (MDRD)",
        "33914-3", 3030354, "mL/min/{1.73_m2}", 0, "EGFR"),
)}

#: UCUM unit -> OMOP unit concept id (real UCUM concepts)
UNIT_CONCEPTS: dict[str, int] = {
    "mg/dL": 8840, "umol/L": 8749, "mmol/L": 8753, "g/dL": 8713, "g/L": 8636, "%": 8554,
    "mL/min/{1.73_m2}": 8795,
}


@dataclass(frozen=True)
class Drug:
    key: str
    display: str
    rxnorm: str
    concept: int


DRUGS: dict[str, Drug] = {d.key: d for d in (
    Drug("metformin", "metformin hydrochloride 500 MG Oral Tablet", "860975", _L + 301),
    Drug("lisinopril", "lisinopril 10 MG Oral Tablet", "314076", _L + 302),
    Drug("furosemide", "furosemide 40 MG Oral Tablet", "313988", _L + 303),
    Drug("albuterol", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "895994", _L + 304),
    Drug("atorvastatin", "atorvastatin 20 MG Oral Tablet", "617310", _L + 305),
    Drug("amlodipine", "amlodipine 5 MG Oral Tablet", "197361", _L + 306),
    Drug("donepezil", "donepezil hydrochloride 10 MG Oral Tablet", "997223", _L + 307),
    Drug("amoxicillin", "amoxicillin 500 MG Oral Capsule", "308191", _L + 308),
    Drug("acetaminophen", "acetaminophen 325 MG Oral Tablet", "313782", _L + 309),
    Drug("ondansetron", "ondansetron 4 MG Oral Tablet", "312086", _L + 310),
    Drug("heparin", "heparin sodium 5000 UNT/ML Injectable Solution", "1361615", _L + 311),
)}

#: chronic condition -> the long-term drug it is treated with
CHRONIC_DRUG: dict[str, str] = {
    "diabetes": "metformin", "heart_failure": "furosemide", "copd": "albuterol",
    "hypertension": "lisinopril", "mi": "atorvastatin", "stroke": "atorvastatin",
    "dementia": "donepezil", "ckd": "amlodipine",
}
#: short courses started at discharge
DISCHARGE_DRUGS = ("amoxicillin", "acetaminophen", "ondansetron", "heparin")


@dataclass(frozen=True)
class Procedure:
    key: str
    display: str
    snomed: str
    concept: int


PROCEDURES: dict[str, Procedure] = {p.key: p for p in (
    Procedure("chest_xray", "Plain chest X-ray", "399208008", 4163872),
    Procedure("ecg", "Electrocardiographic procedure", "29303009", 4301774),
    Procedure("dialysis", "Hemodialysis", "302497006", _L + 403),
    Procedure("ct_head", "Computed tomography of head", "303653007", _L + 404),
    Procedure("echo", "Echocardiography", "40701008", _L + 405),
)}

#: OMOP gender concepts
GENDER_CONCEPTS = {"female": 8532, "male": 8507}
#: OMOP type concepts ("EHR" provenance)
TYPE_EHR = 32817
