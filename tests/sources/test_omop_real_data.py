"""The OMOP reader on the real CDM extracts in ../shared/data/omop (counts from the files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehr_fed.mapping.loader import load_mapping
from ehr_fed.sources.omop import read_omop
from ehr_fed.sources.records import TABLES

PROJECT = Path(__file__).resolve().parents[2]


def rows(records, sql: str) -> list[tuple]:
    return records.con.execute(sql).fetchall()


def visit_concepts(records) -> dict[str, tuple[int, int]]:
    got = rows(records, "SELECT class_code, count(*), count(DISTINCT person_id) FROM visit GROUP BY 1")
    return {code: (n, persons) for code, n, persons in got}


def readmissions(records, codes: tuple[str, ...]) -> tuple[int, int]:
    """(stays with an end, stays followed by the next stay within 30 days of the end): the issue's rule."""
    inlist = ", ".join(f"'{c}'" for c in codes)
    return rows(records, f"""
        WITH s AS (SELECT person_id, start_time, end_time,
                          lead(start_time) OVER (PARTITION BY person_id ORDER BY start_time, end_time) AS nxt
                   FROM visit WHERE class_code IN ({inlist}))
        SELECT count(*) FILTER (WHERE end_time IS NOT NULL),
               count(*) FILTER (WHERE nxt >= end_time AND nxt <= end_time + INTERVAL 30 DAY) FROM s""")[0]


@pytest.fixture(scope="module")
def synthea(omop_data):
    with read_omop(omop_data / "synthea27nj_v54") as records:
        yield records


@pytest.fixture(scope="module")
def mimic(omop_data):
    mapping = load_mapping(PROJECT / "mappings" / "sites" / "mimic_omop.yaml")
    with read_omop(omop_data / "mimic4demo_v53", mapping.omop) as records:
        yield records


@pytest.fixture(scope="module")
def synpuf(omop_data):
    with read_omop(omop_data / "synpuf10_v50") as records:
        yield records


def test_synthea27nj_counts_per_table(synthea):
    assert synthea.kind == "omop"
    assert synthea.source_records == {
        "person": 28, "death": 3, "visit_occurrence": 1791, "condition_occurrence": 470,
        "measurement": 10040, "drug_exposure": 883, "procedure_occurrence": 1649,
    }
    assert len(synthea.quarantine) == 0
    counts = {t: rows(synthea, f'SELECT count(*) FROM "{t}"')[0][0] for t in TABLES}
    assert counts == {"person": 28, "visit": 1791, "condition": 470, "measurement": 10040,
                      "medication": 883, "procedure": 1649}


def test_synthea27nj_visits_and_readmissions(synthea):
    assert visit_concepts(synthea) == {"9201": (13, 7), "9203": (56, 21), "9202": (1722, 28)}
    assert rows(synthea, "SELECT DISTINCT class_system FROM visit") == [("omop:visit_concept_id",)]
    assert rows(synthea, "SELECT count(*) FROM visit WHERE part_of IS NOT NULL")[0][0] == 0
    assert readmissions(synthea, ("9201", "262")) == (13, 1)


def test_synthea27nj_people_and_codes(synthea):
    assert rows(synthea, "SELECT sex, count(*) FROM person GROUP BY 1 ORDER BY 1") == [("female", 13), ("male", 15)]
    person1 = synthea.table("person").set_index("person_id").loc["1"]
    assert str(person1["birth_date"])[:10] == "1998-04-09" and person1["sex"] == "male"
    assert rows(synthea, "SELECT person_id, death_time FROM person WHERE person_id = '7'")[0][1].isoformat() \
        == "2019-05-28T00:00:00"
    assert rows(synthea, "SELECT count(*) FROM person WHERE death_time IS NOT NULL")[0][0] == 3
    # codes resolved through the concept table; HbA1c as the data sheet says
    assert rows(synthea, "SELECT count(*), min(unit) FROM measurement WHERE system = 'LOINC' AND code = '4548-4'") \
        == [(195, "%")]
    assert rows(synthea, "SELECT DISTINCT system FROM condition") == [("SNOMED",)]
    assert rows(synthea, "SELECT DISTINCT system FROM medication") == [("RxNorm",)]
    first = rows(synthea, "SELECT person_id, visit_id, onset_time, system, code, concept_id FROM condition "
                          "WHERE concept_id = 372328 AND person_id = '1'")[0]
    assert first[:2] == ("1", "1") and first[3:] == ("SNOMED", "65363002", 372328)
    weight = rows(synthea, "SELECT value, unit FROM measurement WHERE code = '29463-7' AND person_id = '1' "
                           "AND time = TIMESTAMP '2013-05-17 00:00:00'")[0]
    assert weight == (48.1, "kg")
    # the vocabulary tables are present, so concept_ancestor is copied (empty in this extract)
    assert rows(synthea, "SELECT count(*) FROM concept_ancestor")[0][0] == 0


