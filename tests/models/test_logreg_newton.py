"""The pure mathematics of federated logistic regression and of federated preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from ehr_fed.models.base import (
    FeaturePreprocessor,
    add_sums,
    design_matrix,
    site_preprocessing_sums,
    validate_feature_table,
)
from ehr_fed.models.logreg_newton import (
    SingularInformationError,
    loglik_bound,
    newton_step,
    original_scale,
    pack_upper,
    penalty_diagonal,
    separated_binary_terms,
    site_newton_statistics,
    unpack_upper,
    with_intercept,
)


def _data(n=400, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * [1.0, 10.0, 0.1, 3.0][:d] + [0.0, 50.0, 1.0, -2.0][:d]
    y = (rng.random(n) < expit(0.5 * X[:, 0] - 0.01 * (X[:, 1] - 50))).astype(float)
    return X, y


@given(st.integers(1, 12), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_upper_triangle_round_trip(d, seed):
    A = np.random.default_rng(seed).normal(size=(d, d))
    H = A + A.T
    tri = pack_upper(H)
    assert tri.shape == (d * (d + 1) // 2,)
    np.testing.assert_array_equal(unpack_upper(tri, d), H)


def test_unpack_checks_the_size():
    with pytest.raises(ValueError, match="expected 6 upper-triangle values for d=3, got 5"):
        unpack_upper(np.zeros(5), 3)


def test_site_statistics_add_up_to_the_pooled_statistics():
    X, y = _data()
    Z = with_intercept(X, True)
    beta = np.array([0.1, 0.3, -0.01, 0.5, 0.02])
    parts = [site_newton_statistics(Z[i::3], y[i::3], beta) for i in range(3)]
    total = add_sums(parts)
    p = expit(Z @ beta)
    np.testing.assert_allclose(total["gradient"], Z.T @ (y - p), rtol=1e-12)
    np.testing.assert_allclose(unpack_upper(total["hessian"], 5), Z.T @ np.diag(p * (1 - p)) @ Z, rtol=1e-12)
    ll = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert total["loglik"][0] == pytest.approx(ll, rel=1e-12)


def test_newton_iterations_reach_the_mle_and_the_penalized_optimum():
    X, y = _data()
    Z = with_intercept((X - X.mean(0)) / X.std(0), True)
    for lam in (np.zeros(5), penalty_diagonal(X.std(0), 0.01, True)):
        beta = np.zeros(5)
        for _ in range(30):
            s = site_newton_statistics(Z, y, beta)
            step, _ = newton_step(s["gradient"], s["hessian"], beta, lam)
            beta = beta + step
            if np.abs(step).max() < 1e-12:
                break
        p = expit(Z @ beta)
        np.testing.assert_allclose(Z.T @ (y - p) - lam * beta, 0.0, atol=1e-9)  # stationary point


def test_penalty_diagonal_matches_sklearn_scaling():
    lam = penalty_diagonal(np.array([2.0, 0.5]), 4.0, True)
    np.testing.assert_allclose(lam, [0.0, 1 / 16, 1.0])
    np.testing.assert_array_equal(penalty_diagonal(np.ones(3), None, False), np.zeros(3))


def test_singular_information_names_the_collinear_terms():
    X, y = _data()
    Z = with_intercept(np.column_stack([X[:, 0], X[:, 1], 2 * X[:, 0]]), True)
    s = site_newton_statistics(Z, y, np.zeros(4))
    with pytest.raises(SingularInformationError, match=r"the terms \['a', 'c'\] are collinear") as exc:
        newton_step(s["gradient"], s["hessian"], np.zeros(4), np.zeros(4), ["intercept", "a", "b", "c"])
    assert exc.value.terms == ["a", "c"]


def test_original_scale_inverts_the_standardization():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3)) * [2, 5, 0.5] + [1, -3, 10]
    center, scale = X.mean(0), X.std(0)
    beta = np.array([0.2, 1.0, -0.5, 0.3])
    coef, intercept, T = original_scale(beta, center, scale, True)
    np.testing.assert_allclose(intercept + X @ coef, beta[0] + ((X - center) / scale) @ beta[1:], atol=1e-12)
    np.testing.assert_allclose(T @ beta, np.r_[intercept, coef])


def test_loglik_bound_holds():
    X, y = _data(200)
    Z = (X - X.mean(0)) / X.std(0)
    beta = np.array([-1.0, 2.0, -3.0, 0.5, 1.5])
    ll = site_newton_statistics(with_intercept(Z, True), y, beta)["loglik"][0]
    assert abs(ll) <= loglik_bound(200, beta, True)
    assert np.abs(Z).max() <= np.sqrt(200)  # Samuelson


# -- federated preprocessing --------------------------------------------------------------------------
def _table(seed=0, n=300):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "site_id": "s", "label": (rng.random(n) < 0.3).astype("int8"),
        "age": rng.normal(60, 10, n), "flag": (rng.random(n) < 0.4).astype(float),
        "lab": np.where(rng.random(n) < 0.3, np.nan, rng.lognormal(0, 1, n)),
        "never": np.nan, "const": 7.0,
    })
    return df


def test_preprocessing_from_site_sums_equals_a_local_fit():
    parts = [_table(s) for s in range(3)]
    pooled = pd.concat(parts, ignore_index=True)
    names = ["age", "flag", "lab", "never", "const"]
    sums = add_sums([site_preprocessing_sums(validate_feature_table(p, names, "t"), p["label"]) for p in parts])
    fed = FeaturePreprocessor.from_sums(sums, names)
    local = FeaturePreprocessor().fit(pooled.drop(columns=["site_id", "label"]), pooled["label"])
    assert list(fed.terms_) == list(local.terms_) == ["age", "flag", "lab", "missing_lab"]
    assert fed.dropped_terms_ == ["never", "const"]
    Z = fed.transform(pooled)
    np.testing.assert_allclose(Z, local.transform(pooled), rtol=1e-12, atol=1e-12)
    # standardized columns: mean 0, ddof-0 variance 1, the imputed column uses the observed mean
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(fed.mean_[2], pooled["lab"].mean(), rtol=1e-14)
    assert fed.get_feature_names_out().tolist() == ["age", "flag", "lab", "missing_lab"]


def test_preprocessing_state_round_trip_and_site_design():
    df = _table(1)
    prep = FeaturePreprocessor(missing_values="mean_impute").fit(df.drop(columns=["site_id", "label"]))
    again = FeaturePreprocessor.from_state(prep.get_state())
    X = validate_feature_table(df, list(prep.feature_names_in_), "t")
    np.testing.assert_array_equal(design_matrix(X, again.get_state()), prep.transform(df))
    assert "missing_lab" not in prep.terms_


def test_preprocessing_without_centering_scales_by_root_mean_square():
    df = _table(2)
    prep = FeaturePreprocessor(center=False).fit(df.drop(columns=["site_id", "label"]))
    Z = prep.transform(df)
    assert "const" in prep.terms_  # without an intercept a constant column is a term
    np.testing.assert_allclose((Z**2).mean(0), 1.0, rtol=1e-12)
    assert np.all(prep.center_ == 0)


def test_suppressed_counts_drop_the_feature():
    df = _table(3)
    names = ["age", "flag", "lab"]
    sums = site_preprocessing_sums(validate_feature_table(df, names, "t"), df["label"])
    sums["n_obs"] = np.array([sums["n_obs"][0], sums["n_obs"][1], np.nan])
    sums["sum"] = np.array([sums["sum"][0], sums["sum"][1], np.nan])
    prep = FeaturePreprocessor.from_sums(sums, names)
    assert "lab" in prep.dropped_terms_ and "missing_lab" not in prep.terms_


def test_invalid_missing_strategy():
    with pytest.raises(ValueError, match=r"missing_values='drop' is not one of"):
        FeaturePreprocessor(missing_values="drop").fit(pd.DataFrame({"a": [1.0, 2.0]}))


def test_separated_binary_terms_from_counts():
    n = 100
    y = np.r_[np.ones(30), np.zeros(70)]
    rare = np.r_[np.ones(5), np.zeros(95)]  # only in positives
    fine = np.tile([0.0, 1.0], 50)
    lab = np.where(y == 1, np.nan, 1.5)  # missing exactly for the positives
    X = np.column_stack([rare, fine, lab])
    sums = site_preprocessing_sums(X, y)
    out = separated_binary_terms(sums, ["rare", "fine", "lab"], ["rare", "fine", "missing_lab"])
    assert out == ["rare", "missing_lab"]
    assert X.shape[0] == n
    # suppressed (NaN) cells are not taken for empty cells
    sums["n_one_pos"] = np.array([np.nan, 25.0, 0.0])
    assert separated_binary_terms(sums, ["rare", "fine", "lab"], ["rare", "fine"]) == []
