"""The FHIR reader on the real data sets of ../shared/data (facts in SOURCES.md)."""

from __future__ import annotations

import gzip

import orjson
import pytest

from ehr_fed.sources import read_source
from ehr_fed.sources.fhir import FhirOptions, read_fhir


@pytest.fixture(scope="module")
def mimic(shared_data):
    with read_source("fhir", shared_data / "fhir" / "mimic4demo") as records:
        yield records


@pytest.fixture(scope="module")
def bulk10(shared_data):
    with read_source("fhir", shared_data / "fhir" / "synthea_bulk10") as records:
        yield records


@pytest.fixture(scope="module")
def bundles12(shared_data):
    with read_source("fhir", shared_data / "fhir" / "synthea_bundles12") as records:
        yield records


def test_mimic_resources_and_visits(mimic):
    assert mimic.source_records == {"Condition": 4181, "Encounter": 263 + 138, "Patient": 100}
    assert mimic.count("person") == 100
    assert mimic.count("condition") == 4181
    assert len(mimic.quarantine) == 0
    hosp, icu = mimic.con.execute(
        "SELECT count(*) FILTER (WHERE part_of IS NULL), count(*) FILTER (WHERE part_of IS NOT NULL) FROM visit"
    ).fetchone()
    assert (hosp, icu) == (263, 138)
    # every ICU stay is part of a hospital admission of the same source
    orphans = mimic.con.execute(
        "SELECT count(*) FROM visit i WHERE part_of IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM visit h WHERE h.visit_id = i.part_of)"
    ).fetchone()[0]
    assert orphans == 0
    assert mimic.con.execute(
        "SELECT count(*) FROM visit WHERE part_of IS NULL AND start_time IS NOT NULL AND end_time IS NOT NULL"
    ).fetchone()[0] == 263


def test_mimic_codes_offsets_and_condition_dates(mimic):
    systems = dict(mimic.con.execute("SELECT system, count(*) FROM condition GROUP BY 1").fetchall())
    assert systems == {
        "http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd9": 2107,
        "http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd10": 2074,
    }
    # MIMIC Conditions carry no onset: NULL by default
    assert mimic.con.execute("SELECT count(onset_time) FROM condition").fetchone()[0] == 0
    # Encounter 0071a339...: period.start 2147-12-30T08:40:00-05:00 -> 13:40 UTC
    row = mimic.con.execute(
        "SELECT start_time, end_time, class_code, admit_source, discharge_disposition, priority FROM visit "
        "WHERE visit_id = '0071a339-74cd-596a-9083-771d41d6d118'"
    ).fetchone()
    assert str(row[0]) == "2147-12-30 13:40:00" and str(row[1]) == "2148-01-11 22:55:00"
    assert row[2] == "EW EMER."
    assert row[3] == "http://fhir.mimic.mit.edu/CodeSystem/admit-source|EMERGENCY ROOM"
    assert row[4] == "http://fhir.mimic.mit.edu/CodeSystem/discharge-disposition|REHAB"
    assert row[5] == "http://fhir.mimic.mit.edu/CodeSystem/admission-type|EW EMER."


def test_mimic_condition_date_from_encounter(shared_data):
    opts = FhirOptions(condition_date=["onsetDateTime", "encounter.period.start"])
    with read_fhir(shared_data / "fhir" / "mimic4demo", options=opts) as records:
        con = records.con
        assert con.execute("SELECT count(onset_time) FROM condition").fetchone()[0] == 4181
        mismatched = con.execute(
            "SELECT count(*) FROM condition c JOIN visit v USING (visit_id) WHERE c.onset_time <> v.start_time"
        ).fetchone()[0]
        assert mismatched == 0


def test_bulk10_encounter_classes(bulk10):
    classes = dict(bulk10.con.execute("SELECT class_code, count(*) FROM visit GROUP BY 1").fetchall())
    assert classes == {"AMB": 1133, "IMP": 49, "EMER": 23, "HH": 9, "VR": 1}
    assert bulk10.con.execute(
        "SELECT count(DISTINCT person_id) FROM visit WHERE class_code = 'IMP'"
    ).fetchone()[0] == 5
    # the bulk-export log (log.ndjson.gz) is skipped, not quarantined; nothing is rejected
    assert len(bulk10.quarantine) == 0
    assert bulk10.source_records["Patient"] == 13
    assert bulk10.source_records["DocumentReference"] == 1215
    assert bulk10.count("medication") == bulk10.source_records["MedicationRequest"] == 1745
    assert bulk10.count("procedure") == bulk10.source_records["Procedure"] == 2056
    assert bulk10.count("measurement") == 0
    rx = bulk10.con.execute(
        "SELECT count(*) FROM medication WHERE system = 'http://www.nlm.nih.gov/research/umls/rxnorm'"
    ).fetchone()[0]
    assert rx == 1745


def test_bundles12_stays_and_loinc_observations(bundles12, shared_data):
    con = bundles12.con
    assert bundles12.source_records["Patient"] == 12
    assert con.execute("SELECT count(*) FROM visit WHERE class_code = 'IMP'").fetchone()[0] == 94
    assert con.execute(
        "SELECT count(DISTINCT person_id) FROM visit WHERE class_code = 'IMP'"
    ).fetchone()[0] == 8
    assert bundles12.source_records["Observation"] == 1939
    # count LOINC Observations and valued components straight from the files
    loinc, components = 0, 0
    for path in sorted((shared_data / "fhir" / "synthea_bundles12").glob("*.json.gz")):
        for e in orjson.loads(gzip.decompress(path.read_bytes()))["entry"]:
            r = e["resource"]
            if r["resourceType"] == "Observation":
                loinc += r["code"]["coding"][0]["system"] == "http://loinc.org"
                components += sum("valueQuantity" in c for c in r.get("component", []))
    assert loinc == 1939
    assert con.execute("SELECT count(*) FROM measurement").fetchone()[0] == 1939 + components
    # urn:uuid references resolve to resource ids: every clinical row finds its patient and visit
    assert con.execute(
        "SELECT count(*) FROM measurement m WHERE NOT EXISTS (SELECT 1 FROM visit v WHERE v.visit_id = m.visit_id)"
    ).fetchone()[0] == 0
    assert len(bundles12.quarantine) == 0


def test_bundles12_blood_pressure_components(bundles12):
    rows = dict(
        bundles12.con.execute(
            "SELECT code, count(*) FROM measurement WHERE code IN ('55284-4', '8462-4', '8480-6') GROUP BY 1"
        ).fetchall()
    )
    assert rows["8462-4"] == rows["8480-6"] == rows["55284-4"]
    units = bundles12.con.execute(
        "SELECT DISTINCT unit FROM measurement WHERE code = '8480-6'"
    ).fetchall()
    assert units == [("mm[Hg]",)]