def test_mimic4demo_visits_spread_over_concepts(mimic):
    assert mimic.source_records["measurement"] == 0      # no measurement table: empty records
    assert mimic.source_records["visit_occurrence"] == 852
    assert mimic.source_records["person"] == 100
    assert rows(mimic, "SELECT count(*) FROM measurement")[0][0] == 0
    concepts = {code: n for code, (n, _) in visit_concepts(mimic).items()}
    assert concepts == {"8870": 119, "581385": 82, "262": 38, "8883": 18, "9201": 13, "38004207": 582}
    assert readmissions(mimic, ("9201", "262")) == (51, 2)
    assert readmissions(mimic, ("9201", "262", "8870", "581385", "8883")) == (270, 52)
    # CDM 5.3 admitting_source / discharge_to read under the 5.4 names; admission type as priority
    assert rows(mimic, "SELECT count(*) FROM visit WHERE discharge_disposition = "
                       "'omop:discharged_to_concept_id|8863'")[0][0] == 36
    assert rows(mimic, "SELECT count(*) FROM visit WHERE admit_source = "
                       "'omop:admitted_from_source_value|WALK-IN/SELF REFERRAL'")[0][0] == 7
    assert rows(mimic, "SELECT count(*) FROM visit WHERE priority = "
                       "'omop:visit_source_concept_id|2000001804'")[0][0] == 13


def test_mimic4demo_icd_source_values(mimic):
    got = dict(rows(mimic, "SELECT system, count(*) FROM condition GROUP BY 1"))
    assert got == {"ICD9CM": 1852, "ICD10CM": 1981, "omop": 12608}
    # space-padded source values are trimmed: '78791  ' -> '78791'
    assert rows(mimic, "SELECT count(*) FROM condition WHERE code = '78791' AND system = 'ICD9CM'")[0][0] > 0
    assert rows(mimic, "SELECT count(*) FROM condition WHERE code <> trim(code)")[0][0] == 0
    assert rows(mimic, "SELECT count(DISTINCT person_id) FROM condition WHERE system = 'ICD10CM' "
                       "AND code IN ('N183', 'N184')")[0][0] > 0
    # MIMIC local concepts only: drugs keep their standard concept ids as system 'omop'
    assert rows(mimic, "SELECT DISTINCT system FROM medication") == [("omop",)]
    assert mimic.source_records["drug_exposure"] == rows(mimic, "SELECT count(*) FROM medication")[0][0] == 18229


def test_mimic4demo_visit_source_value_ids(omop_data):
    """visit_id_field: visit_source_value gives MIMIC's subject|hadm_id keys, also on clinical rows."""
    with read_omop(omop_data / "mimic4demo_v53", {"visit_id_field": "visit_source_value"}) as r:
        assert rows(r, r"SELECT count(*) FROM visit WHERE regexp_matches(visit_id, '^\d+\|\d+$')")[0][0] == 275
        linked = rows(r, "SELECT count(*), count(v.visit_id) FROM condition c LEFT JOIN visit v USING (visit_id)")[0]
        assert linked == (16441, 16441)


def test_synpuf10_cdm50(synpuf):
    assert visit_concepts(synpuf) == {"9201": (6, 6), "0": (17, 10), "9202": (4, 3)}
    assert readmissions(synpuf, ("9201", "262")) == (6, 0)
    assert synpuf.source_records == {
        "person": 10, "visit_occurrence": 27, "condition_occurrence": 26, "measurement": 0,
        "drug_exposure": 13, "procedure_occurrence": 0,
    }
    # year/month/day of birth (no birth_datetime in CDM 5.0)
    assert rows(synpuf, "SELECT birth_date FROM person WHERE person_id = '1780'")[0][0].isoformat() == "1940-02-01"
    # no end date: start + days_supply
    start, end = rows(synpuf, "SELECT start_time, end_time FROM medication WHERE person_id = '1780' "
                              "AND concept_id = 40174825")[0]
    assert (end - start).days == 30
    # concept_ancestor rows whose descendant is used by the clinical tables
    assert rows(synpuf, "SELECT count(*) FROM concept_ancestor")[0][0] > 0
    assert rows(synpuf, "SELECT count(*) FROM concept_ancestor a LEFT JOIN (SELECT concept_id FROM condition "
                        "UNION SELECT concept_id FROM medication) u ON u.concept_id = a.descendant_concept_id "
                        "WHERE u.concept_id IS NULL")[0][0] == 0


def test_person_source_value_as_person_id(omop_data):
    """Synthetic hospitals key OMOP persons by person_source_value (= FHIR Patient.id)."""
    with read_omop(omop_data / "synthea27nj_v54", {"person_id_field": "person_source_value"}) as r:
        assert rows(r, "SELECT count(*) FROM person WHERE person_id = '1007c05b-8d20-8fe6-6790-44622f8316df'")[0][0] == 1
        orphans = rows(r, "SELECT count(*) FROM visit v LEFT JOIN person p USING (person_id) WHERE p.person_id IS NULL")
        assert orphans == [(0,)]
        assert rows(r, "SELECT count(DISTINCT person_id) FROM condition WHERE length(person_id) = 36")[0][0] > 0


def test_shipped_omop_mappings_load():
    default = load_mapping(PROJECT / "mappings" / "sites" / "omop_default.yaml")
    mimic = load_mapping(PROJECT / "mappings" / "sites" / "mimic_omop.yaml")
    assert default.source == mimic.source == "omop"
    assert {v.code for v in default.visits.inpatient} == {"9201", "262"}
    assert {v.code for v in mimic.visits.inpatient} == {"9201", "262", "8870", "581385", "8883"}
    assert mimic.omop.condition_occurrence.code_field == "source_value"
