"""``ehr-fed evaluate`` on a federation YAML of feature tables: HTML and JSON report, clear errors."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ehr_fed.cli.main import main

PROJECT = Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"
FEATURES = ["age", "los_days", "charlson", "lace"]


def study_table(site: str, n: int, seed: int) -> pd.DataFrame:
    """The study's columns: age, length of stay, Charlson and LACE carry the risk; the rest is missing."""
    rng = np.random.default_rng(seed)
    names = [f["name"] for f in yaml.safe_load(STUDY.read_text())["features"]]
    cols = {name: np.full(n, np.nan) for name in names}
    cols["age"] = rng.normal(65, 12, n)
    cols["los_days"] = rng.exponential(4, n)
    cols["charlson"] = rng.integers(0, 8, n).astype(float)
    cols["lace"] = np.clip(np.round(np.minimum(cols["los_days"], 7) + cols["charlson"]), 0, 19)
    eta = -4 + 0.03 * cols["age"] + 0.1 * cols["los_days"] + 0.2 * cols["charlson"]
    label = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    meta = {"site_id": site, "person_key": [f"{seed:02x}{i:014x}" for i in range(n)],
            "index_time": pd.Timestamp("2022-01-01"), "label": label}
    return pd.DataFrame({**meta, **cols})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ehr_fed.federation import Federation
    from ehr_fed.models import FederatedLogisticRegression

    root = tmp_path_factory.mktemp("fed")
    sites, tables = [], {}
    for i, n in enumerate((300, 350, 320)):
        sid = f"site_{'abc'[i]}"
        tables[sid] = study_table(sid, n, 60 + i)
        tables[sid].to_parquet(root / f"{sid}.parquet", index=False)
        sites.append({"id": sid, "table": f"{sid}.parquet"})
    cfg = {"study": str(STUDY), "sites": sites, "transport": {"kind": "in_process"},
           "privacy": {"min_cell_count": 10, "min_sites": 3, "max_params_fraction": 0.3}}
    with Federation.in_process(tables, policy=cfg["privacy"], encrypted=False) as fed:
        model = FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(fed)
    model.save(root / "model.json")
    # the model was trained in another process's federation (other site keys): the sites of the YAML evaluate
    # the file itself (in-sample, leave-one-site-out) as an approved model
    path = _approving(root / "federation.yaml", cfg, model)
    return path, root / "model.json", tables, model


def _approving(path: Path, cfg: dict, *models) -> Path:
    """Write the federation YAML with ``models`` listed in privacy.approved_models."""
    from ehr_fed.evaluation.provenance import approved_digest

    privacy = {**cfg["privacy"], "approved_models": [approved_digest(m) for m in models]}
    path.write_text(yaml.safe_dump({**cfg, "privacy": privacy}))
    return path


