"""Hand-made record tables for cohort tests."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from ehr_fed.mapping import SiteMapping, load_study
from ehr_fed.sources.records import TABLES, SourceRecords, create_tables

ROOT = Path(__file__).resolve().parents[2]
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


class RecordBuilder:
    """Insert rows (dicts; missing columns NULL) into a fresh record connection."""

    def __init__(self) -> None:
        con = duckdb.connect()
        create_tables(con)
        self.records = SourceRecords(con, kind="fhir", source_records={"Patient": 0})

    def add(self, table: str, **row) -> RecordBuilder:
        cols = list(TABLES[table])
        unknown = set(row) - set(cols)
        assert not unknown, f"unknown columns {unknown} for {table}"
        self.records.con.execute(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in cols)})',
                                 [row.get(c) for c in cols])
        self.records.source_records[table] = self.records.source_records.get(table, 0) + 1
        return self

    def person(self, pid: str, birth="1950-01-01", sex="female", death=None) -> RecordBuilder:
        return self.add("person", person_id=pid, birth_date=birth, sex=sex, death_time=death)

    def visit(self, vid: str, pid: str, start, end, code="IMP", system=V3, **kw) -> RecordBuilder:
        return self.add("visit", visit_id=vid, person_id=pid, start_time=start, end_time=end,
                        class_system=system, class_code=code, **kw)


@pytest.fixture
def builder() -> RecordBuilder:
    b = RecordBuilder()
    yield b
    b.records.close()


@pytest.fixture
def mapping() -> SiteMapping:
    return SiteMapping.model_validate({
        "site_id": "test_site", "source": "fhir",
        "visits": {
            "inpatient": [{"system": V3, "code": "IMP"}],
            "emergency": [{"system": V3, "code": "EMER"}],
            "outpatient": [{"system": V3, "code": "AMB"}],
            "transfer_dispositions": ["urn:dd|transfer"],
            "planned_priorities": ["urn:prio|elective"],
        },
        "code_systems": {"http://snomed.info/sct": "snomed", "http://hl7.org/fhir/sid/icd-10-cm": "icd10cm",
                         "http://loinc.org": "loinc", "http://www.nlm.nih.gov/research/umls/rxnorm": "rxnorm"},
        "units": {"mg/dl": "mg/dL", "umol/l": "umol/L"},
    })


@pytest.fixture(scope="session")
def readmission():
    return load_study(ROOT / "mappings/studies/readmission_30d.yaml")


@pytest.fixture(scope="session")
def t2d():
    return load_study(ROOT / "mappings/studies/t2d_progression.yaml")
