"""Applying a site mapping to record tables: visit categories, code normalisation, OMOP descendants."""

from __future__ import annotations

import duckdb
import pytest

from ehr_fed.mapping import SiteMapping, StudySpec
from ehr_fed.mapping.apply import apply_mapping, normalise_code
from ehr_fed.sources.records import SourceRecords, create_tables

MIMIC = "http://fhir.mimic.mit.edu/CodeSystem/admission-class"


@pytest.fixture
def records():
    con = duckdb.connect()
    create_tables(con)
    r = SourceRecords(con, kind="omop")
    yield r
    r.close()


STUDY = StudySpec.model_validate({
    "study_id": "s", "index_event": {"kind": "inpatient_discharge"}, "label": {"kind": "readmission"},
    "concept_sets": {"hf": {"icd10cm": ["I50", "I11.0"], "icd9cm": ["428"], "snomed": ["84114007"],
                            "omop": [316139]}},
    "features": [{"name": "f", "kind": "condition_flag", "concept_set": "hf"}],
})
MAPPING = SiteMapping.model_validate({
    "site_id": "m", "source": "omop",
    "visits": {"inpatient": [{"system": MIMIC, "code": "*"}], "emergency": [{"system": "v3", "code": "EMER"}],
               "other": [{"system": "v3", "code": "ACUTE"}]},
    "code_systems": {"urn:icd10": "icd10cm", "urn:icd9": "icd9cm"},
    "local_codes": [{"system": "urn:local", "code": "HF!", "to": {"vocabulary": "snomed", "code": "84114007"}}],
})


def test_visit_categories_wildcard_and_parts(records):
    con = records.con
    for vid, system, code, part in [("a", MIMIC, "EW EMER.", None), ("b", MIMIC, "ELECTIVE", None),
                                    ("c", "v3", "ACUTE", "a"), ("d", "v3", "EMER", None), ("e", "v3", "HH", None)]:
        con.execute("INSERT INTO visit (visit_id, person_id, class_system, class_code, part_of) "
                    "VALUES (?, 'p', ?, ?, ?)", [vid, system, code, part])
    apply_mapping(records, MAPPING, STUDY)
    got = con.execute("SELECT visit_id, category, is_part FROM std_visit ORDER BY 1").fetchall()
    assert got == [("a", "inpatient", False), ("b", "inpatient", False), ("c", "other", True),
                   ("d", "emergency", False), ("e", "other", False)]


def test_codes_are_normalised_and_matched(records):
    con = records.con
    rows = [("1", "urn:icd10", " i50.9 "), ("2", "urn:icd10", "I11.0"), ("3", "urn:icd10", "I110"),
            ("4", "urn:icd10", "I11.9"), ("5", "urn:icd9", "428.0"), ("6", "SNOMED", "84114007"),
            ("7", "urn:local", "HF!"), ("8", "urn:icd10", "I5"), ("9", "urn:other", "I50")]
    for pid, system, code in rows:
        con.execute("INSERT INTO condition (person_id, system, code) VALUES (?, ?, ?)", [pid, system, code])
    apply_mapping(records, MAPPING, STUDY)
    got = [r[0] for r in con.execute("SELECT person_id FROM std_condition_set ORDER BY 1").fetchall()]
    assert got == ["1", "2", "3", "5", "6", "7"]
    assert normalise_code("icd9cm", " 250.00 ") == "25000"
    assert normalise_code("snomed", " 123 ") == "123"


def test_omop_concepts_match_descendants(records):
    con = records.con
    con.execute("CREATE TABLE concept_ancestor (ancestor_concept_id BIGINT, descendant_concept_id BIGINT)")
    con.execute("INSERT INTO concept_ancestor VALUES (316139, 316139), (316139, 439846), (1, 2)")
    for pid, concept in [("a", 316139), ("b", 439846), ("c", 2)]:
        con.execute("INSERT INTO condition (person_id, system, code, concept_id) VALUES (?, 'omop', ?, ?)",
                    [pid, str(concept), concept])
    apply_mapping(records, MAPPING, STUDY)
    got = [r[0] for r in con.execute("SELECT person_id FROM std_condition_set ORDER BY 1").fetchall()]
    assert got == ["a", "b"]
