"""``ehr-fed mapping profile --study``: check digits, what feeds which feature, units, sources without values."""

from __future__ import annotations

import json
from pathlib import Path

from ehr_fed.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "mappings/studies/readmission_30d.yaml"
SYNTHEA = ROOT / "mappings/sites/synthea_fhir.yaml"


def profile(capsys, *args):
    rc = main(["mapping", "profile", *args, "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out), cap.err


def fake_source(root: Path) -> Path:
    """One stay with a UUID labelled LOINC, a real creatinine, a mistyped and a real SNOMED CT condition."""
    ref = {"subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"}}
    resources = {
        "Patient": [{"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-01-01"}],
        "Encounter": [{"resourceType": "Encounter", "id": "e1", "status": "finished",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                       "subject": {"reference": "Patient/p1"},
                       "period": {"start": "2020-01-01T00:00:00Z", "end": "2020-01-05T00:00:00Z"}}],
        "Observation": [
            {"resourceType": "Observation", "id": f"o{i}", "status": "final", **ref,
             "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
             "effectiveDateTime": "2020-01-02T00:00:00Z", "valueQuantity": {"value": 1.2, "unit": "mg/dL"}}
            for i, code in enumerate(["5089aaaa-0000-4abc-9def-1234567890ab", "2160-0"])],
        "Condition": [{"resourceType": "Condition", "id": f"c{i}", **ref,
                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]}}
                      for i, code in enumerate(["44054007", "44054006"])],
    }
    for name, rs in resources.items():
        (root / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return root


def test_fake_loinc_and_mistyped_snomed_are_bad_and_say_what_they_feed(tmp_path, capsys):
    rows, err = profile(capsys, "--source", "fhir", "--input", str(fake_source(tmp_path)),
                        "--mapping", str(SYNTHEA), "--study", str(STUDY))
    codes = {(r["section"], r["value"]): r for r in rows}
    uuid = codes[("code", "5089aaaa-0000-4abc-9def-1234567890ab")]
    assert not uuid["covered"] and "is not a LOINC code" in uuid["problem"] and uuid["feeds"] is None
    crea = codes[("code", "2160-0")]
    assert crea["covered"] and crea["problem"] is None and crea["feeds"] == "lab_creatinine"
    typo = codes[("condition_code", "44054007")]
    assert not typo["covered"] and "Verhoeff" in typo["problem"] and typo["feeds"] is None
    t2d = codes[("condition_code", "44054006")]
    assert t2d["covered"] and t2d["feeds"] == "charlson, cond_diabetes"
    features = {r["value"]: r for r in rows if r["section"] == "feature"}
    assert features["lab_creatinine"]["count"] == 1 and features["lab_creatinine"]["covered"]
    assert "no source record feeds this feature" in features["lab_sodium"]["problem"]
    assert "problem(s) found" in err


def test_units_harmonize_would_quarantine_are_flagged_first(shared_data, capsys):
    from ehr_fed.cohort import harmonize

    source = shared_data / "fhir/synthea_bundles12"
    rows, _ = profile(capsys, "--source", "fhir", "--input", str(source), "--mapping", str(SYNTHEA),
                      "--study", str(STUDY))
    bad = [r for r in rows if r["section"] == "lab_unit" and r["problem"]]
    assert [(r["system"], r["value"], r["feeds"]) for r in bad] == [("http://loinc.org|33914-3", "mL/min", "lab_egfr")]
    assert "cannot be converted to 'mL/min/{1.73_m2}'" in bad[0]["problem"]
    quarantined = harmonize("fhir", source, SYNTHEA, STUDY).summary["quarantined"]
    assert bad[0]["count"] == quarantined["unknown_unit"] == 4  # the same values, found before harmonize
    good = {r["feeds"] for r in rows if r["section"] == "lab_unit" and not r["problem"]}
    assert {"lab_creatinine", "lab_glucose", "lab_sodium", "lab_hba1c"} <= good


def test_a_source_without_measurements_is_flagged(shared_data, capsys):
    rows, _ = profile(capsys, "--source", "omop", "--input", str(shared_data / "omop/synpuf10_v50"),
                      "--mapping", str(ROOT / "mappings/sites/omop_default.yaml"), "--study", str(STUDY))
    source = [r for r in rows if r["section"] == "source"]
    assert [r["table"] for r in source] == ["measurement"]
    assert "no measurement records: every lab feature of the study will be missing" in source[0]["problem"]


def test_the_table_marks_problems_and_study_needs_mapping(tmp_path, capsys):
    src = fake_source(tmp_path)
    assert main(["mapping", "profile", "--source", "fhir", "--input", str(src), "--mapping", str(SYNTHEA),
                 "--study", str(STUDY), "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "problem(s) to fix before harmonizing" in out and "BAD" in out
    assert "-> lab_creatinine" in out and "-> no study feature" in out
    assert main(["mapping", "profile", "--source", "fhir", "--input", str(src), "--study", str(STUDY)]) == 2
    assert "--study needs --mapping" in capsys.readouterr().err
