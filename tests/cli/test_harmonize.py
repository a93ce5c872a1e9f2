"""``ehr-fed harmonize`` end to end on real data, and its failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ehr_fed.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "mappings/sites/synthea_fhir.yaml"
STUDY = ROOT / "mappings/studies/readmission_30d.yaml"


def test_harmonize_writes_table_summary_and_quarantine(shared_data, tmp_path, capsys):
    out = tmp_path / "site" / "features.parquet"
    code = main(["harmonize", "--source", "fhir", "--input", str(shared_data / "fhir/synthea_bundles12"),
                 "--mapping", str(SITE), "--study", str(STUDY), "--out", str(out),
                 "--summary-json", str(tmp_path / "summary.json")])
    assert code == 0
    table = pd.read_parquet(out)
    assert len(table) == 94 and int(table["label"].sum()) == 27
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in ("index_events", "positives", "persons", "quarantined")} == {
        "index_events": 94, "positives": 27, "persons": 8, "quarantined": {"unknown_unit": 4}}
    assert summary["source_records"]["Patient"] == 12
    lines = (tmp_path / "site" / "features.parquet.quarantine.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["reason"] == "unknown_unit"
    assert "94 index events, 27 positive, 8 persons" in capsys.readouterr().err


def test_config_errors_stop_before_reading(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("site_id: s\nsource: fhir\nvisitz: {}\n", encoding="utf-8")
    code = main(["harmonize", "--source", "fhir", "--input", str(tmp_path / "does-not-exist"),
                 "--mapping", str(bad), "--study", str(STUDY), "--out", str(tmp_path / "o.csv")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: unknown_key unknown key 'visitz' in the top level (fix: did you mean 'visits'?" in err
    assert "nothing was read" in err
    assert not (tmp_path / "o.csv").exists()


def test_quarantine_threshold_writes_quarantine_and_fails(shared_data, tmp_path, capsys):
    strict = tmp_path / "strict.yaml"
    strict.write_text(STUDY.read_text().replace("max_fraction: 0.05", "max_fraction: 0.0"), encoding="utf-8")
    out = tmp_path / "features.csv"
    code = main(["harmonize", "--source", "fhir", "--input", str(shared_data / "fhir/synthea_bundles12"),
                 "--mapping", str(SITE), "--study", str(strict), "--out", str(out)])
    assert code == 1
    assert "were quarantined, more than the study's quarantine.max_fraction of 0.0%" in capsys.readouterr().err
    assert not out.exists()
    assert len((tmp_path / "features.csv.quarantine.jsonl").read_text().splitlines()) == 4


def test_outputs_are_owner_only_and_a_mapping_matching_nothing_writes_nothing(shared_data, tmp_path, capsys):
    import stat

    out = tmp_path / "features.parquet"
    args = ["harmonize", "--source", "fhir", "--input", str(shared_data / "fhir/synthea_bundles12"),
            "--mapping", str(SITE), "--study", str(STUDY)]
    assert main([*args, "--out", str(out), "--summary-json", str(tmp_path / "s.json")]) == 0
    for path in (out, tmp_path / "s.json", tmp_path / "features.parquet.quarantine.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    capsys.readouterr()
    none = tmp_path / "none.parquet"
    assert main([*args, "--out", str(none), "--min-index-events", "95"]) == 1
    err = capsys.readouterr().err
    assert "matched 94 index event(s) of study 'readmission_30d'" in err and "fewer than the required 95" in err
    assert not none.exists() and not (tmp_path / "none.parquet.quarantine.jsonl").exists()
