"""The OHDSI vocabulary subset shipped in every synthetic OMOP file.

Every concept a synthetic hospital writes, in any ``*_concept_id`` column, is a row of
:data:`CONCEPTS` with its real OHDSI concept id, name, domain, vocabulary, class and
standard flag. Each row names where it was taken from (``source``), so tests can check it
against that source (``docs/internals.md``, "Synthetic OMOP vocabulary"):

``eunomia``
    the OHDSI Eunomia Synthea27Nj v5.4 vocabulary (``../shared/data/omop/synthea27nj_v54``),
    copied field by field;
``synpuf``
    the OHDSI SynPUF demo vocabulary subset (``../shared/data/omop/synpuf10_v50``);
``mimic``
    an ICD-10-CM source concept id and its 'Maps to' target as the OHDSI MIMIC-IV ETL wrote
    them (``../shared/data/omop/mimic4demo_v53`` condition_source_concept_id /
    condition_concept_id); names are the ICD-10-CM descriptions (FY2022, the vocabulary's
    release);
``ohdsi``
    OHDSI vocabulary concepts found in none of the local subsets (ids from public OHDSI
    concept sets, the OHDSI Vocabulary-v5.0 repository and the 'Maps to' rows of the Eunomia
    ``concept_relationship`` table, see ``docs/internals.md``);
``local``
    metadata concepts (domain, vocabulary and concept-class concepts) whose OHDSI ids are in
    no local subset: site-local ids above 2,000,000,000, as OHDSI reserves for local concepts.

The vocabulary tables written are ``concept``, ``concept_relationship`` ('Maps to' / 'Mapped
from' of every concept, 'Is a' / 'Subsumes' of the hierarchy rows), ``concept_ancestor``
(every standard concept with itself, plus the hierarchy below), ``domain``, ``vocabulary``,
``concept_class`` and ``relationship``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: first id of the synthetic metadata concepts without a known OHDSI id
LOCAL_METADATA_BASE = 2_000_100_000


@dataclass(frozen=True)
class Concept:
    """One ``concept`` row (fields as in CDM v5.4) and where it comes from."""

    concept_id: int
    concept_name: str
    domain_id: str
    vocabulary_id: str
    concept_class_id: str
    standard_concept: str | None
    concept_code: str
    valid_start_date: str = "1970-01-01"
    valid_end_date: str = "2099-12-31"
    invalid_reason: str | None = None
    source: str = "eunomia"

    def row(self) -> tuple:
        return (self.concept_id, self.concept_name, self.domain_id, self.vocabulary_id, self.concept_class_id,
                self.standard_concept, self.concept_code, self.valid_start_date, self.valid_end_date,
                self.invalid_reason)


def _c(cid, name, domain, vocab, cls, std, code, start="1970-01-01", end="2099-12-31", invalid=None,
       source="eunomia") -> Concept:
    return Concept(cid, name, domain, vocab, cls, std, code, start, end, invalid, source)


_S, _E = "2002-01-31", "2099-12-31"

_CLINICAL: tuple[Concept, ...] = (
    # SNOMED CT conditions (standard)
    _c(201826, "Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S", "44054006", _S),
    _c(316139, "Heart failure", "Condition", "SNOMED", "Clinical Finding", "S", "84114007", _S),
    _c(443597, "Chronic kidney disease stage 3", "Condition", "SNOMED", "Clinical Finding", "S", "433144002",
       "2008-07-31"),
    _c(320128, "Essential hypertension", "Condition", "SNOMED", "Clinical Finding", "S", "59621000", _S),
    _c(4180790, "Malignant tumor of colon", "Condition", "SNOMED", "Clinical Finding", "S", "363406005", _S),
    _c(4329847, "Myocardial infarction", "Condition", "SNOMED", "Clinical Finding", "S", "22298006", _S),
    _c(381316, "Cerebrovascular accident", "Condition", "SNOMED", "Clinical Finding", "S", "230690007", _S),
    _c(255848, "Pneumonia", "Condition", "SNOMED", "Clinical Finding", "S", "233604007", _S),
    _c(81902, "Urinary tract infectious disease", "Condition", "SNOMED", "Clinical Finding", "S", "68566005", _S),
    _c(132797, "Sepsis", "Condition", "SNOMED", "Clinical Finding", "S", "91302008", _S),
    _c(313217, "Atrial fibrillation", "Condition", "SNOMED", "Clinical Finding", "S", "49436004", _S),
    _c(314666, "Old myocardial infarction", "Condition", "SNOMED", "Clinical Finding", "S", "1755008",
       source="synpuf"),
    _c(316866, "Hypertensive disorder", "Condition", "SNOMED", "Clinical Finding", "S", "38341003",
       source="synpuf"),
    _c(4193704, "Type 2 diabetes mellitus without complication", "Condition", "SNOMED", "Clinical Finding", "S",
       "313436004", source="ohdsi"),
    _c(201820, "Diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S", "73211009", source="ohdsi"),
    _c(46271022, "Chronic kidney disease", "Condition", "SNOMED", "Clinical Finding", "S", "709044004",
       source="ohdsi"),
    _c(255573, "Chronic obstructive lung disease", "Condition", "SNOMED", "Clinical Finding", "S", "13645005",
       source="ohdsi"),
    _c(4182210, "Dementia", "Condition", "SNOMED", "Clinical Finding", "S", "52448006", source="ohdsi"),
    _c(443454, "Cerebral infarction", "Condition", "SNOMED", "Clinical Finding", "S", "432504007",
       source="ohdsi"),
    _c(77670, "Chest pain", "Condition", "SNOMED", "Clinical Finding", "S", "29857009", source="ohdsi"),
    _c(37018196, "Prediabetes", "Condition", "SNOMED", "Clinical Finding", "S", "714628002", source="ohdsi"),
    # ICD-10-CM diagnoses (source vocabulary: non-standard, 'Maps to' a SNOMED concept)
    _c(35206882, "Type 2 diabetes mellitus without complications", "Condition", "ICD10CM", "4-char billing code",
       None, "E11.9", source="mimic"),
    _c(35207793, "Heart failure, unspecified", "Condition", "ICD10CM", "4-char billing code", None, "I50.9",
       source="mimic"),
    _c(35208025, "Chronic obstructive pulmonary disease, unspecified", "Condition", "ICD10CM",
       "4-char billing code", None, "J44.9", source="mimic"),
    _c(35209276, "Chronic kidney disease, stage 3 (moderate)", "Condition", "ICD10CM", "4-char nonbill code",
       None, "N18.3", source="mimic"),
    _c(35207668, "Essential (primary) hypertension", "Condition", "ICD10CM", "3-char billing code", None, "I10",
       source="mimic"),
    _c(35207702, "Old myocardial infarction", "Condition", "ICD10CM", "4-char billing code", None, "I25.2",
       source="mimic"),
    _c(35207821, "Cerebral infarction, unspecified", "Condition", "ICD10CM", "4-char billing code", None,
       "I63.9", source="ohdsi"),
    _c(45538000, "Unspecified dementia without behavioral disturbance", "Condition", "ICD10CM",
       "5-char billing code", None, "F03.90", source="mimic"),
    _c(35207956, "Pneumonia, unspecified organism", "Condition", "ICD10CM", "4-char billing code", None, "J18.9",
       source="mimic"),
    _c(35209324, "Urinary tract infection, site not specified", "Condition", "ICD10CM", "4-char billing code",
       None, "N39.0", source="mimic"),
    _c(35205553, "Sepsis, unspecified organism", "Condition", "ICD10CM", "4-char billing code", None, "A41.9",
       source="mimic"),
    _c(45576876, "Unspecified atrial fibrillation", "Condition", "ICD10CM", "5-char billing code", None,
       "I48.91", source="mimic"),
    _c(45534424, "Chest pain, unspecified", "Condition", "ICD10CM", "4-char billing code", None, "R07.9",
       source="mimic"),
    # LOINC labs
    _c(3016723, "Creatinine [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S", "2160-0"),
    _c(3000963, "Hemoglobin [Mass/volume] in Blood", "Measurement", "LOINC", "Lab Test", "S", "718-7"),
    _c(3019550, "Sodium [Moles/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S", "2951-2"),
    _c(3004501, "Glucose [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S", "2345-7"),
    _c(3004410, "Hemoglobin A1c/Hemoglobin.total in Blood", "Measurement", "LOINC", "Lab Test", "S", "4548-4"),
    _c(3030354, "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by "
       "Creatinine-based formula (MDRD)", "Measurement", "LOINC", "Lab Test", None, "33914-3", "2018-06-14",
       "2018-06-15", "U"),
    _c(46236952, "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood "
       "by Creatinine-based formula (MDRD)", "Measurement", "LOINC", "Lab Test", "S", "77147-7",
       source="ohdsi"),
    # RxNorm drugs
    _c(40163924, "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", "Drug", "RxNorm",
       "Quant Clinical Drug", "S", "860975", "2009-09-06"),
    _c(19080128, "lisinopril 10 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "314076"),
    _c(957136, "furosemide 40 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "313988"),
    _c(40169216, "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler", "Drug", "RxNorm",
       "Quant Clinical Drug", "S", "895994", "2010-01-31"),
    _c(1545959, "atorvastatin 80 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "259255"),
    _c(1332419, "amlodipine 5 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "197361"),
    _c(40223768, "donepezil hydrochloride 10 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "997223",
       "2010-08-01"),
    _c(19073188, "amoxicillin 500 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "308192"),
    _c(1127433, "acetaminophen 325 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "313782"),
    _c(35605482, "2 ML ondansetron 2 MG/ML Injection", "Drug", "RxNorm", "Quant Clinical Drug", "S", "1740467",
       "2016-05-02"),
    _c(46275507, "1 ML heparin sodium, porcine 5000 UNT/ML Injection", "Drug", "RxNorm", "Quant Clinical Drug",
       "S", "1659263", "2015-09-08"),
    _c(1308216, "lisinopril", "Drug", "RxNorm", "Ingredient", "S", "29046"),
    # SNOMED CT procedures
    _c(4163872, "Plain chest X-ray", "Procedure", "SNOMED", "Procedure", "S", "399208008", "2003-07-31"),
    _c(4163951, "Electrocardiographic procedure", "Procedure", "SNOMED", "Procedure", "S", "29303009", _S),
    _c(4120120, "Hemodialysis", "Procedure", "SNOMED", "Procedure", "S", "302497006", _S),
    _c(4125350, "CT of head", "Procedure", "SNOMED", "Procedure", "S", "303653007", _S),
    _c(4230911, "Echocardiography", "Procedure", "SNOMED", "Procedure", "S", "40701008", _S),
    # UCUM units
    _c(8840, "milligram per deciliter", "Unit", "UCUM", "Unit", "S", "mg/dL"),
    _c(8749, "micromole per liter", "Unit", "UCUM", "Unit", "S", "umol/L"),
    _c(8753, "millimole per liter", "Unit", "UCUM", "Unit", "S", "mmol/L"),
    _c(8713, "gram per deciliter", "Unit", "UCUM", "Unit", "S", "g/dL"),
    _c(8636, "gram per liter", "Unit", "UCUM", "Unit", "S", "g/L"),
    _c(8554, "percent", "Unit", "UCUM", "Unit", "S", "%"),
    _c(720870, "milliliter per minute per 1.73 square meter", "Unit", "UCUM", "Unit", "S",
       "mL/min/(173.10*-2.m2)", "2022-04-07"),
    # visits, places of service, demographics, provenance
    _c(9201, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
    _c(9202, "Outpatient Visit", "Visit", "Visit", "Visit", "S", "OP"),
    _c(9203, "Emergency Room Visit", "Visit", "Visit", "Visit", "S", "ER"),
    _c(8717, "Inpatient Hospital", "Visit", "CMS Place of Service", "Visit", "S", "21", source="synpuf"),
    _c(8756, "Outpatient Hospital", "Visit", "CMS Place of Service", "Visit", "S", "22", source="synpuf"),
    _c(8870, "Emergency Room - Hospital", "Visit", "CMS Place of Service", "Visit", "S", "23", source="ohdsi"),
    _c(8971, "Inpatient Psychiatric Facility", "Visit", "CMS Place of Service", "Visit", "S", "51",
       source="ohdsi"),
    _c(8532, "FEMALE", "Gender", "Gender", "Gender", "S", "F", source="synpuf"),
    _c(8507, "MALE", "Gender", "Gender", "Gender", "S", "M", source="synpuf"),
    _c(8527, "White", "Race", "Race", "Race", "S", "5", source="synpuf"),
    _c(8516, "Black or African American", "Race", "Race", "Race", "S", "3", source="synpuf"),
    _c(38003563, "Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "S", "Hispanic"),
    _c(38003564, "Not Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "S", "Not Hispanic"),
    _c(32817, "EHR", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976890", source="ohdsi"),
    _c(0, "No matching concept", "Metadata", "None", "Undefined", None, "No matching concept", source="synpuf"),
)

#: non-standard concept -> the standard concept it 'Maps to' (the ETL's mapping)
MAPS_TO: dict[int, int] = {
    35206882: 4193704, 35207793: 316139, 35208025: 255573, 35209276: 443597, 35207668: 320128,
    35207702: 314666, 35207821: 443454, 45538000: 4182210, 35207956: 255848, 35209324: 81902,
    35205553: 132797, 45576876: 313217, 45534424: 77670, 3030354: 46236952,
}

#: (ancestor, descendant, min_levels_of_separation, max_levels_of_separation) besides self rows
ANCESTRY: tuple[tuple[int, int, int, int], ...] = (
    (201826, 4193704, 1, 1), (201820, 201826, 1, 1), (201820, 4193704, 2, 2),
    (316866, 320128, 1, 1), (46271022, 443597, 1, 1), (4329847, 314666, 1, 1),
    (9201, 8717, 1, 1), (9202, 8756, 1, 1), (1308216, 19080128, 2, 3),
)

#: domain_id -> (domain_name, domain_concept_id); ids from the SynPUF subset, else local
_DOMAINS = {
    "Condition": 19, "Drug": 13, "Ethnicity": 4, "Gender": 2, "Metadata": 7, "Race": 3, "Type Concept": 58,
    "Visit": 8, "Measurement": None, "Procedure": None, "Unit": None,
}
#: vocabulary_id -> (vocabulary_name, vocabulary_concept_id)
_VOCABULARIES = {
    "SNOMED": ("Systematic Nomenclature of Medicine - Clinical Terms (IHTSDO)", 44819097),
    "RxNorm": ("RxNorm (NLM)", 44819104),
    "Gender": ("OMOP Gender", 44819108),
    "Race": ("Race and Ethnicity Code Set (USBC)", 44819109),
    "CMS Place of Service": ("Place of Service Codes for Professional Claims (CMS)", 44819110),
    "Visit": ("OMOP Visit", 44819119),
    "Ethnicity": ("OMOP Ethnicity", 44819134),
    "Domain": ("OMOP Domain", 44819147),
    "Vocabulary": ("OMOP Vocabulary", 44819232),
    "Concept Class": ("OMOP Concept Class", 44819233),
    "Relationship": ("OMOP Relationship", 44819235),
    "None": ("OMOP Standardized Vocabularies", 44819096),
    "ICD10CM": ("International Classification of Diseases, Tenth Revision, Clinical Modification (NCHS)", 44819098),
    "LOINC": ("Logical Observation Identifiers Names and Codes (Regenstrief Institute)", 44819102),
    "UCUM": ("Unified Code for Units of Measure (Regenstrief Institute)", 44819107),
    "Type Concept": ("OMOP Type Concept", None),
}
#: concept_class_id -> (concept_class_name, concept_class_concept_id)
_CLASSES = {
    "Clinical Finding": ("Clinical Finding", 44818997), "Clinical Drug": ("Semantic Clinical Drug", 44819028),
    "Ingredient": ("Ingredient", 44818981), "Domain": ("Domain", 44819025), "Ethnicity": ("Ethnicity", 44819035),
    "Gender": ("Gender", 44819086), "Race": ("Race", 44819030), "Visit": ("OMOP Visit", 44819023),
    "Undefined": ("Undefined", 44819044), "Concept Class": ("OMOP Concept Class", 44819247),
    "Relationship": ("OMOP Relationship", 44819274), "Vocabulary": ("OMOP Vocabulary", 44819279),
    "Quant Clinical Drug": ("Quantified Clinical Drug", None), "Lab Test": ("Lab Test", None),
    "Procedure": ("Procedure", None), "Unit": ("Unit", None), "Type Concept": ("OMOP Type Concept", None),
    "3-char billing code": ("3-character billing code", None),
    "4-char billing code": ("4-character billing code", None),
    "4-char nonbill code": ("4-character non-billing code", None),
    "5-char billing code": ("5-character billing code", None),
}
#: relationship_id -> (name, is_hierarchical, defines_ancestry, reverse, relationship_concept_id)
RELATIONSHIPS = {
    "Maps to": ("Non-standard to Standard map (OMOP)", "0", "0", "Mapped from", 44818977),
    "Mapped from": ("Standard to Non-standard map (OMOP)", "0", "0", "Maps to", 44818976),
    "Is a": ("Is a", "1", "0", "Subsumes", 44818821),
    "Subsumes": ("Subsumes", "1", "1", "Is a", 44818723),
}
#: metadata concept ids not in the SynPUF subset: the 'Maps to' / 'Mapped from' relationship concepts
#: (OHDSI Vocabulary-v5.0 repository) and the ICD10CM, LOINC, UCUM vocabulary concepts (a public
#: export of the OHDSI VOCABULARY table, release v5.0 19-MAY-20)
_OHDSI_METADATA = {44818977, 44818976, 44819098, 44819102, 44819107}
#: metadata concepts whose concept_name differs from the name in their table (SynPUF subset)
_CONCEPT_NAMES = {44819110: "CMS Place of Service"}


def _metadata() -> tuple[list[Concept], list[tuple], list[tuple], list[tuple], list[tuple]]:
    """Metadata concepts and the domain, vocabulary, concept_class and relationship rows."""
    concepts: list[Concept] = []
    local = iter(range(LOCAL_METADATA_BASE, LOCAL_METADATA_BASE + 1000))

    def meta(cid, name, vocab, cls, code="OMOP generated"):
        cid, source = (cid, "synpuf") if cid is not None else (next(local), "local")
        if cid in _OHDSI_METADATA:
            source = "ohdsi"
        concepts.append(_c(cid, name, "Metadata", vocab, cls, None, code, source=source))
        return cid

    domains = [(d, d, meta(cid, d, "Domain", "Domain")) for d, cid in _DOMAINS.items()]
    vocabularies = []
    for vid, (name, cid) in _VOCABULARIES.items():
        concept_name = _CONCEPT_NAMES.get(cid, name)
        vocabularies.append((vid, name, None, None,
                             meta(cid, concept_name, "Vocabulary", "Vocabulary")))
    classes = [(k, name, meta(cid, name, "Concept Class", "Concept Class")) for k, (name, cid) in _CLASSES.items()]
    relationships = [(rid, name, h, d, rev, meta(cid, name, "Relationship", "Relationship"))
                     for rid, (name, h, d, rev, cid) in RELATIONSHIPS.items()]
    return concepts, domains, vocabularies, classes, relationships


def vocabulary_tables() -> dict[str, list[tuple]]:
    """The rows of every vocabulary table, keyed by table name (CDM v5.4 column order)."""
    meta, domains, vocabularies, classes, relationships = _metadata()
    concepts = sorted(_CLINICAL + tuple(meta), key=lambda c: c.concept_id)
    by_id = {c.concept_id: c for c in concepts}
    rel = []
    for c in concepts:
        if c.concept_id == 0 or c.domain_id == "Metadata":
            continue
        target = MAPS_TO.get(c.concept_id, c.concept_id if c.standard_concept == "S" else None)
        if target is not None:
            rel.append((c.concept_id, target, "Maps to", "1970-01-01", "2099-12-31", None))
            rel.append((target, c.concept_id, "Mapped from", "1970-01-01", "2099-12-31", None))
    ancestor = [(c.concept_id, c.concept_id, 0, 0) for c in concepts if c.standard_concept == "S"]
    for anc, desc, lo, hi in ANCESTRY:
        ancestor.append((anc, desc, lo, hi))
        if lo == 1:
            rel.append((desc, anc, "Is a", "1970-01-01", "2099-12-31", None))
            rel.append((anc, desc, "Subsumes", "1970-01-01", "2099-12-31", None))
    missing = {x for r in rel for x in r[:2]} - set(by_id)
    if missing:  # pragma: no cover - a programming error in the tables above
        raise AssertionError(f"relationship rows name concepts without a concept row: {sorted(missing)}")
    return {
        "concept": [c.row() for c in concepts],
        "concept_relationship": sorted(set(rel)),
        "concept_ancestor": sorted(ancestor),
        "domain": domains,
        "vocabulary": vocabularies,
        "concept_class": classes,
        "relationship": relationships,
    }


def concepts() -> dict[int, Concept]:
    """Every shipped concept by id."""
    meta = _metadata()[0]
    return {c.concept_id: c for c in _CLINICAL + tuple(meta)}


def concept_by_code(vocabulary_id: str, code: str) -> Concept:
    """The shipped concept of ``code`` in ``vocabulary_id`` (KeyError when not shipped)."""
    for c in _CLINICAL:
        if c.vocabulary_id == vocabulary_id and c.concept_code == code:
            return c
    raise KeyError(f"{vocabulary_id} {code} is not in the shipped vocabulary subset")
