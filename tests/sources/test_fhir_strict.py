"""Strict mode validates every resource with fhir.resources (FHIR R4B models)."""

from __future__ import annotations

from fhir_samples import condition, encounter, patient, small_site, write_ndjson

from ehr_fed.sources.fhir import read_fhir


def test_strict_rejects_what_the_fast_path_accepts(tmp_path):
    odd_patient = patient("p3", colour="blue")          # unknown element
    odd_encounter = encounter("e9", "p1", status=17)    # wrong primitive type, unused field
    claim = {"resourceType": "Claim", "id": "cl1", "status": "not-a-status-code with spaces"}
    path = write_ndjson(tmp_path / "s.ndjson", [*small_site(), odd_patient, odd_encounter, claim,
                                                 condition("c9", pid="p3")])
    with read_fhir(path) as fast:
        assert len(fast.quarantine) == 0
        assert fast.count("person") == 3 and fast.count("visit") == 3
    with read_fhir(path, strict=True) as strict:
        rejected = {r.location.rsplit(":", 1)[1]: r for r in strict.quarantine}
        assert set(rejected) == {"11", "12", "13", "14"}
        assert {r.reason for r in strict.quarantine} == {"invalid_resource", "missing_reference"}
        assert "fhir.resources R4B validation failed" in rejected["11"].detail
        assert "colour" in rejected["11"].detail
        assert rejected["12"].resource_type == "Encounter"
        assert rejected["13"].resource_type == "Claim"
        # the Condition of the rejected patient is now an orphan
        assert rejected["14"].reason == "missing_reference"
        assert strict.count("person") == 2 and strict.count("visit") == 2
        assert strict.source_records["Claim"] == 1


def test_strict_accepts_the_real_synthea_bundles(shared_data):
    with read_fhir(shared_data / "fhir" / "synthea_bundles12", strict=True) as rec:
        assert len(rec.quarantine) == 0
        assert rec.source_records["Observation"] == 1939


def test_unknown_resource_type_in_strict_mode(tmp_path):
    path = write_ndjson(tmp_path / "s.ndjson", [{"resourceType": "Wombat", "id": "w1"}])
    with read_fhir(path, strict=True) as rec:
        (q,) = list(rec.quarantine)
        assert q.reason == "invalid_resource" and q.detail == "'Wombat' is not a FHIR R4 resource type"
