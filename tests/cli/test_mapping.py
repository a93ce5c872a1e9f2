"""``ehr-fed mapping schema|validate|profile|preview``."""

from __future__ import annotations

import json
from pathlib import Path

from ehr_fed.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_schema_to_file_and_stdout(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["mapping", "schema", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "SiteMapping" and "visits" in schema["properties"]
    assert main(["mapping", "schema", "--kind", "study"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "StudySpec"


def test_validate_ok_and_problems(tmp_path, capsys):
    bad = tmp_path / "study.yaml"
    bad.write_text("study_id: s\nindex_event: {kind: inpatient_discharge}\nlabel: {kind: readmission}\n"
                   "features:\n  - {name: a, kind: agee}\n", encoding="utf-8")
    code = main(["mapping", "validate", str(ROOT / "mappings/sites/mimic_fhir.yaml"), str(bad)])
    assert code == 1
    out = capsys.readouterr().out
    assert "mimic_fhir.yaml: ok (site mapping)" in out
    assert f"{bad}:5: unknown_feature_kind unknown feature kind 'agee' (fix: did you mean 'age'?" in out
    assert main(["mapping", "validate", str(ROOT / "mappings/studies/t2d_progression.yaml")]) == 0


def test_profile_lists_uncovered(shared_data, tmp_path, capsys):
    mapping = tmp_path / "m.yaml"
    mapping.write_text((ROOT / "mappings/sites/mimic_fhir.yaml").read_text().replace(
        '  "http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd9": icd9cm\n', ""), encoding="utf-8")
    assert main(["mapping", "profile", "--source", "fhir", "--input", str(shared_data / "fhir/mimic4demo"),
                 "--mapping", str(mapping), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    systems = {r["system"]: r for r in rows if r["section"] == "code_system"}
    icd9 = systems["http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd9"]
    assert (icd9["count"], icd9["covered"]) == (2107, False)
    assert systems["http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd10"]["maps_to"] == "icd10cm"
    classes = {r["value"]: r for r in rows if r["section"] == "visit_class"}
    assert classes["ACUTE"]["count"] == 138 and classes["ACUTE"]["maps_to"] == "other"
    assert sum(r["count"] for r in rows if r["maps_to"] == "inpatient") == 263
    assert main(["mapping", "profile", "--source", "fhir", "--input", str(shared_data / "fhir/mimic4demo"),
                 "--mapping", str(mapping)]) == 0
    assert "== code_system (2 used, 1 not covered by the mapping)" in capsys.readouterr().out


def test_preview(shared_data, capsys):
    assert main(["mapping", "preview", "--source", "fhir", "--input", str(shared_data / "fhir/synthea_bulk10"),
                 "--mapping", str(ROOT / "mappings/sites/synthea_fhir.yaml"),
                 "--study", str(ROOT / "mappings/studies/readmission_30d.yaml"), "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "person_key" in out and '"index_events": 49' in out
