"""OMOP conditions keep their source coding (ICD-10-CM beside the standard SNOMED CT concept), and
unit concepts are read as UCUM units."""

from __future__ import annotations

import pytest

from ehr_fed.mapping.units import canonical_ucum
from ehr_fed.sources.omop import read_omop

CONCEPT = """concept_id,concept_name,domain_id,vocabulary_id,concept_class_id,standard_concept,concept_code,valid_start_date,valid_end_date,invalid_reason
4193704,Type 2 diabetes mellitus without complication,Condition,SNOMED,Clinical Finding,S,313436004,1970-01-01,2099-12-31,
35206882,Type 2 diabetes mellitus without complications,Condition,ICD10CM,4-char billing code,,E11.9,1970-01-01,2099-12-31,
320128,Essential hypertension,Condition,SNOMED,Clinical Finding,S,59621000,1970-01-01,2099-12-31,
46236952,Glomerular filtration rate/1.73 sq M.predicted,Measurement,LOINC,Lab Test,S,77147-7,1970-01-01,2099-12-31,
720870,milliliter per minute per 1.73 square meter,Unit,UCUM,Unit,S,mL/min/(173.10*-2.m2),2022-04-07,2099-12-31,
"""


@pytest.fixture
def cdm(tmp_path):
    (tmp_path / "concept.csv").write_text(CONCEPT)
    (tmp_path / "person.csv").write_text(
        "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id\n1,8532,1950,8527,38003564\n")
    (tmp_path / "visit_occurrence.csv").write_text(
        "visit_occurrence_id,person_id,visit_concept_id,visit_start_date,visit_end_date,visit_type_concept_id\n"
        "10,1,9202,2020-01-01,2020-01-01,32817\n")
    (tmp_path / "condition_occurrence.csv").write_text(
        "condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_type_concept_id,"
        "visit_occurrence_id,condition_source_value,condition_source_concept_id\n"
        "1,1,4193704,2020-01-01,32817,10,E11.9,35206882\n"     # ICD-10-CM source, SNOMED CT standard
        "2,1,320128,2020-01-01,32817,10,59621000,320128\n"     # source concept = standard concept
        "3,1,320128,2020-01-01,32817,10,I10,0\n"               # source concept unknown to the CDM
        "4,1,320128,2020-01-01,32817,10,I10,35207668\n")       # source concept not in the concept table
    (tmp_path / "measurement.csv").write_text(
        "measurement_id,person_id,measurement_concept_id,measurement_date,measurement_type_concept_id,"
        "value_as_number,unit_concept_id,unit_source_value,visit_occurrence_id\n"
        "1,1,46236952,2020-01-01,32817,61,720870,mL/min/1.73m2,10\n")
    return tmp_path


def test_a_source_concept_other_than_the_standard_one_is_a_second_coding(cdm):
    with read_omop(cdm) as r:
        standard = r.con.execute('SELECT system, code, concept_id FROM "condition" ORDER BY concept_id').fetchall()
        assert standard == [("SNOMED", "59621000", 320128)] * 3 + [("SNOMED", "313436004", 4193704)]
        source = r.con.execute('SELECT person_id, visit_id, onset_time, system, code, concept_id '
                               'FROM condition_source').fetchall()
        assert [row[3:] for row in source] == [("ICD10CM", "E11.9", 35206882)]
        assert source[0][:3] == r.con.execute('SELECT person_id, visit_id, onset_time FROM "condition" '
                                              "WHERE concept_id = 4193704").fetchone()


def test_unit_concepts_are_read_as_ucum_units(cdm):
    with read_omop(cdm) as r:
        (unit,) = r.con.execute('SELECT unit FROM "measurement"').fetchone()
    assert unit == "mL/min/(173.10*-2.m2)"            # the unit concept's code wins over unit_source_value
    assert canonical_ucum(unit) == "mL/min/{1.73_m2}"
    assert canonical_ucum("ML/MIN/(173.10*-2.M2)") == "mL/min/{1.73_m2}"
    assert canonical_ucum("mL/min") == "mL/min"           # 8795 "milliliter per minute" is another unit
