"""FederatedLogisticRegression on an in-process federation equals pooled statsmodels / scikit-learn fits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ehr_fed.federation import (
    DisclosureError,
    Federation,
    FederationError,
    PrivacyPolicy,
    SiteContext,
    get_task,
)
from ehr_fed.models import FederatedLogisticRegression, PerfectSeparationError
from ehr_fed.models.base import NotFittedError

FEATURES = ["age", "sex_female", "los_days", "charlson", "lab_creatinine", "lab_hba1c", "cond_cancer",
            "lab_never", "constant"]
META = ["site_id", "person_key", "index_time", "label"]


def site_table(site: str, n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """A feature table with signal, missing values, an always-missing and a constant feature."""
    rng = np.random.default_rng(seed)
    age = rng.normal(65 + shift, 12, n)
    sex = (rng.random(n) < 0.5).astype(float)
    los = rng.exponential(4, n)
    charlson = rng.integers(0, 8, n).astype(float)
    creat = rng.lognormal(0, 0.3, n)
    hba1c = rng.normal(6.5, 1.0, n)
    cancer = (rng.random(n) < 0.15).astype(float)
    eta = -4.0 + 0.03 * age + 0.4 * sex + 0.08 * los + 0.15 * charlson + 0.8 * creat + 0.5 * cancer
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype("int8")
    creat[rng.random(n) < 0.2] = np.nan
    hba1c[rng.random(n) < 0.6 + 0.3 * (label == 1)] = np.nan  # informative missingness
    return pd.DataFrame({
        "site_id": site, "person_key": [f"{seed:04x}{i:012x}" for i in range(n)],
        "index_time": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "label": label, "age": age, "sex_female": sex, "los_days": los, "charlson": charlson,
        "lab_creatinine": creat, "lab_hba1c": hba1c, "cond_cancer": cancer, "lab_never": np.nan,
        "constant": 2.5,
    })


def make_sites(sizes: tuple[int, ...], seed: int = 11) -> dict[str, pd.DataFrame]:
    return {f"site_{i}": site_table(f"site_{i}", n, seed + i, shift=3.0 * i) for i, n in enumerate(sizes)}


def pooled_design(tables: dict[str, pd.DataFrame], indicators: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """The pooled design computed directly with pandas: mean imputation, indicators, constants dropped."""
    pooled = pd.concat(tables.values(), ignore_index=True)
    X = pooled[FEATURES]
    cols = {}
    for c in FEATURES:
        if X[c].notna().any():
            cols[c] = X[c].fillna(X[c].mean())
    if indicators:
        for c in FEATURES:
            miss = X[c].isna()
            if 0 < miss.sum() < len(X):
                cols["missing_" + c] = miss.astype(float)
    D = pd.DataFrame(cols)
    D = D.loc[:, D.std(ddof=0) > 0]
    return D, pooled["label"].to_numpy(dtype=float)


def plain_federation(tables, **policy) -> Federation:
    pol = PrivacyPolicy(**({"max_params_fraction": 1.0} | policy))
    return Federation.in_process(tables, policy=pol, encrypted=False)


def fit_quiet(model, fed, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="terms left out", category=UserWarning)
        return model.fit(fed, **kw)


@pytest.fixture(scope="module")
def tables3():
    return make_sites((700, 900, 800))


@pytest.fixture(scope="module")
def fitted3(tables3):
    return fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables3))


@pytest.fixture(scope="module")
def statsmodels3(tables3):
    D, y = pooled_design(tables3)
    return D, sm.Logit(y, sm.add_constant(D)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)


# -- equality with pooled fits ------------------------------------------------------------------------
def test_unpenalized_fit_equals_pooled_statsmodels(fitted3, statsmodels3):
    D, res = statsmodels3
    assert list(fitted3.terms_) == list(D.columns)
    np.testing.assert_allclose(fitted3.intercept_[0], res.params["const"], atol=1e-6)
    np.testing.assert_allclose(fitted3.coef_.ravel(), res.params[list(D.columns)].to_numpy(), atol=1e-6)
    assert fitted3.loglik_ == pytest.approx(res.llf, abs=1e-6)
    assert fitted3.converged_ and 2 <= fitted3.n_iter_ <= 10


def test_five_sites_equal_pooled_statsmodels():
    tables = make_sites((300, 500, 250, 400, 350), seed=3)
    model = fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables))
    D, y = pooled_design(tables)
    res = sm.Logit(y, sm.add_constant(D)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_.ravel()], res.params.to_numpy(), atol=1e-6)
    assert model.n_sites_ == 5 and model.n_samples_ == 1800


def test_summary_matches_statsmodels(fitted3, statsmodels3):
    D, res = statsmodels3
    table = fitted3.summary()
    assert list(table.index) == ["intercept", *D.columns]
    ci = res.conf_int()
    np.testing.assert_allclose(table["coef"], res.params, atol=1e-6)
    np.testing.assert_allclose(table["std err"], res.bse, rtol=1e-6)
    np.testing.assert_allclose(table["z"], res.tvalues, rtol=1e-6)
    np.testing.assert_allclose(table["P>|z|"], res.pvalues, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(table["ci_lower"], ci[0], atol=1e-6)
    np.testing.assert_allclose(table["ci_upper"], ci[1], atol=1e-6)
    np.testing.assert_allclose(table["odds_ratio"], np.exp(res.params), rtol=1e-6)
    np.testing.assert_allclose(table["or_ci_lower"], np.exp(ci[0]), rtol=1e-6)
    assert table.attrs["loglik"] == pytest.approx(res.llf, abs=1e-6)
    assert table.attrs["null_loglik"] == pytest.approx(res.llnull, abs=1e-6)
    assert table.attrs["pseudo_r2"] == pytest.approx(res.prsquared, abs=1e-8)


def test_summary_alpha_and_notebook_display(fitted3, statsmodels3):
    _, res = statsmodels3
    t90 = fitted3.summary(alpha=0.1)
    np.testing.assert_allclose(t90["ci_lower"], res.conf_int(alpha=0.1)[0], atol=1e-6)
    html = t90._repr_html_()
    assert "Federated logistic regression" in html and "missing_lab_hba1c" in html and "90% Wald" in html
    assert type(t90.head(2))._repr_html_(t90.head(2))  # a slice still renders
    with pytest.raises(ValueError, match="alpha must be in"):
        fitted3.summary(alpha=1.5)


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_l2_fit_equals_pooled_sklearn(tables3, C):
    model = fit_quiet(FederatedLogisticRegression(penalty="l2", C=C, encrypted=False), plain_federation(tables3))
    D, y = pooled_design(tables3)
    sk = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=200).fit(D, y)
    np.testing.assert_allclose(model.coef_, sk.coef_, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, sk.intercept_, atol=1e-6)
    table = model.summary()
    assert "penalized" in table.attrs["note"]


def test_no_intercept_equals_pooled_statsmodels(tables3):
    model = fit_quiet(FederatedLogisticRegression(fit_intercept=False, encrypted=False),
                      plain_federation(tables3))
    D, y = pooled_design(tables3)
    # without an intercept a constant feature is not redundant: it is kept (in place of the intercept)
    D.insert(list(model.terms_).index("constant"), "constant", 2.5)
    assert list(model.terms_) == list(D.columns)
    res = sm.Logit(y, D).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    assert model.intercept_[0] == 0.0
    np.testing.assert_allclose(model.coef_.ravel(), res.params.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(model.summary()["std err"], res.bse, rtol=1e-6)


def test_mean_impute_without_indicators(tables3):
    model = fit_quiet(FederatedLogisticRegression(missing_values="mean_impute", encrypted=False),
                      plain_federation(tables3))
    D, y = pooled_design(tables3, indicators=False)
    res = sm.Logit(y, sm.add_constant(D)).fit(disp=0, method="newton", tol=1e-12)
    assert not any(t.startswith("missing_") for t in model.terms_)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_.ravel()], res.params.to_numpy(), atol=1e-6)


def test_native_missing_values_refused_for_nan(tables3):
    with pytest.raises(Exception, match="missing_values='native' keeps them"):
        fit_quiet(FederatedLogisticRegression(missing_values="native", encrypted=False),
                  plain_federation(tables3))


def test_dropped_terms_are_reported(tables3):
    with pytest.warns(UserWarning, match=r"terms left out of the model: \['lab_never', 'constant'"):
        model = FederatedLogisticRegression(encrypted=False).fit(plain_federation(tables3))
    assert model.dropped_terms_ == ["lab_never", "constant"]  # never observed: no indicator either
    assert "missing_lab_never" not in model.terms_


# -- prediction ---------------------------------------------------------------------------------------
def test_predictions_on_a_local_table(fitted3, statsmodels3, tables3):
    D, res = statsmodels3
    local = tables3["site_1"]
    n0 = len(tables3["site_0"])
    expected = res.predict(sm.add_constant(D).iloc[n0:n0 + len(local)])
    proba = fitted3.predict_proba(local)
    assert proba.shape == (len(local), 2)
    np.testing.assert_allclose(proba[:, 1], expected, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted3.predict(local), (expected > 0.5).astype(int))
    np.testing.assert_allclose(fitted3.decision_function(local), np.log(expected / (1 - expected)), atol=1e-6)
    # extra columns do not matter and meta columns are optional; the features keep the order of fit
    extra = local[FEATURES].assign(extra=1.0)
    np.testing.assert_allclose(fitted3.predict_proba(extra), proba, rtol=0, atol=0)
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        fitted3.predict_proba(local[FEATURES[::-1]])


def test_unfitted_model_says_so():
    with pytest.raises(NotFittedError, match="This FederatedLogisticRegression instance is not fitted yet. "
                                             "Call 'fit'"):
        FederatedLogisticRegression().predict_proba(pd.DataFrame({"age": [1.0]}))


def test_feature_mismatch_shows_column_diff(fitted3, tables3):
    bad = tables3["site_0"].drop(columns=["los_days", "charlson"])
    with pytest.raises(ValueError, match=r"X has 7 features, but FederatedLogisticRegression is expecting "
                                         r"9 features as input") as exc:
        fitted3.predict(bad)
    assert "-los_days" in str(exc.value) and "-charlson" in str(exc.value)
    with pytest.raises(ValueError, match="X has 3 features, but FederatedLogisticRegression is expecting 9"):
        fitted3.predict(np.zeros((2, 3)))


# -- estimator contract -------------------------------------------------------------------------------
def test_get_set_params_and_clone(fitted3):
    params = fitted3.get_params()
    assert params == {"penalty": "none", "C": 1.0, "fit_intercept": True, "max_iter": 25, "tol": 1e-8,
                      "encrypted": False, "missing_values": None, "features": None, "dp": None}
    fresh = clone(fitted3)
    assert fresh.get_params() == params and not hasattr(fresh, "coef_")
    fresh.set_params(penalty="l2", C=0.5)
    assert (fresh.penalty, fresh.C) == ("l2", 0.5)
    assert FederatedLogisticRegression(C=3).__dict__ == {
        "penalty": "none", "C": 3, "fit_intercept": True, "max_iter": 25, "tol": 1e-8, "encrypted": True,
        "missing_values": None, "features": None, "dp": None}


def test_feature_subset(tables3, statsmodels3):
    subset = ["los_days", "age", "lab_creatinine"]
    model = FederatedLogisticRegression(encrypted=False, features=subset).fit(plain_federation(tables3))
    assert list(model.feature_names_in_) == subset
    assert list(model.terms_) == [*subset, "missing_lab_creatinine"]
    D, y = pooled_design(tables3)
    D = D[list(model.terms_)]
    res = sm.Logit(y, sm.add_constant(D)).fit(disp=0, method="newton", tol=1e-12)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_.ravel()], res.params.to_numpy(), atol=1e-6)
    assert model.predict_proba(tables3["site_0"][subset]).shape == (700, 2)
    with pytest.raises(ValueError, match=r"features \['bmi'\] are not feature columns"):
        FederatedLogisticRegression(encrypted=False, features=["age", "bmi"]).fit(plain_federation(tables3))


def test_invalid_parameters_listed_at_fit(tables3):
    fed = plain_federation(tables3)
    with pytest.raises(ValueError, match=r"penalty must be 'none' or 'l2', got 'l1'; C must be a positive"):
        FederatedLogisticRegression(penalty="l1", C=-1, encrypted=False).fit(fed)


def test_encrypted_model_refuses_plaintext_federation(tables3):
    with pytest.raises(ValueError, match="needs an encrypting federation"):
        FederatedLogisticRegression(encrypted=True).fit(plain_federation(tables3))


def test_progress_callback_and_history(tables3):
    seen = []
    model = fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables3),
                      callback=seen.append)
    assert [e["round"] for e in seen] == list(range(1, model.n_iter_ + 1))
    assert seen[-1]["converged"] and seen[-1]["step"] < 1e-8
    lls = [e["loglik"] for e in seen]
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:], strict=False))


def test_max_iter_reached_warns(tables3):
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 rounds"):
        fit_quiet(FederatedLogisticRegression(max_iter=2, encrypted=False), plain_federation(tables3))


# -- disclosure and separation ------------------------------------------------------------------------
def test_too_many_parameters_for_a_site_is_refused_at_the_site(tables3):
    tables = dict(tables3)
    tables["site_1"] = tables3["site_1"].iloc[:60]
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.1), encrypted=False)
    with pytest.raises(FederationError, match=r"site_1 refuses task 'logreg.newton': 10 model parameters "
                                              r"exceed max_params_fraction=0.1 x 60 rows") as exc:
        fit_quiet(FederatedLogisticRegression(encrypted=False), fed)
    assert "site_0" not in str(exc.value)
    # the site task itself raises the policy's DisclosureError

    ctx = SiteContext(site_id="site_1", policy=PrivacyPolicy(max_params_fraction=0.1))
    with pytest.raises(DisclosureError, match="10 model parameters exceed") as exc2:
        get_task("logreg.newton").fn(tables["site_1"], {"beta": [0.0] * 10}, ctx)
    assert exc2.value.rule == "max_params_fraction"


def test_binary_feature_with_an_empty_cell_is_named(tables3):
    tables = {k: v.copy() for k, v in tables3.items()}
    for t in tables.values():
        t["cond_rare"] = ((t["label"] == 1) & (np.arange(len(t)) % 7 == 0)).astype(float)  # only in positives
    with pytest.raises(PerfectSeparationError, match=r"the term\(s\) \['cond_rare'\] predict the label") as exc:
        fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables))
    assert exc.value.terms == ["cond_rare"]
    # with a ridge penalty the estimate exists
    model = fit_quiet(FederatedLogisticRegression(penalty="l2", C=1.0, encrypted=False), plain_federation(tables))
    assert model.converged_ and model.coef_[0, list(model.terms_).index("cond_rare")] > 1


def test_complete_separation_by_a_continuous_feature_is_named_not_diverging(tables3):
    tables = {}
    for k, t in tables3.items():
        t = t.copy()
        t["los_days"] = np.where(t["label"] == 1, 20.0, 1.0) + np.random.default_rng(1).random(len(t))
        tables[k] = t
    with pytest.raises(PerfectSeparationError, match="los_days") as exc:
        fit_quiet(FederatedLogisticRegression(encrypted=False, max_iter=50), plain_federation(tables))
    assert "los_days" in exc.value.terms and "penalty='l2'" in str(exc.value)


def test_single_class_label_is_refused(tables3):
    tables = {k: v.assign(label=np.int8(0)) for k, v in tables3.items()}
    with pytest.raises(ValueError, match="only one class"):
        fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables))


def test_sites_with_different_columns_fail_with_a_diff(tables3):
    tables = dict(tables3)
    tables["site_2"] = tables3["site_2"].rename(columns={"los_days": "length_of_stay"})
    with pytest.raises(ValueError, match=r"1 site\(s\) have feature columns that differ") as exc:
        fit_quiet(FederatedLogisticRegression(encrypted=False), plain_federation(tables))
    assert "-los_days" in str(exc.value) and "+length_of_stay" in str(exc.value)


def test_package_exports():
    import ehr_fed.models as models
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    assert models.FederatedGradientBoostingClassifier is FederatedGradientBoostingClassifier
    assert "FederatedGradientBoostingClassifier" in models.__all__
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        models.Nope  # noqa: B018
