"""Metrics from aggregated histograms equal scikit-learn's on the scores rounded to the bin grid."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ehr_fed.evaluation.metrics import (
    auc_from_histograms,
    auprc_from_histograms,
    calibration_curve,
    calibration_fit,
    calibration_slope_step,
    local_histograms,
    logit,
    roc_from_histograms,
    score_bins,
    summarize,
)


@pytest.fixture
def scores():
    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 2000)
    y = (rng.random(2000) < p).astype(float)
    return p, y


def binned(p, n_bins):
    return (score_bins(p, n_bins) + 0.5) / n_bins


def test_auc_and_auprc_equal_sklearn_on_the_bin_grid(scores):
    p, y = scores
    h = local_histograms(p, y, 50, 10)
    auc, tie = auc_from_histograms(h["pos"], h["neg"])
    assert auc == pytest.approx(roc_auc_score(y, binned(p, 50)), abs=1e-12)
    assert abs(auc - roc_auc_score(y, p)) <= tie
    assert auprc_from_histograms(h["pos"], h["neg"]) == pytest.approx(
        average_precision_score(y, binned(p, 50)), abs=1e-12)


def test_fine_grid_is_within_0001_of_the_unbinned_auc(scores):
    p, y = scores
    h = local_histograms(p, y, 10_000, 10)
    auc, tie = auc_from_histograms(h["pos"], h["neg"])
    assert tie < 1e-3 and abs(auc - roc_auc_score(y, p)) < 1e-3


def test_roc_points_equal_sklearn_roc_curve(scores):
    p, y = scores
    h = local_histograms(p, y, 40, 10)
    fpr, tpr, _ = roc_from_histograms(h["pos"], h["neg"])
    ref_fpr, ref_tpr, _ = roc_curve(y, binned(p, 40), drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)


def test_one_class_gives_nan():
    assert np.isnan(auc_from_histograms(np.zeros(4), np.ones(4))[0])
    assert np.isnan(auprc_from_histograms(np.zeros(4), np.ones(4)))


def test_summary_brier_and_calibration_in_the_large(scores):
    p, y = scores
    s = summarize(local_histograms(p, y, 100, 10))
    assert s["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    assert s["calibration_in_the_large"] == pytest.approx(y.mean() - p.mean(), abs=1e-12)
    assert s["n"] == 2000 and s["positives"] == int(y.sum())


def test_calibration_curve_merges_small_cells_and_keeps_totals(scores):
    p, y = scores
    h = local_histograms(p, y, 100, 20)
    curve = calibration_curve(h["cal_n"], h["cal_p"], h["cal_y"], min_cell_count=25)
    assert len(curve) < 20
    assert sum(c["n"] for c in curve) == pytest.approx(2000)
    for c in curve:
        pos = c["observed"] * c["n"]
        assert c["n"] >= 25 and pos >= 25 - 1e-9 and c["n"] - pos >= 25 - 1e-9
    total_pos = sum(c["observed"] * c["n"] for c in curve)
    assert total_pos == pytest.approx(y.sum())


def test_calibration_curve_shows_nothing_when_everything_is_small():
    assert calibration_curve(np.array([3.0, 2.0]), np.array([1.0, 1.5]), np.array([1.0, 1.0]), 10) == []


def test_calibration_fit_equals_sklearn_recalibration(scores):
    p, y = scores
    p_shrunk = 1 / (1 + np.exp(-(0.3 + 1.7 * logit(p))))  # miscalibrated scores
    lp = logit(p_shrunk)
    a, b = calibration_fit(lambda coef: calibration_slope_step(lp, y, coef))
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(lp[:, None], y)
    assert a == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert b == pytest.approx(ref.coef_[0, 0], abs=1e-5)


def test_calibration_fit_of_a_constant_score_is_nan():
    y = np.array([0.0, 1.0] * 20)
    a, b = calibration_fit(lambda coef: calibration_slope_step(np.zeros(40), y, coef))
    assert np.isnan(a) and np.isnan(b)


def test_calibration_step_at_extreme_scores_is_finite_and_warns_of_nothing():
    lp = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])  # logits of a saturated model
    with np.errstate(all="raise"):
        out = calibration_slope_step(lp, np.array([0.0, 0.0, 1.0, 1.0, 1.0]), np.array([0.0, 1.0]))
    assert np.all(np.isfinite(out["grad"])) and np.all(np.isfinite(out["info"]))
    assert out["grad"][0] == pytest.approx(0.5)  # the residuals: 0, ~0, 0.5, ~0, 0
