"""The demo's steps (``ehr_fed.demo``) on a small federation: 3 sites x 400 patients, 1024-bit keys, for both
shipped studies."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed import demo
from ehr_fed.demo import DemoConfig


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DemoConfig:
    root = tmp_path_factory.mktemp("demo")
    # 1024-bit keys are for tests only; the demo itself uses 2048 bits
    return DemoConfig(n_patients=400, key_bits=1024, allow_insecure=True, cache_dir=root / "cache",
                      out_dir=root / "out", progress=False,
                      gbdt={"n_estimators": 4, "max_depth": 2, "learning_rate": 0.3, "max_bin": 16},
                      lr_features=["age", "los_days", "prior_inpatient_365d", "charlson"],
                      policy={"min_cell_count": 5, "max_params_fraction": 1.0})


@pytest.fixture(scope="module")
def result(cfg):
    lines: list[str] = []
    res = demo.run_demo(cfg, echo=lines.append)
    res.lines = lines
    return res


def test_cached_federation_is_reused(cfg, result):
    lines: list[str] = []
    demo.make_federation(cfg, lines.append)
    assert lines == [f"  reusing {cfg.cache_dir / 'demo-federation'}"]


def test_every_site_is_harmonized_and_reported(result):
    assert list(result.sites) == ["site_a", "site_b", "site_c"]
    for sid, data in result.sites.items():
        assert len(data.table) == data.summary["index_events"] > 0
        assert int(data.table["label"].sum()) == data.summary["positives"]
        line = next(s for s in result.lines if s.startswith(f"  {sid}: "))
        assert f"{data.summary['index_events']} index events, {data.summary['positives']} positives" in line
        assert "quarantined records" in line


def test_split_keeps_each_patient_on_one_side(result):
    tables = {s: d.table for s, d in result.sites.items()}
    train, test = demo.split_tables(tables, 0.3)
    for sid, t in tables.items():
        assert len(train[sid]) + len(test[sid]) == len(t)
        assert not set(train[sid]["person_key"]) & set(test[sid]["person_key"])
    assert 0.15 < sum(map(len, test.values())) / sum(map(len, tables.values())) < 0.45
    again = demo.split_tables(tables, 0.3)[1]
    assert all(again[s].equals(test[s]) for s in tables)


def test_table_one_counts_the_training_split(result, cfg):
    train, _ = demo.split_tables({s: d.table for s, d in result.sites.items()}, cfg.test_fraction)
    assert result.table1.loc["N", "Overall"] == str(sum(map(len, train.values())))
    assert list(result.table1.columns) == ["Overall", "Not readmitted", "Readmitted within 30 days"]
    assert "Length of stay (days), median [IQR]" in result.table1.index


def test_models_are_trained_encrypted_and_evaluated_on_the_test_split(result, cfg):
    lr, gb = result.models["logreg"], result.models["gbdt"]
    assert list(lr.feature_names_in_) == cfg.lr_features and lr.converged_
    assert len(gb.to_xgboost_json()["learner"]["gradient_booster"]["model"]["trees"]) == 4
    _, test = demo.split_tables({s: d.table for s, d in result.sites.items()}, cfg.test_fraction)
    n_test = sum(map(len, test.values()))
    for name in ("logreg", "gbdt"):
        ev = result.evaluations[name]
        assert ev.encrypted and ev.overall["n"] == n_test
        assert 0.5 < ev.overall["auc"] <= 1


def test_comparison_has_federated_local_and_pooled_rows(result):
    table = result.comparison
    trained = set(table.index.get_level_values("trained_on"))
    assert {"federated (encrypted)", "pooled (reference)", "site_a only"} <= trained
    fed = table.loc[("all sites", "logreg", "federated (encrypted)")]
    assert fed["auc"] == pytest.approx(result.evaluations["logreg"].overall["auc"])
    pooled = table.loc[("all sites", "logreg", "pooled (reference)")]
    # same features, same test rows: federated (l2, standardized) and pooled scikit-learn fits agree closely
    assert fed["n"] == pooled["n"] and abs(fed["auc"] - pooled["auc"]) < 0.03
    text = demo.format_table(table)
    assert "pooled (reference)" in text and "site_c only" in text


def test_reference_rows_use_the_compared_models_features(result, cfg, monkeypatch):
    """Every reference (pooled, local-only) is fitted and scored on exactly its family's features."""
    seen: dict[str, list[list[str]]] = {"logreg": [], "gbdt": []}

    class Recorder:
        def __init__(self, family, inner):
            self.family, self.inner = family, inner

        def fit(self, X, y):
            seen[self.family].append(list(X.columns))
            self.inner.fit(X, y)
            return self

        def predict_proba(self, X):
            seen[self.family].append(list(X.columns))
            return self.inner.predict_proba(X)

    make_lr, make_xgb = demo._sk_logreg, demo._xgb
    monkeypatch.setattr(demo, "_sk_logreg", lambda c: Recorder("logreg", make_lr(c)))
    monkeypatch.setattr(demo, "_xgb", lambda c: Recorder("gbdt", make_xgb(c)))
    train, test = demo.split_tables({s: d.table for s, d in result.sites.items()}, cfg.test_fraction)
    features = {name: [str(f) for f in m.feature_names_in_] for name, m in result.models.items()}
    assert features["logreg"] != features["gbdt"]
    refs = demo.reference_models(train, test, features, cfg)
    for family in ("logreg", "gbdt"):
        assert seen[family] and all(cols == features[family] for cols in seen[family])
        assert set(refs.loc[refs["model"] == family, "features"]) == {len(features[family])}
    # the demo's own comparison says so too: one feature count per model family, the model's
    counts = result.comparison.groupby(level="model")["features"].unique()
    assert {k: list(v) for k, v in counts.items()} == {k: [len(v)] for k, v in features.items()}