def test_evaluate_writes_html_and_json_reports(setup, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    fed_yaml, model_file, tables, model = setup
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--json", str(js), "--plaintext", "--bins", "5000", "--folds", "3", "--validation", "in-sample"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "over 3 sites (plaintext sums)" in cap.err and f"report written to {out}" in cap.err
    assert "AUC (c-statistic)" in cap.out and "LACE index AUC (baseline)" in cap.out
    html = unescape(out.read_text())
    assert html.count("data:image/png;base64,") == 2 and "odds ratio" in html and "Table 1" in html
    data = json.loads(js.read_text())
    pooled = pd.concat(tables.values())
    auc = roc_auc_score(pooled["label"], model.predict_proba(pooled)[:, 1])
    assert abs(data["evaluation"]["overall"]["auc"] - auc) < 1e-3
    # LACE histograms are merged to the cell rule at the decrypting site: the AUC is within its bound
    assert data["evaluation"]["lace"]["auc"] == pytest.approx(roc_auc_score(pooled["label"], pooled["lace"]), abs=1e-3)
    assert [r["site_id"] for r in data["evaluation"]["local_only"]] == ["site_a", "site_b", "site_c"]
    assert data["evaluation"]["local_only"][0]["k"] == 3
    assert data["validation"]["scheme"] == "in-sample" and data["validation"]["evaluated_rows"] == 970
    assert "Evaluated on IN-SAMPLE: every row of the sites' tables, the data the model was trained on" in html
    assert "IN-SAMPLE: the model file on all 970 index events" in cap.err and "optimistic" in cap.err


def test_evaluate_by_default_refits_on_a_person_split_and_scores_the_held_out_persons(setup, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from ehr_fed.cli.validation import held_out
    from ehr_fed.federation import Federation
    from ehr_fed.models import FederatedLogisticRegression

    fed_yaml, model_file, tables, _ = setup
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--json", str(js), "--plaintext", "--bins", "5000", "--no-local-only"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    masks = {s: held_out(t, 0.3) for s, t in tables.items()}
    n_test = sum(int(m.sum()) for m in masks.values())
    assert 0.2 * 970 < n_test < 0.4 * 970
    with Federation.in_process({s: t[~masks[s]] for s, t in tables.items()}, policy=yaml.safe_load(
            fed_yaml.read_text())["privacy"], encrypted=False) as fed:
        refit = FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(fed)
    test = pd.concat([t[masks[s]] for s, t in tables.items()])
    auc = roc_auc_score(test["label"], refit.predict_proba(test)[:, 1])
    data = json.loads(js.read_text())
    overall = data["evaluation"]["overall"]
    assert abs(overall["auc"] - auc) <= overall["auc_tie_bound"] + 1e-9  # histograms merged to the cell rule
    assert overall["n"] == n_test
    assert data["validation"] == {"scheme": "split", "evaluated_rows": n_test, "train_rows": 970 - n_test,
                                  "test_fraction": 0.3, "description": data["validation"]["description"]}
    html = unescape(out.read_text())
    assert "Evaluated on the held-out 30% of each site's persons, which the evaluated model never saw" in html
    assert f"refit on the other {970 - n_test} index events" in html
    assert f"evaluated on the other {n_test} index events" in cap.err
    assert f"evaluated on: split ({n_test} index events)" in cap.out


def test_evaluate_loso_reports_each_held_out_site_or_why_not(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    out = tmp_path / "r.html"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--plaintext", "--no-local-only", "--bins", "1000", "--validation", "loso"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    html = unescape(out.read_text())
    assert "leave-one-site-out" in html and "not permitted by the privacy" in html
    assert "0 of 3 site(s) permitted" in cap.err


def test_evaluate_split_says_what_to_do_when_a_site_is_too_small_for_the_refit(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    cfg = yaml.safe_load(fed_yaml.read_text())
    cfg["privacy"]["max_params_fraction"] = 0.015  # 5 parameters need 334 rows: every training part is short
    strict = fed_yaml.with_name("small.yaml")
    strict.write_text(yaml.safe_dump(cfg))
    rc = main(["evaluate", "--federation", str(strict), "--model", str(model_file),
               "--out", str(tmp_path / "r.html"), "--plaintext"])
    err = capsys.readouterr().err
    assert rc == 1 and "refitting" not in err  # refused up front, before the split is refit
    assert ("error: the held-out split cannot refit this model: even holding out 10% of each site's persons "
            "would leave the training part of site site_a (max_params_fraction=0.015: at least 334 rows), site "
            "site_b (max_params_fraction=0.015: at least 334 rows), site site_c (max_params_fraction=0.015: at "
            "least 334 rows) too small for the refit's 5 model parameters (rule max_params_fraction)") in err
    assert "--test-fraction" not in err.split("rule max_params_fraction)")[1]  # no share works: none suggested
    assert "--validation loso" in err and "Traceback" not in err


def test_evaluate_without_local_only(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    out = tmp_path / "r.html"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--plaintext", "--no-local-only", "--bins", "1000"])
    assert rc == 0, capsys.readouterr().err
    assert "local_cv_auc" not in out.read_text()


def test_evaluate_missing_model_file_fails_clearly(setup, tmp_path, capsys):
    fed_yaml, _, _, _ = setup
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(tmp_path / "nope.json"),
               "--out", str(tmp_path / "r.html"), "--plaintext"])
    err = capsys.readouterr().err
    assert rc == 1 and "error: model file" in err and "nope.json does not exist" in err
    assert not (tmp_path / "r.html").exists()


def test_evaluate_refused_by_min_sites_fails_clearly(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    cfg = yaml.safe_load(fed_yaml.read_text())
    cfg["privacy"]["min_sites"] = 4
    strict = fed_yaml.with_name("strict.yaml")
    strict.write_text(yaml.safe_dump(cfg))
    rc = main(["evaluate", "--federation", str(strict), "--model", str(model_file),
               "--out", str(tmp_path / "r.html"), "--plaintext"])
    err = capsys.readouterr().err
    assert rc == 1 and "error:" in err and "min_sites=4" in err


def test_evaluate_shows_the_epsilon_a_private_model_spent(setup, tmp_path, capsys):
    from ehr_fed.federation import Federation
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    fed_yaml, _, tables, _ = setup
    bounds = {"age": [0, 110], "los_days": [0, 60], "charlson": [0, 24], "lace": [0, 19]}
    with Federation.in_process({k: v[["site_id", "person_key", "index_time", "label", *FEATURES]]
                                for k, v in tables.items()}, encrypted=False) as fed:
        model = FederatedGradientBoostingClassifier(encrypted=False, n_estimators=2, max_depth=2, max_bin=8,
                                                    dp={"epsilon": 3.0, "feature_bounds": bounds}).fit(fed)
    model_file = model.save(tmp_path / "gbdt_dp.json")
    cfg = yaml.safe_load(fed_yaml.read_text())
    fed_yaml = _approving(fed_yaml.parent / "federation_gbdt_dp.yaml", cfg, model)
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--json", str(js), "--plaintext", "--folds", "3", "--no-local-only", "--validation", "in-sample"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    eps = model.dp_["epsilon"]
    assert f"model trained with differential privacy: epsilon {eps:.4g} of a planned 3, delta 1e-06" in cap.out
    html = unescape(out.read_text())
    assert (f"Differential privacy:</strong> the model's training spent epsilon {eps:.3f} (planned 3), delta 1e-06"
            in html)
    data = json.loads(js.read_text())
    assert data["dp"]["epsilon"] == pytest.approx(eps) and data["dp"]["delta"] == 1e-6


def test_evaluate_of_a_non_private_model_says_nothing_about_epsilon(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--json", str(js), "--plaintext", "--no-local-only", "--validation", "in-sample"])
    assert rc == 0
    assert "differential privacy" not in capsys.readouterr().out.lower()
    assert "Differential privacy" not in out.read_text() and json.loads(js.read_text())["dp"] is None


def test_evaluate_refuses_a_model_file_no_site_can_verify_and_says_what_to_do(setup, tmp_path, capsys):
    """The same model file on a federation whose sites neither took part in its training nor approve it."""
    fed_yaml, model_file, _, _ = setup
    cfg = yaml.safe_load(fed_yaml.read_text())
    cfg["privacy"].pop("approved_models")
    plain = fed_yaml.parent / "federation_unapproved.yaml"
    plain.write_text(yaml.safe_dump(cfg))
    rc = main(["evaluate", "--federation", str(plain), "--model", str(model_file), "--out",
               str(tmp_path / "r.html"), "--plaintext", "--no-local-only", "--validation", "in-sample"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "[model_session]" in err and "approved_models" in err and "--validation split" in err
    assert not (tmp_path / "r.html").exists()


def test_evaluate_with_epsilon_prints_and_reports_what_the_evaluation_spent(setup, tmp_path, capsys):
    fed_yaml, model_file, _, _ = setup
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    rc = main(["evaluate", "--federation", str(fed_yaml), "--model", str(model_file), "--out", str(out),
               "--json", str(js), "--plaintext", "--no-local-only", "--validation", "in-sample", "--epsilon", "2"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    data = json.loads(js.read_text())
    spent = data["evaluation"]["dp"]
    assert 0 < spent["epsilon"] <= 2.0 and spent["delta"] == 1e-6 and spent["releases"] == 2
    assert data["evaluation"]["n_bins"] == 20
    assert f"evaluation with differential privacy: epsilon {spent['epsilon']:.4g} of a planned 2, delta 1e-06" \
        in cap.out
    assert "Differential privacy of this evaluation:</strong> it spent epsilon" in unescape(out.read_text())
