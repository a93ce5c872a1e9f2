"""The demo's steps (``ehr_fed.demo``) on a small federation: 3 sites x 400 patients, 1024-bit keys."""

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
    for part in ("<h2>Sites</h2>", "Table 1", "Model comparison", "odds ratios", "data:image/png;base64,"):
        assert part in text
    assert text.count("<img") >= 5  # ROC and calibration for both models, GBDT importances
    for sid in ("site_a", "site_b", "site_c"):
        assert f"<th>{sid}</th>" in text
    for name in ("logreg", "gbdt"):  # the ehr-fed evaluate report of each model, linked from the demo report
        page = result.report.parent / f"evaluation_{name}.html"
        assert f'href="{page.name}"' in text and "data:image/png;base64," in page.read_text()
