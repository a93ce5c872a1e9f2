"""The estimators as scikit-learn defines them: its own checks, label encoding, input errors, local fits.

``parametrize_with_checks`` runs every check of the installed scikit-learn with no expected failures. Two
instances are configured, and only for speed or for a documented property of the model, never to hide a
failing check:

* ``FederatedLogisticRegression(penalty="l2")``: the default ``penalty="none"`` is the unpenalized maximum
  likelihood fit (equal to statsmodels' ``Logit``), which does not exist on the linearly separable blobs
  scikit-learn's checks train on; the model refuses them with ``PerfectSeparationError``. Its penalized form
  is scikit-learn's ``LogisticRegression(C=1)``, the estimator those checks were written for.
* ``FederatedGradientBoostingClassifier(n_estimators=3, max_depth=3, max_bin=32)``: fewer, shallower trees
  keep the checks' ~100 local fits fast.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from ehr_fed.federation import Federation, FederationError
from ehr_fed.federation.testing import FEATURES, make_tables
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.models.base import FeaturePreprocessor
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier
from ehr_fed.models.gbdt.binning import BinMapper
from ehr_fed.models.gbdt.grower import LocalHistogramSource
from ehr_fed.models.sklearn_api import LOCAL_SITE, local_policy

GB_SMALL = dict(n_estimators=3, max_depth=3, max_bin=32)

CHECKED = [
    FeaturePreprocessor(),
    FeaturePreprocessor(missing_values="native"),  # allow_nan=False: scikit-learn's NaN/inf checks run
    FederatedLogisticRegression(penalty="l2"),
    FederatedLogisticRegression(penalty="l2", missing_values="native"),
    FederatedGradientBoostingClassifier(**GB_SMALL),
]


@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_honest_tags():
    for est in (FederatedLogisticRegression(), FederatedGradientBoostingClassifier()):
        tags = est.__sklearn_tags__()
        assert tags.classifier_tags.multi_class is False  # binary only
        assert tags.input_tags.allow_nan is True and tags.input_tags.sparse is False
    assert FederatedLogisticRegression(missing_values="native").__sklearn_tags__().input_tags.allow_nan is False
    assert FeaturePreprocessor(missing_values="native").__sklearn_tags__().input_tags.allow_nan is False
    assert FeaturePreprocessor().__sklearn_tags__().input_tags.allow_nan is True


# -- shared data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tables():
    return make_tables((150, 200, 170), seed=3)


@pytest.fixture(scope="module")
def pooled(tables):
    return pd.concat(tables.values(), ignore_index=True)


def _xy(pooled):
    return pooled[FEATURES].to_numpy(), pooled["label"].to_numpy()


def _models():
    return [FederatedLogisticRegression(), FederatedGradientBoostingClassifier(**GB_SMALL)]


def _same(a, b):
    if isinstance(a, FederatedLogisticRegression):
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.intercept_, b.intercept_, rtol=0, atol=1e-12)
    else:
        assert [t.to_routing() for t in a.trees_] == [t.to_routing() for t in b.trees_]


# -- fitted state and errors ----------------------------------------------------------------------
@pytest.mark.parametrize("est", [*_models(), FeaturePreprocessor()], ids=lambda e: type(e).__name__)
def test_unfitted_models_raise_scikit_learns_not_fitted_error(est):
    X = np.zeros((2, len(FEATURES)))
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if hasattr(est, method):
            with pytest.raises(NotFittedError, match=f"This {type(est).__name__} instance is not fitted yet"):
                getattr(est, method)(X)


@pytest.mark.parametrize("est", _models(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("labels", [(1, 2), ("no", "yes"), (False, True)], ids=["1-2", "strings", "bools"])
def test_any_two_labels_are_encoded_by_classes(pooled, est, labels):
    X, y = _xy(pooled)
    y_other = np.where(y == 1, labels[1], labels[0])
    base = type(est)(**est.get_params()).fit(X, y)
    other = type(est)(**est.get_params()).fit(X, y_other)
    assert list(other.classes_) == list(labels) and list(base.classes_) == [0, 1]
    _same(base, other)  # classes_[1] is the positive class: the same model
    np.testing.assert_array_equal(other.predict_proba(X), base.predict_proba(X))
    np.testing.assert_array_equal(other.predict(X), np.asarray(labels)[base.predict(X)])
    assert set(other.predict(X)) <= set(labels)


@pytest.mark.parametrize("est", _models(), ids=lambda e: type(e).__name__)
def test_label_errors(pooled, est):
    X, y = _xy(pooled)
    with pytest.raises(ValueError, match="Only binary classification is supported.*got y with 3 classes"):
        est.fit(X, y + (np.arange(len(y)) % 3 == 0))
    with pytest.raises(ValueError, match="only one class: 1"):
        est.fit(X, np.ones(len(y), dtype=int))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        est.fit(X, y + 0.5 * np.random.default_rng(0).random(len(y)))
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        est.fit(X)
    with pytest.raises(ValueError, match="pass the labels once"):
        est.fit(pooled, y)


@pytest.mark.parametrize("est", _models(), ids=lambda e: type(e).__name__)
def test_column_vector_y_warns_and_fits_like_a_1d_y(pooled, est):
    X, y = _xy(pooled)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed when a 1d array was expected"):
        col = type(est)(**est.get_params()).fit(X, y.reshape(-1, 1))
    _same(col, type(est)(**est.get_params()).fit(X, y))


@pytest.mark.parametrize("est", [*_models(), FeaturePreprocessor()], ids=lambda e: type(e).__name__)
def test_empty_and_1d_input_get_scikit_learns_errors(est):
    y = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match=re.escape("Found array with 0 sample(s) (shape=(0, 3)) while a minimum "
                                                   "of 1 is required")):
        est.fit(np.empty((0, 3)), np.empty(0))
    with pytest.raises(ValueError, match=re.escape("0 feature(s) (shape=(10, 0)) while a minimum of 1 is")):
        est.fit(np.empty((10, 0)), y)
    with pytest.raises(ValueError, match="(?s)Expected 2D array, got 1D array instead.*Reshape your data"):
        est.fit(np.arange(10.0), y)


@pytest.mark.parametrize("est", [*_models(), FeaturePreprocessor()], ids=lambda e: type(e).__name__)
def test_inf_is_refused_in_fit_and_predict_never_dropped(pooled, est):
    X, y = _xy(pooled)
    bad = X.copy()
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"Input X contains infinity"):
        est.fit(bad, y)
    frame = pooled.copy()
    frame.loc[3, "los_days"] = -np.inf
    with pytest.raises(ValueError, match=r"Input X contains infinity"):
        est.fit(frame[FEATURES], y)
    est.fit(pooled[FEATURES], y)
    with pytest.raises(ValueError, match=r"Input X contains infinity"):
        (est.transform if hasattr(est, "transform") else est.predict_proba)(frame)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but"):  # scikit-learn's warning
        with pytest.raises(ValueError, match=r"Input X contains infinity"):
            (est.transform if hasattr(est, "transform") else est.predict_proba)(bad)


def test_a_site_refuses_inf_in_its_table(tables):
    bad = {k: v.copy() for k, v in tables.items()}
    bad["site_b"].loc[7, "charlson"] = np.inf
    with Federation.in_process(bad, encrypted=False) as fed:
        with pytest.raises(FederationError, match=r"site_b: .*\['charlson'\] hold 1 infinite value\(s\) \(inf\)"):
            FederatedLogisticRegression(encrypted=False).fit(fed)


# -- feature names --------------------------------------------------------------------------------
@pytest.mark.parametrize("est", [*_models(), FeaturePreprocessor()], ids=lambda e: type(e).__name__)
def test_feature_names_follow_scikit_learn(pooled, est):
    X, y = _xy(pooled)
    est.fit(X, y)
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == len(FEATURES)
    est.fit(pooled, None if not isinstance(est, FeaturePreprocessor) else y)  # a feature table, labels inside
    assert list(est.feature_names_in_) == FEATURES and est.feature_names_in_.dtype == object
    out = est.transform if hasattr(est, "transform") else est.predict_proba
    ref = out(pooled)
    np.testing.assert_array_equal(out(pooled[FEATURES].assign(extra=1.0)), ref)  # unused columns ignored
    with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
        out(pooled[FEATURES[::-1]])
    with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing:\n- charlson\n") as err:
        out(pooled.drop(columns=["charlson"]))
    assert "-charlson" in str(err.value)  # with the column diff


def test_preprocessor_output_names_for_arrays_and_tables(pooled):
    X = pooled[FEATURES].to_numpy()
    prep = FeaturePreprocessor().fit(X)
    assert list(prep.get_feature_names_out()) == ["x0", "x1", "x2", "x3", "x4", "missing_x4"]
    assert list(prep.get_feature_names_out(FEATURES)) == [*FEATURES, "missing_lab_creatinine"]
    named = FeaturePreprocessor().fit(pooled)
    np.testing.assert_array_equal(named.transform(pooled), prep.transform(X))
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        named.get_feature_names_out([f"c{j}" for j in range(5)])


# -- local fits: one site through the federation's code path -----------------------------------------
def test_local_logreg_equals_the_federated_fit_of_the_same_rows(tables, pooled):
    with Federation.in_process(tables, encrypted=False) as fed:
        federated = FederatedLogisticRegression(encrypted=False).fit(fed)
    local = FederatedLogisticRegression().fit(pooled)  # encrypted=True applies to federations only
    np.testing.assert_allclose(local.coef_, federated.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(local.intercept_, federated.intercept_, rtol=0, atol=1e-6)
    assert (local.n_sites_, federated.n_sites_) == (1, 3) and local.n_samples_ == federated.n_samples_
    assert local.history_[0]["round"] == 1 and local.converged_


def test_local_boosting_equals_the_pooled_learner(pooled):
    local = FederatedGradientBoostingClassifier(**GB_SMALL).fit(pooled)
    # the same trees from the in-memory pooled learner, with the local fit's bins
    ref = FederatedGradientBoostingClassifier(**GB_SMALL)
    ref.precision_, ref._min_count_ = local.precision_, 10
    mapper = BinMapper(local.bin_edges_, GB_SMALL["max_bin"])
    source = LocalHistogramSource(pooled[FEATURES].to_numpy(), pooled["label"].to_numpy(), mapper,
                                  local.base_score_, local.precision_)
    _same(local, type("T", (), {"trees_": ref._boost(source, mapper, None)})())
    for t in local.trees_:  # leaves hold at least 10 rows, as under the default policy
        assert min(t.count[i] for i in range(t.n_nodes) if t.is_leaf(i)) >= 10


def test_the_local_policy_is_not_reachable_by_a_federation(tables):
    pol = local_policy()
    assert (pol.min_sites, pol.min_cell_count) == (1, 1)
    # a real one-site federation runs under its site's policy (min_sites=3 by default) and is refused
    with Federation.in_process({LOCAL_SITE: tables["site_a"]}, encrypted=False) as fed:
        with pytest.raises(FederationError, match="min_sites=3"):
            FederatedLogisticRegression(encrypted=False).fit(fed)
        with pytest.raises(FederationError, match="min_sites=3"):
            FederatedGradientBoostingClassifier(encrypted=False, **GB_SMALL).fit(fed)
        with pytest.raises(ValueError, match=r"fit\(federation\) takes no y"):
            FederatedLogisticRegression(encrypted=False).fit(fed, np.zeros(3))


def test_model_files_need_named_features_and_0_1_labels(pooled, tmp_path):
    X, y = _xy(pooled)
    for est in _models():
        with pytest.raises(ValueError, match="fitted on an array without feature names"):
            type(est)(**est.get_params()).fit(X, y).save(tmp_path / "m.json")
        with pytest.raises(ValueError, match=r"fitted with labels \['a', 'b'\]"):
            type(est)(**est.get_params()).fit(pooled[FEATURES], np.where(y == 1, "b", "a")).save(tmp_path / "m.json")
        type(est)(**est.get_params()).fit(pooled).save(tmp_path / "m.json")  # a feature table saves


def test_exported_pipeline_keeps_the_labels_and_takes_arrays(pooled):
    X, y = _xy(pooled)
    model = FederatedLogisticRegression().fit(X, np.where(y == 1, 2, 1))
    pipe = model.to_sklearn()
    np.testing.assert_array_equal(pipe.predict(X), model.predict(X))
    np.testing.assert_allclose(pipe.predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-12)
    assert list(pipe.classes_) == [1, 2] and not hasattr(pipe.steps[0][1], "feature_names_in_")


def test_unpenalized_fit_refuses_the_separable_data_of_scikit_learns_checks():
    from sklearn.datasets import make_blobs

    from ehr_fed.models import PerfectSeparationError

    X, y = make_blobs(n_samples=30, centers=[[0, 0], [4, 4]], cluster_std=0.5, random_state=0)
    with pytest.raises(PerfectSeparationError, match="fit with penalty='l2'"):
        FederatedLogisticRegression().fit(X, y)
    assert FederatedLogisticRegression(penalty="l2").fit(X, y).score(X, y) == 1.0
