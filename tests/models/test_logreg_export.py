"""Export of a federated logistic regression: scikit-learn Pipeline and JSON model file round trip."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

import ehr_fed
from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.federation.testing import make_tables
from ehr_fed.models import FederatedLogisticRegression, load_model
from ehr_fed.models.base import FeaturePreprocessor


@pytest.fixture(scope="module")
def tables():
    return make_tables((300, 400, 350), seed=21)


@pytest.fixture(scope="module", params=[("none", True), ("l2", True), ("none", False)],
                ids=["none", "l2", "no-intercept"])
def model(request, tables):
    penalty, intercept = request.param
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=1.0), encrypted=False,
                                study="readmission_30d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FederatedLogisticRegression(penalty=penalty, C=0.3, fit_intercept=intercept,
                                           encrypted=False).fit(fed)


def test_to_sklearn_gives_the_same_probabilities(model, tables):
    pipe = model.to_sklearn()
    assert isinstance(pipe, Pipeline)
    assert isinstance(pipe.named_steps["preprocess"], FeaturePreprocessor)
    for table in tables.values():
        np.testing.assert_allclose(pipe.predict_proba(table), model.predict_proba(table), rtol=0, atol=1e-10)
        np.testing.assert_array_equal(pipe.predict(table), model.predict(table))
        np.testing.assert_allclose(pipe.decision_function(table), model.decision_function(table), atol=1e-10)
    assert list(pipe[:-1].get_feature_names_out()) == list(model.terms_)
    # a plain pickle round trip (how scikit-learn models are shipped) keeps it working
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(again.predict_proba(tables["site_a"]), pipe.predict_proba(tables["site_a"]))


def test_exported_logistic_regression_holds_the_standardized_coefficients(model):
    lr = model.to_sklearn().named_steps["logreg"]
    beta = model.beta_
    np.testing.assert_array_equal(lr.coef_.ravel(), beta[1:] if model.fit_intercept else beta)
    np.testing.assert_array_equal(lr.classes_, [0, 1])


def test_save_and_load_round_trip(model, tables, tmp_path):
    path = tmp_path / "model.json"
    model.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "ehr-fed-model" and doc["format_version"] == 1 and doc["kind"] == "logreg"
    assert doc["study_id"] == "readmission_30d"
    assert [f["name"] for f in doc["feature_schema"]] == list(model.feature_names_in_)
    assert all(f["dtype"] == "float64" for f in doc["feature_schema"])
    assert doc["ehr_fed_version"] == ehr_fed.__version__
    loaded = ehr_fed.load_model(path)
    assert isinstance(loaded, FederatedLogisticRegression)
    assert loaded.get_params() == model.get_params()
    for table in tables.values():
        np.testing.assert_array_equal(loaded.predict_proba(table), model.predict_proba(table))
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    assert loaded.summary().equals(model.summary())
    assert loaded.study_id_ == "readmission_30d" and loaded.n_iter_ == model.n_iter_
    assert load_model(path).to_sklearn().predict_proba(tables["site_b"]).shape == (400, 2)


def test_save_of_an_unfitted_model_fails(tmp_path):
    with pytest.raises(ValueError, match="not fitted yet"):
        FederatedLogisticRegression().save(tmp_path / "m.json")
    with pytest.raises(ValueError, match="not fitted yet"):
        FederatedLogisticRegression().to_sklearn()
