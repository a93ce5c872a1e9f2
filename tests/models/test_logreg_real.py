"""Federated logistic regression on real data: the MIMIC-IV demo (FHIR) split by person into 3 sites."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression

from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.models import FederatedLogisticRegression

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]
#: covariates of a small readmission model; with 3 sites of ~88 index events each, the sites' policy
#: (parameters and Hessian entries released per row) allows about this many terms
COVARIATES = ["age", "sex_female", "los_days", "prior_inpatient_365d", "charlson", "cond_heart_failure",
              "cond_ckd"]


@pytest.fixture(scope="module")
def mimic_sites(shared_data):
    from ehr_fed.cohort import harmonize

    ft = harmonize("fhir", shared_data / "fhir" / "mimic4demo", PROJECT / "mappings/sites/mimic_fhir.yaml",
                   PROJECT / "mappings/studies/readmission_30d.yaml")
    table = ft.table
    assert len(table) == 263 and int(table["label"].sum()) == 48  # SOURCES.md
    persons = np.sort(table["person_key"].unique())
    site_of = {p: f"site_{i % 3}" for i, p in enumerate(persons)}
    sites = table["person_key"].map(site_of)
    return {s: table[sites == s].assign(site_id=s).reset_index(drop=True) for s in sorted(set(sites))}


def _federation(tables):
    return Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.6), encrypted=False,
                                 study="readmission_30d")


def test_mimic_unpenalized_equals_pooled_statsmodels(mimic_sites):
    model = FederatedLogisticRegression(encrypted=False, features=COVARIATES).fit(_federation(mimic_sites))
    pooled = pd.concat(mimic_sites.values(), ignore_index=True)
    assert model.n_samples_ == 263 and model.n_positives_ == 48 and model.n_sites_ == 3
    assert list(model.terms_) == COVARIATES  # no missing values among these
    res = sm.Logit(pooled["label"].astype(float), sm.add_constant(pooled[COVARIATES])).fit(
        disp=0, method="newton", tol=1e-12)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_.ravel()], res.params.to_numpy(), atol=1e-6)
    table = model.summary()
    np.testing.assert_allclose(table["std err"], res.bse, rtol=1e-6)
    np.testing.assert_allclose(table["P>|z|"], res.pvalues, rtol=1e-5)
    np.testing.assert_allclose(table[["ci_lower", "ci_upper"]], res.conf_int(), atol=1e-6)
    assert table.attrs["loglik"] == pytest.approx(res.llf, abs=1e-6)
    np.testing.assert_allclose(model.to_sklearn().predict_proba(pooled)[:, 1], res.predict(), atol=1e-9)


def test_mimic_all_features_l2_equals_pooled_sklearn(mimic_sites):
    """Every study feature: never-observed labs are dropped, the rest mean-imputed with indicators."""
    # 13 terms need more rows per site than the default policy allows at ~88 rows: two larger sites and
    # a third, with min_sites relaxed accordingly
    big = pd.concat([mimic_sites["site_0"], mimic_sites["site_1"]], ignore_index=True).assign(site_id="site_ab")
    tables = {"site_ab": big, "site_c": mimic_sites["site_2"]}
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=1.0, min_sites=2),
                                encrypted=False)
    with pytest.warns(UserWarning, match="terms left out of the model"):
        model = FederatedLogisticRegression(penalty="l2", C=0.5, encrypted=False).fit(fed)
    pooled = pd.concat(tables.values(), ignore_index=True)
    observed = [c for c in model.feature_names_in_ if pooled[c].notna().any()]
    assert list(model.terms_) == observed
    sk = LogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12, max_iter=200).fit(
        pooled[observed], pooled["label"])
    np.testing.assert_allclose(model.coef_, sk.coef_, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, sk.intercept_, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(model.predict_proba(pooled), sk.predict_proba(pooled[observed]), atol=1e-7)
