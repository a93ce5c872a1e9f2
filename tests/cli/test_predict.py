"""``ehr-fed predict`` end to end: a model trained on a synthetic federation scores a site's FHIR and OMOP
forms and a real shared data set; failures exit non-zero with one parseable JSON error record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ehr_fed.cli.main import main
from ehr_fed.cohort import harmonize
from ehr_fed.federation import Federation
from ehr_fed.mapping import load_study
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.models.persistence import seal_model_document
from ehr_fed.models.scoring import file_sha256, read_scores_metadata
from ehr_fed.privacy import PrivacyPolicy
from ehr_fed.synth import generate_federation

PROJECT = Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"
FEATURES = ["age", "los_days", "charlson", "lace"]


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_federation(root, n_sites=3, n_patients=300, seed=3, format="both")
    return root


@pytest.fixture(scope="module")
def tables(fed_dir) -> dict[str, pd.DataFrame]:
    return {s: harmonize("fhir", fed_dir / s / "fhir", fed_dir / s / "mapping_fhir.yaml", STUDY).table
            for s in ("site_a", "site_b", "site_c")}


@pytest.fixture(scope="module")
def model_file(tables, tmp_path_factory) -> Path:
    # small synthetic sites: a looser disclosure policy than the default, plaintext sums (tests only)
    policy = PrivacyPolicy(min_cell_count=5, max_params_fraction=0.5)
    fed = Federation.in_process(tables, policy=policy, encrypted=False, study=load_study(STUDY))
    path = tmp_path_factory.mktemp("model") / "logreg.json"
    FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(fed).save(path)
    return path


@pytest.fixture(scope="module")
def gbdt_file(tables, tmp_path_factory) -> Path:
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    policy = PrivacyPolicy(min_cell_count=5, max_params_fraction=0.5)
    fed = Federation.in_process(tables, policy=policy, encrypted=False, study=load_study(STUDY))
    path = tmp_path_factory.mktemp("model") / "gbdt.json"
    FederatedGradientBoostingClassifier(n_estimators=3, max_depth=2, max_bin=16, encrypted=False).fit(fed).save(path)
    return path


def predict(capsys, *args: str | Path) -> tuple[int, list[dict], str]:
    """Run ``ehr-fed predict``; return the exit code, the JSON log records and the other stderr lines."""
    code = main(["predict", *map(str, args)])
    err = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in err if line.startswith("{")]
    return code, records, "\n".join(line for line in err if not line.startswith("{"))


def site_args(fed_dir: Path, model: Path, out: Path, kind: str = "omop", study: Path | None = STUDY):
    inp, mp = ((fed_dir / "site_b" / "omop.duckdb", "mapping_omop.yaml") if kind == "omop"
               else (fed_dir / "site_b" / "fhir", "mapping_fhir.yaml"))
    args = ["--model", model, "--source", kind, "--input", inp, "--mapping", fed_dir / "site_b" / mp, "--out", out]
    return args + (["--study", study] if study else [])


def test_scores_every_index_event_with_the_model_hash_and_version(fed_dir, tables, model_file, tmp_path, capsys):
    out = tmp_path / "scores" / "site_b.parquet"
    code, log, text = predict(capsys, *site_args(fed_dir, model_file, out))
    assert code == 0 and text == ""  # stderr holds JSON lines only
    assert [r["event"] for r in log] == ["start", "harmonized", "done"]
    assert all(r["cmd"] == "predict" and r["ts"].endswith("Z") for r in log)
    site = tables["site_b"]
    assert log[1]["index_events"] == len(site) and log[1]["positives"] == int(site["label"].sum())
    scores = pd.read_parquet(out)
    assert list(scores.columns) == ["site_id", "person_key", "index_time", "score", "model_sha256", "model_version"]
    sha, version = file_sha256(model_file), log[2]["model_version"]
    assert set(scores["model_sha256"]) == {sha} and set(scores["model_version"]) == {version}
    assert version.startswith("logreg-")
    meta = read_scores_metadata(out)
    assert meta["model_sha256"] == sha and meta["model_version"] == version and meta["study_id"] == "readmission_30d"
    from ehr_fed import load_model

    expected = site.assign(score=load_model(model_file).predict_proba(site[FEATURES])[:, 1])
    merged = scores.merge(expected[["person_key", "index_time", "score"]], on=["person_key", "index_time"])
    assert len(merged) == len(site) == len(scores)
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], rtol=0, atol=1e-15)
    assert log[2]["rows"] == len(site) and Path(log[2]["quarantine_file"]).exists()


def test_idempotent_and_the_fhir_and_omop_forms_give_the_same_bytes(fed_dir, model_file, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert predict(capsys, *site_args(fed_dir, model_file, out))[0] == 0
    first = out.read_bytes()
    assert predict(capsys, *site_args(fed_dir, model_file, out))[0] == 0
    assert out.read_bytes() == first
    fhir = tmp_path / "fhir.parquet"
    assert predict(capsys, *site_args(fed_dir, model_file, fhir, kind="fhir"))[0] == 0
    assert fhir.read_bytes() == first
    csv1, csv2 = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (csv1, csv2):
        assert predict(capsys, *site_args(fed_dir, model_file, path))[0] == 0
    assert csv1.read_bytes() == csv2.read_bytes()
    assert pd.read_csv(csv1)["score"].tolist() == pd.read_parquet(out)["score"].tolist()


def test_a_study_with_other_features_exits_3_with_a_column_diff(fed_dir, model_file, tmp_path, capsys):
    spec = yaml.safe_load(STUDY.read_text())
    spec["features"] = [f for f in spec["features"] if f["name"] != "lace"]
    other = tmp_path / "no_lace.yaml"
    other.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "s.parquet"
    code, log, text = predict(capsys, *site_args(fed_dir, model_file, out, study=other))
    assert code == 3
    assert log[-1]["event"] == "error" and log[-1]["reason"] == "schema_mismatch" and log[-1]["exit_code"] == 3
    assert "does not declare 1 feature(s) the model was trained on: lace" in text
    assert "-lace" in log[-1]["message"] and "--- model features" in log[-1]["message"]
    assert not out.exists() and list(tmp_path.iterdir()) == [other]


def test_another_study_exits_3(fed_dir, model_file, tmp_path, capsys):
    t2d = PROJECT / "mappings" / "studies" / "t2d_progression.yaml"
    code, log, _ = predict(capsys, *site_args(fed_dir, model_file, tmp_path / "s.csv", study=t2d))
    assert code == 3 and "trained for study 'readmission_30d'" in log[-1]["message"]


def test_the_embedded_study_is_used_without_study(fed_dir, model_file, tmp_path, capsys):
    with_study = tmp_path / "with.parquet"
    assert predict(capsys, *site_args(fed_dir, model_file, with_study))[0] == 0
    code, log, _ = predict(capsys, *site_args(fed_dir, model_file, tmp_path / "s.parquet", study=None))
    assert code == 0 and log[-1]["event"] == "done"
    assert (tmp_path / "s.parquet").read_bytes() == with_study.read_bytes()


def test_without_a_study_it_exits_2_and_says_to_pass_study(fed_dir, model_file, tmp_path, capsys):
    bare = tmp_path / "bare.json"
    doc = json.loads(model_file.read_text())
    doc["study"] = None  # e.g. a model trained on bare tables, without a study spec
    bare.write_text(json.dumps(seal_model_document(doc)))
    code, log, text = predict(capsys, *site_args(fed_dir, bare, tmp_path / "s.parquet", study=None))
    assert code == 2 and log[-1]["reason"] == "study_required"
    assert "does not embed the study spec it was trained with (study 'readmission_30d'): pass --study FILE" in text


def test_a_failed_run_keeps_the_previous_scores(fed_dir, model_file, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert predict(capsys, *site_args(fed_dir, model_file, out))[0] == 0
    before = sorted(p.name for p in tmp_path.iterdir()), out.read_bytes()
    bad_mapping = tmp_path.parent / "broken_mapping.yaml"
    bad_mapping.write_text("site_id: site_b\nsource: omop\nvisits: 12\n")
    args = site_args(fed_dir, model_file, out)
    args[args.index("--mapping") + 1] = bad_mapping
    code, log, _ = predict(capsys, *args)
    assert code == 1 and log[-1]["reason"] == "config_error"
    assert (sorted(p.name for p in tmp_path.iterdir()), out.read_bytes()) == before


def test_bad_model_file_and_bad_suffix(fed_dir, tmp_path, capsys):
    not_a_model = tmp_path / "model.json"
    not_a_model.write_text("{}")
    code, log, _ = predict(capsys, *site_args(fed_dir, not_a_model, tmp_path / "s.parquet"))
    assert code == 1 and log[-1]["reason"] == "model_format"
    code, log, text = predict(capsys, *site_args(fed_dir, not_a_model, tmp_path / "s.json"))
    assert code == 2 and log[-1]["reason"] == "bad_output" and "--out must end in .parquet or .csv" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_scores_a_real_synthea_bulk_export(shared_data, model_file, tmp_path, capsys):
    out = tmp_path / "synthea.csv"
    code, log, _ = predict(capsys, "--model", model_file, "--source", "fhir",
                           "--input", shared_data / "fhir" / "synthea_bulk10",
                           "--mapping", PROJECT / "mappings" / "sites" / "synthea_fhir.yaml",
                           "--study", STUDY, "--out", out)
    assert code == 0
    # SOURCES.md: 49 inpatient stays in 5 patients, 12 readmitted within 30 days
    assert (log[1]["index_events"], log[1]["persons"], log[1]["positives"]) == (49, 5, 12)
    scores = pd.read_csv(out)
    assert len(scores) == 49 and scores["person_key"].nunique() == 5
    assert scores["score"].between(0, 1).all() and set(scores["site_id"]) == {"synthea"}
    assert set(scores["model_sha256"]) == {file_sha256(model_file)}


def test_library_logs_and_warnings_become_json_events(fed_dir, model_file, tmp_path, capsys, monkeypatch):
    import logging
    import warnings

    from ehr_fed.models import scoring

    real = scoring.score_table

    def noisy(*args, **kwargs):
        logging.getLogger("ehr_fed.test").warning("a library message")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_table", noisy)
    code, log, text = predict(capsys, *site_args(fed_dir, model_file, tmp_path / "s.csv"))
    assert code == 0 and text == ""
    events = [(r["event"], r.get("level"), r.get("message", "")) for r in log if r["event"] == "log"]
    assert ("log", "warning", "a library message") in events
    assert any("a library warning" in m for _, _, m in events)
    assert logging.getLogger().handlers == [] or not any(
        type(h).__name__ == "_JsonLogHandler" for h in logging.getLogger().handlers)


def test_scores_with_a_boosting_model_file(fed_dir, tables, gbdt_file, tmp_path, capsys):
    from ehr_fed import load_model

    out = tmp_path / "gbdt.parquet"
    code, log, _ = predict(capsys, *site_args(fed_dir, gbdt_file, out))
    assert code == 0 and log[-1]["model_version"].startswith("gbdt-")
    scores = pd.read_parquet(out)
    site = tables["site_b"].sort_values(["person_key", "index_time"], kind="mergesort")
    model = load_model(gbdt_file)
    expected = model.predict_proba(site[list(model.feature_names_in_)])[:, 1]
    np.testing.assert_allclose(scores["score"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert read_scores_metadata(out)["model_kind"] == "gbdt"


def test_scores_are_owner_only_and_too_few_index_events_write_nothing(fed_dir, model_file, tmp_path, capsys):
    import stat

    out = tmp_path / "s.parquet"
    code, log, _ = predict(capsys, *site_args(fed_dir, model_file, out))
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.with_name(out.name + ".quarantine.jsonl").stat().st_mode) == 0o600
    assert log[-1]["rows"] > 0
    other = tmp_path / "t.parquet"
    code, log, text = predict(capsys, *site_args(fed_dir, model_file, other), "--min-index-events", "100000")
    assert code == 1 and log[-1]["reason"] == "too_few_index_events" and log[-1]["exit_code"] == 1
    assert "fewer than the required 100000" in text and not other.exists()
    assert [r["event"] for r in log] == ["start", "harmonized", "error"]
