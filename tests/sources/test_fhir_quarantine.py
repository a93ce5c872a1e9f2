"""Bad FHIR input is quarantined with reason, location and raw text; the run continues."""

from __future__ import annotations

import orjson
import pytest
from fhir_samples import (
    bundle,
    condition,
    dumps,
    encounter,
    medication_request,
    observation,
    patient,
    write_json,
    write_ndjson,
)

from ehr_fed.sources import read_source
from ehr_fed.sources.fhir import read_fhir


def by_reason(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for q in records.quarantine:
        out.setdefault(q.reason, []).append(q)
    return out


@pytest.fixture
def bad_ndjson(tmp_path):
    """Good records of p1 interleaved with one bad line per kind of problem (line numbers in comments)."""
    wrong_subject = observation("o-bad-subject")
    wrong_subject["subject"] = "Patient/p1"
    wrong_value = observation("o-bad-value", value="high")
    no_subject = encounter("e-nosubj")
    del no_subject["subject"]
    no_id = condition("c-noid")
    del no_id["id"]
    lines = [
        dumps(patient("p1")),                                   # 1
        dumps(encounter("e1", "p1")),                           # 2
        b'{"resourceType": "Condition", "id": "broken", ',      # 3 malformed JSON
        dumps(wrong_subject),                                   # 4 wrong type for subject
        dumps(wrong_value),                                     # 5 wrong type for value
        dumps(no_subject),                                      # 6 Encounter without subject
        dumps(no_id),                                           # 7 no id
        b'{"id": "x", "code": {}}',                             # 8 no resourceType
        dumps(condition("c-ghost", pid="ghost")),               # 9 missing patient
        dumps(observation("o-bad-date", when="03/01/2020")),    # 10 unparseable date
        b"",                                                    # 11 blank: ignored
        dumps(observation("o-good")),                           # 12
        dumps(encounter("e-ghost", "ghost")),                   # 13 missing patient
    ]
    path = tmp_path / "site.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_kind_of_bad_line_is_quarantined_and_the_run_continues(bad_ndjson):
    with read_source("fhir", bad_ndjson) as rec:
        assert rec.quarantine.counts() == {
            "bad_date": 1, "invalid_resource": 5, "malformed_json": 1, "missing_reference": 2,
        }
        assert rec.count("person") == 1 and rec.count("visit") == 1
        assert rec.table("measurement").shape[0] == 1  # only o-good
        q = by_reason(rec)
        locations = {r.location.rsplit(":", 1)[1]: r for r in rec.quarantine}
        assert set(locations) == {"3", "4", "5", "6", "7", "8", "9", "10", "13"}
        assert all(r.location.startswith(str(bad_ndjson) + ":") for r in rec.quarantine)
        # raw text is kept, also for records rejected after reading (missing patient)
        assert q["malformed_json"][0].record == '{"resourceType": "Condition", "id": "broken", '
        assert "not valid JSON" in q["malformed_json"][0].detail
        ghost = {r.location.rsplit(":", 1)[1]: r for r in q["missing_reference"]}
        assert orjson.loads(ghost["9"].record)["id"] == "c-ghost"
        assert ghost["9"].resource_type == "Condition"
        assert ghost["13"].resource_type == "Encounter"
        assert "subject Patient/ghost is not in the source" in ghost["9"].detail
        details = {r.location.rsplit(":", 1)[1]: r.detail for r in q["invalid_resource"]}
        assert details["4"].startswith("Observation.subject must be an object, got string")
        assert details["5"].startswith("Observation.valueQuantity.value must be a number")
        assert details["6"].startswith("Encounter has no subject reference")
        assert details["7"] == "Condition has no id (a string is required)"
        assert details["8"] == "expected a FHIR resource, got an object without resourceType"
        assert q["bad_date"][0].detail.startswith("Observation.effectiveDateTime: '03/01/2020' is not a FHIR date")
        # counted by type even when rejected; the malformed line and the untyped object are not
        assert rec.source_records == {"Condition": 2, "Encounter": 3, "Observation": 4, "Patient": 1}


def test_quarantine_file_beside_the_output(bad_ndjson, tmp_path):
    with read_fhir(bad_ndjson) as rec:
        out = rec.quarantine.write(tmp_path / "table.parquet.quarantine.jsonl")
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9
    assert {"reason", "location", "resource_type", "detail", "record"} <= set(rows[0])


def test_bundle_entries_are_located_by_entry_index(tmp_path):
    bad_date = condition("c2", onset="not-a-date")
    orphan = observation("o9", pid="nobody")
    doc = bundle([patient("p1"), encounter("e1"), condition("c1"), bad_date])
    orphan_entry = {"fullUrl": "urn:uuid:orphan", "resource": {**orphan, "subject": {"reference": "urn:uuid:nobody"}}}
    doc["entry"] += [orphan_entry, {"fullUrl": "urn:uuid:empty"}]
    path = write_json(tmp_path / "b.json.gz", doc)
    with read_fhir(path) as rec:
        got = {(r.reason, r.location) for r in rec.quarantine}
        assert got == {
            ("bad_date", f"{path}#entry[3]"),
            ("missing_reference", f"{path}#entry[4]"),
            ("invalid_resource", f"{path}#entry[5]"),
        }
        missing = by_reason(rec)["missing_reference"][0]
        assert orjson.loads(missing.record)["resource"]["id"] == "o9"
        assert rec.count("condition") == 1


def test_malformed_bundle_document(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    write_ndjson(tmp_path / "site" / "ok.ndjson", [patient("p1")])
    with read_fhir(tmp_path / "site") as rec:
        assert rec.quarantine.counts() == {"malformed_json": 1}
        assert next(iter(rec.quarantine)).location == str(tmp_path / "site" / "broken.json")
        assert rec.count("person") == 1


def test_missing_medication_and_patient_with_bad_birth_date(tmp_path):
    med_ref = medication_request("m1", medicationReference={"reference": "Medication/absent"})
    del med_ref["medicationCodeableConcept"]
    path = write_ndjson(tmp_path / "s.ndjson", [
        patient("p1"), patient("p2", birth="1950-02-30"), encounter("e1", "p1"), med_ref,
        condition("c2", pid="p2"),
    ])
    with read_fhir(path) as rec:
        q = by_reason(rec)
        assert [r.location for r in q["bad_date"]] == [f"{path}:2"]
        assert "Patient.birthDate" in q["bad_date"][0].detail
        missing = {r.resource_type: r for r in q["missing_reference"]}
        assert "medicationReference Medication/absent is not in the source" in missing["MedicationRequest"].detail
        # the Condition of the quarantined patient follows it
        assert missing["Condition"].location == f"{path}:5"
        assert rec.count("medication") == 0 and rec.count("condition") == 0


def test_keep_records_of_missing_patients_when_asked(bad_ndjson):
    with read_fhir(bad_ndjson, options={"on_missing_patient": "keep"}) as rec:
        assert "missing_reference" not in rec.quarantine.counts()
        assert rec.count("visit") == 2


def test_quarantine_text_limit(bad_ndjson):
    with read_fhir(bad_ndjson, options={"quarantine_text_limit": 0}) as rec:
        missing = by_reason(rec)["missing_reference"]
        assert len(missing) == 2 and all(r.record is None for r in missing)
