"""Bad OMOP rows are quarantined with their reason and ``table:row`` location, never dropped silently."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ehr_fed.sources.omop import OmopSourceError, read_omop


def write(folder: Path, table: str, header: str, *lines: str) -> None:
    (folder / f"{table}.csv").write_text("\n".join([header, *lines]) + "\n")


PERSON = "person_id,gender_concept_id,year_of_birth,month_of_birth,day_of_birth,birth_datetime,person_source_value"
VISIT = ("visit_occurrence_id,person_id,visit_concept_id,visit_start_date,visit_start_datetime,visit_end_date,"
         "visit_end_datetime,visit_source_value")
CONDITION = ("condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_start_datetime,"
             "visit_occurrence_id,condition_source_value")
MEASUREMENT = ("measurement_id,person_id,measurement_concept_id,measurement_date,measurement_datetime,"
               "value_as_number,unit_concept_id,unit_source_value,visit_occurrence_id")
DRUG = ("drug_exposure_id,person_id,drug_concept_id,drug_exposure_start_date,drug_exposure_end_date,"
        "days_supply,visit_occurrence_id")


@pytest.fixture
def bad_site(tmp_path) -> Path:
    """A tiny CDM with one good row and one bad row of every kind the reader checks."""
    write(tmp_path, "person", PERSON,
          "1,8532,1950,3,4,,p1",
          "2,8507,1960,,,1960-07-01 10:00:00,p2",
          "3,0,19x0,,,,p3",                      # person:3 bad_date
          "2,8507,1961,,,,p2b")                  # person:4 duplicate_id
    write(tmp_path, "death", "person_id,death_date,death_datetime",
          "2,2020-01-02,",
          "77,2020-01-01,")                      # death:2 missing_reference
    write(tmp_path, "visit_occurrence", VISIT,
          "10,1,9201,2020-01-01,,2020-01-05,,a",
          "11,1,9201,2020-02-30,,2020-03-05,,b",     # visit_occurrence:2 bad_date (no Feb 30)
          "12,99,9201,2020-01-01,,2020-01-05,,c",    # visit_occurrence:3 missing_reference
          "13,2,9203,2020-05-05,,2020-05-01,,d",     # visit_occurrence:4 end_before_start
          "14,2,9202,,,,,e",                         # visit_occurrence:5 missing_field (no start)
          "15,2,9202.0,2020-06-01,2020-06-01 08:30:00,,,f")
    write(tmp_path, "condition_occurrence", CONDITION,
          "100,1,201826,2020-01-02,,10,E11.9",
          "101,42,201826,2020-01-02,,10,E11.9",      # condition_occurrence:2 missing_reference
          "102,1,201826,yesterday,,10,E11.9",        # condition_occurrence:3 bad_date
          "103,1,201826,,,10,E11.9")                 # no date: kept (cohort uses the visit start)
    write(tmp_path, "measurement", MEASUREMENT,
          "200,1,3004410,2020-01-03,,7.1,8554,%,10",
          "201,1,3004410,2020-01-03,,high,8554,%,10",  # measurement:2 bad_value
          "202,1,3004410,,,7.0,8554,%,10")             # measurement:3 missing_field (no date)
    write(tmp_path, "drug_exposure", DRUG,
          "300,1,1503297,2020-01-01,2020-01-31,,10",
          "301,1,1503297,2020-02-01,2020-01-01,,10",   # drug_exposure:2 end_before_start
          "302,1,1503297,2020-03-01,,30,10")
    return tmp_path


def test_quarantine_reasons_and_locations(bad_site):
    with read_omop(bad_site) as records:
        got = {(q.location, q.reason) for q in records.quarantine}
        assert got == {
            ("person:3", "bad_date"),
            ("person:4", "duplicate_id"),
            ("death:2", "missing_reference"),
            ("visit_occurrence:2", "bad_date"),
            ("visit_occurrence:3", "missing_reference"),
            ("visit_occurrence:4", "end_before_start"),
            ("visit_occurrence:5", "missing_field"),
            ("condition_occurrence:2", "missing_reference"),
            ("condition_occurrence:3", "bad_date"),
            ("measurement:2", "bad_value"),
            ("measurement:3", "missing_field"),
            ("drug_exposure:2", "end_before_start"),
        }
        assert records.quarantine.counts() == {
            "bad_date": 3, "bad_value": 1, "duplicate_id": 1, "end_before_start": 2,
            "missing_field": 2, "missing_reference": 3,
        }
        # the kept rows, and nothing else
        assert records.source_records["visit_occurrence"] == 6
        assert sorted(records.table("visit")["visit_id"]) == ["10", "15"]
        assert records.count("person") == 2
        assert records.count("condition") == 2
        assert records.count("measurement") == 1
        assert records.count("medication") == 2
        by_location = {q.location: q for q in records.quarantine}
        q = by_location["visit_occurrence:3"]
        assert q.resource_type == "visit_occurrence"
        assert q.detail == "visit_occurrence_id 12: person_id 99 is not in person"
        assert json.loads(q.record)["visit_occurrence_id"] == "12"
        assert "2020-02-30" in by_location["visit_occurrence:2"].record
        assert by_location["measurement:2"].detail == "measurement_id 201: value_as_number high is not a number"


def test_kept_values(bad_site):
    with read_omop(bad_site) as records:
        person = records.table("person").set_index("person_id")
        assert str(person.loc["1", "birth_date"])[:10] == "1950-03-04"
        assert str(person.loc["2", "birth_date"])[:10] == "1960-07-01"
        assert (person.loc["1", "sex"], person.loc["2", "sex"]) == ("female", "male")
        assert str(person.loc["2", "death_time"]) == "2020-01-02 00:00:00"
        visit = records.table("visit").set_index("visit_id")
        assert visit.loc["15", "class_code"] == "9202"            # '9202.0' normalised
        assert str(visit.loc["15", "start_time"]) == "2020-06-01 08:30:00"   # datetime before date
        assert visit.loc["10", "class_system"] == "omop:visit_concept_id"
        cond = records.con.execute("SELECT onset_time, system, code FROM condition ORDER BY onset_time").fetchall()
        # no concept table: system 'omop', code = the concept id; no date -> NULL onset
        assert [c[1:] for c in cond] == [("omop", "201826"), ("omop", "201826")]
        assert cond[1][0] is None
        ends = dict(records.con.execute("SELECT CAST(start_time AS DATE)::VARCHAR, CAST(end_time AS DATE)::VARCHAR "
                                        "FROM medication").fetchall())
        assert ends == {"2020-01-01": "2020-01-31", "2020-03-01": "2020-03-31"}


def test_quarantine_file(bad_site, tmp_path):
    with read_omop(bad_site) as records:
        path = records.quarantine.write(tmp_path / "out.quarantine.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 12 and {"reason", "location", "resource_type", "detail", "record"} <= set(lines[0])


def test_strict_stops_on_bad_rows(bad_site):
    with pytest.raises(OmopSourceError, match=r"strict mode: 12 OMOP rows rejected .*first at person:3"):
        read_omop(bad_site, strict=True)


def test_source_values_with_declared_vocabulary(bad_site):
    """code_field: source_value takes the source value with its declared vocabulary."""
    options = {"condition_occurrence": {"code_field": "source_value", "source_vocabulary": "ICD10CM"}}
    with read_omop(bad_site, options) as records:
        codes = records.con.execute("SELECT DISTINCT system, code, concept_id FROM condition").fetchall()
        assert codes == [("ICD10CM", "E11.9", 201826)]


def test_workdir_holds_the_records(bad_site, tmp_path):
    workdir = tmp_path / "work"
    records = read_omop(bad_site, workdir=workdir)
    try:
        assert records.database_path is not None and records.database_path.parent == workdir
        assert records.database_path.exists()
        assert records.count("visit") == 2
    finally:
        records.close()


def test_progress_callback(bad_site):
    steps = []
    with read_omop(bad_site, progress=lambda step, done, total: steps.append((step, done, total))):
        pass
    assert steps[0] == ("person", 1, 7) and steps[-1] == ("vocabulary", 7, 7)


def test_unit_from_concept_else_source_value(tmp_path):
    write(tmp_path, "person", PERSON, "1,8532,1950,,,,p1")
    write(tmp_path, "visit_occurrence", VISIT, "10,1,9201,2020-01-01,,2020-01-05,,a")
    write(tmp_path, "measurement", MEASUREMENT,
          "200,1,3020630,2020-01-03,,88.4,8749,umol/l,10",   # unit concept resolves to its UCUM code
          "201,1,3020630,2020-01-03,,1.0,0,mg/dl,10")        # concept 0: the source value
    with (tmp_path / "concept.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                    "standard_concept", "concept_code", "valid_start_date", "valid_end_date", "invalid_reason"])
        w.writerow([3020630, "Creatinine", "Measurement", "LOINC", "Lab Test", "S", "2160-0", "", "", ""])
        w.writerow([8749, "micromole per liter", "Unit", "UCUM", "Unit", "S", "umol/L", "", "", ""])
    with read_omop(tmp_path) as records:
        got = records.con.execute("SELECT system, code, value, unit FROM measurement ORDER BY value").fetchall()
        assert got == [("LOINC", "2160-0", 1.0, "mg/dl"), ("LOINC", "2160-0", 88.4, "umol/L")]
        assert records.source_records["condition_occurrence"] == 0
        # no concept_ancestor table in the source: none in the records
        assert records.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'concept_ancestor'"
                                   ).fetchall() == [(0,)]