def test_unknown_logistic_regression_features_are_named(result):
    from ehr_fed.mapping import load_study

    study = load_study(result.report.parents[1] / "cache" / "demo-federation" / "readmission_30d.yaml")
    with pytest.raises(ValueError, match=r"DemoConfig.lr_features: \['bmi'\] are not features of the study"):
        demo.model_features(study, DemoConfig(lr_features=["age", "bmi"]))
    default = demo.model_features(study, DemoConfig())
    assert default["logreg"] == list(demo.LR_FEATURES["readmission_30d"]) and "lace" in default["gbdt"]
    assert demo.model_features(study, DemoConfig(lr_features=["charlson", "age"]))["logreg"] == ["age", "charlson"]


def test_reference_metrics_match_scikit_learn():
    from sklearn.metrics import brier_score_loss, roc_auc_score

    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    m = demo.metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p)) and m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.3)
    assert np.isnan(demo.metrics(np.zeros(5), p[:5])["auc"])


def test_report_is_written_with_tables_and_figures(result):
    text = result.report.read_text()
    for part in ("<h2>Sites</h2>", "Table 1", "Model comparison", "Model: odds ratios", "data:image/png;base64,"):
        assert part in text
    assert text.count("<img") >= 5  # ROC and calibration for both models, GBDT importances
    for sid in ("site_a", "site_b", "site_c"):
        assert f"<th>{sid}</th>" in text
    for name in ("logreg", "gbdt"):  # the ehr-fed evaluate report of each model, linked from the demo report
        page = result.report.parent / f"evaluation_{name}.html"
        assert f'href="{page.name}"' in text and "data:image/png;base64," in page.read_text()


def _pages(result):
    return [result.report, *(result.report.parent / f"evaluation_{n}.html" for n in ("logreg", "gbdt"))]


def test_reports_read_without_help(result):
    """Every page the demo makes: no "not available" section, no raw names or label values, integer counts,
    no intercept odds ratio, one style, and the evaluation pages say what they evaluated on."""
    import re

    n_test = int(result.evaluations["logreg"].overall["n"])
    for page in _pages(result):
        text = page.read_text()
        assert "not available" not in text, page.name
        assert "label=" not in text and "los_days" not in text and "lab_hemoglobin" not in text, page.name
        assert not re.search(r">\d{2,}\.0+<", text), page.name
        assert "<th>intercept</th>" not in text.lower() and text.count("<style>") == 1, page.name
        assert "Length of stay (days)" in text, page.name
    for name in ("logreg", "gbdt"):
        text = (result.report.parent / f"evaluation_{name}.html").read_text()
        assert "Evaluated on the test split" in text and f": {n_test} index events" in text
        assert "Table 1: the evaluated index events" in text


@pytest.fixture(scope="module")
def t2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_t2d")
    cfg = DemoConfig(n_patients=400, study="t2d_progression", key_bits=1024, allow_insecure=True,
                     cache_dir=root / "cache", out_dir=root / "out", progress=False,
                     gbdt={"n_estimators": 3, "max_depth": 2, "learning_rate": 0.3, "max_bin": 16},
                     policy={"min_cell_count": 5, "max_params_fraction": 1.0})
    return cfg, demo.run_demo(cfg, echo=lambda s: None)


def test_demo_runs_for_the_t2d_study(t2d):
    cfg, res = t2d
    lr = res.models["logreg"]
    study_order = list(res.models["gbdt"].feature_names_in_)
    assert list(lr.feature_names_in_) == [f for f in study_order if f in demo.LR_FEATURES["t2d_progression"]]
    assert "los_days" not in res.models["gbdt"].feature_names_in_
    assert list(res.table1.columns) == ["Overall", "No type 2 diabetes within 3 years",
                                        "Type 2 diabetes within 3 years"]
    for page in _pages(res):
        text = page.read_text()
        assert "not available" not in text and "LACE" not in text and "label=" not in text, page.name
    assert "predicting type 2 diabetes within 3 years" in res.report.read_text()
