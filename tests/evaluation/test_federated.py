"""evaluate(): federated metrics equal the pooled ones; per-site metrics respect the policy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ehr_fed.evaluation import EvaluationError, evaluate, lace_baseline, model_from_json, model_to_json
from ehr_fed.evaluation.metrics import logit
from ehr_fed.federation import Federation
from ehr_fed.federation.testing import test_ceremony

from .conftest import POLICY, make_sites, pooled, site_table


def test_overall_metrics_equal_sklearn_on_the_pooled_scores(result, tables, logreg):
    df = pooled(tables)
    y, p = df["label"].to_numpy(float), logreg.predict_proba(df)[:, 1]
    o = result.overall
    assert o["n"] == len(df) and o["positives"] == int(y.sum())
    assert abs(o["auc"] - roc_auc_score(y, p)) < 1e-3
    assert abs(o["auc"] - roc_auc_score(y, p)) <= o["auc_tie_bound"] + 1e-12
    # the decrypting site merges score bins with few events: AUPRC is read off the merged histograms
    assert abs(o["auprc"] - average_precision_score(y, p)) < 5e-3
    assert o["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    assert o["calibration_in_the_large"] == pytest.approx(y.mean() - p.mean(), abs=1e-9)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit(p)[:, None], y)
    assert o["calibration_slope"] == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    assert o["calibration_intercept"] == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_calibration_curve_cells_hold_at_least_min_cell_count(result, tables):
    n = sum(len(t) for t in tables.values())
    assert sum(c["n"] for c in result.calibration_curve) == pytest.approx(n)
    for c in result.calibration_curve:
        pos = c["observed"] * c["n"]
        assert min(pos, c["n"] - pos) >= POLICY["min_cell_count"] - 1e-9


def test_per_site_metrics_equal_each_sites_own(result, tables, logreg):
    assert list(result.per_site.index) == list(tables)
    for sid, t in tables.items():
        row = result.per_site.loc[sid]
        p = logreg.predict_proba(t)[:, 1]
        assert row["released"] and row["note"] == ""
        assert row["auc"] == pytest.approx(roc_auc_score(t["label"], p), abs=1e-12)
        assert row["brier"] == pytest.approx(brier_score_loss(t["label"], p), abs=1e-12)
        assert row["n"] == len(t)


def test_a_site_with_few_events_is_suppressed_and_says_so(logreg):
    tables = make_sites((300, 400))
    small = site_table("site_c", 200, 5)
    small["label"] = np.int8(0)
    small.loc[:4, "label"] = np.int8(1)  # 5 positives: fewer than min_cell_count
    tables["site_c"] = small
    with Federation.in_process(tables, policy=_approving(logreg), encrypted=False) as fed:
        res = evaluate(fed, logreg, lace=False)
        raw = fed.query("evaluation.site_metrics", {"model": model_to_json(logreg)})
    row = res.per_site.loc["site_c"]
    assert not row["released"] and np.isnan(row["auc"]) and np.isnan(row["n"])
    assert "suppressed: fewer than 10 positive or negative index events" in row["note"]
    assert set(raw["site_c"]) == {"released", "reason"}  # no count or metric left the site
    assert res.per_site.loc["site_a", "released"]
    assert res.overall["n"] == 900  # the site still counts in the pooled (summed) metrics


def test_lace_baseline_equals_sklearn_on_the_rows_with_lace(plain_fed, tables, result):
    df = pooled(tables).dropna(subset=["lace"])
    assert result.lace["available"] and result.lace["n"] == len(df)
    # LACE values with few events are merged at the decrypting site: the AUC is certain only within auc_bound
    assert abs(result.lace["auc"] - roc_auc_score(df["label"], df["lace"])) <= result.lace["auc_bound"] + 1e-12
    assert lace_baseline(plain_fed) == result.lace


def test_lace_baseline_absent_says_so():
    tables = {k: v.drop(columns="lace") for k, v in make_sites().items()}
    with Federation.in_process(tables, policy=POLICY, encrypted=False) as fed:
        out = lace_baseline(fed)
    assert not out["available"] and "no LACE index values" in out["reason"]


def test_single_class_label_is_refused(logreg):
    tables = make_sites()
    for t in tables.values():
        t["label"] = np.int8(0)
    with Federation.in_process(tables, policy=POLICY, encrypted=False) as fed:
        with pytest.raises(EvaluationError, match="the pooled label has 0 positive of 1050 index events"):
            evaluate(fed, logreg)


def test_bad_bins_and_non_models_are_refused(plain_fed, logreg):
    with pytest.raises(EvaluationError, match="n_bins must be >= 2"):
        evaluate(plain_fed, logreg, n_bins=1)
    with pytest.raises(TypeError, match="evaluation needs a fitted ehr-fed model"):
        evaluate(plain_fed, object())


def test_model_json_round_trip_predicts_the_same(logreg, tables, tmp_path):
    text = model_to_json(logreg)
    again = model_from_json(text)
    t = tables["site_a"]
    np.testing.assert_array_equal(again.predict_proba(t), logreg.predict_proba(t))
    logreg.save(tmp_path / "m.json")
    assert json.loads(model_to_json(tmp_path / "m.json"))["kind"] == "logreg"
    with pytest.raises(ValueError, match="must be the JSON text of an ehr-fed model file"):
        model_from_json("not json")


def test_gbdt_model_is_evaluated_like_pooled(plain_fed, tables):
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    model = FederatedGradientBoostingClassifier(n_estimators=4, max_depth=2, encrypted=False).fit(plain_fed)
    res = evaluate(plain_fed, model, per_site=False, lace=False)
    df = pooled(tables)
    p = model.predict_proba(df)[:, 1]
    assert res.model_kind == "gbdt" and res.per_site is None
    # merged score bins: the released AUC is certain only within auc_tie_bound
    assert abs(res.overall["auc"] - roc_auc_score(df["label"], p)) <= res.overall["auc_tie_bound"] + 1e-12
    assert res.overall["brier"] == pytest.approx(brier_score_loss(df["label"], p), abs=1e-9)


def test_encrypted_evaluation_equals_plaintext(plain_fed, tables, logreg):
    # the merged histograms depend on the score grid, so both modes are evaluated on the same n_bins;
    # the same merging then happens at the decrypting site and the released metrics are identical
    keys, _ = test_ceremony(tuple(tables))
    with Federation.in_process(tables, policy=_approving(logreg), encrypted=True, site_keys=keys) as fed:
        enc = evaluate(fed, logreg, n_bins=2000)
    plain = evaluate(plain_fed, logreg, n_bins=2000)
    assert enc.encrypted and not plain.encrypted
    np.testing.assert_array_equal(enc.pos, plain.pos)
    np.testing.assert_array_equal(enc.neg, plain.neg)
    for k in ("n", "positives", "auc", "auc_tie_bound", "auprc"):
        assert enc.overall[k] == plain.overall[k], k
    for k in ("brier", "calibration_in_the_large", "calibration_intercept", "calibration_slope"):
        assert enc.overall[k] == pytest.approx(plain.overall[k], abs=1e-8), k  # fixed-point sums
    assert enc.calibration_curve == plain.calibration_curve
    assert enc.lace == plain.lace
    pd.testing.assert_frame_equal(enc.per_site, plain.per_site)


def _approving(*models) -> dict:
    """The test policy with ``models`` (trained in the session's plaintext federation, whose site keys these
    federations do not share) listed as approved models."""
    from ehr_fed.evaluation.provenance import approved_digest

    return {**POLICY, "approved_models": [approved_digest(m) for m in models]}
