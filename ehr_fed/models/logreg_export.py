"""Export of a fitted federated logistic regression: a scikit-learn Pipeline and the JSON model file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ehr_fed.models.base import FeaturePreprocessor
from ehr_fed.models.persistence import register_loader, write_model_document

KIND = "logreg"
#: version of the ``state`` layout of a logreg model file
STATE_VERSION = 1


def to_sklearn_pipeline(model: Any):
    """A fitted ``Pipeline([("preprocess", FeaturePreprocessor), ("logreg", LogisticRegression)])``.

    The preprocessor carries the pooled imputation means, missing indicators and standardization; the
    ``LogisticRegression`` carries the standardized coefficients. It takes the same feature table as the
    federated model and returns the same probabilities.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    prep = FeaturePreprocessor.from_state(model.preprocessor_.get_state())
    lr = LogisticRegression(C=float(model.C) if model.penalty == "l2" else np.inf,
                            fit_intercept=bool(model.fit_intercept), max_iter=int(model.max_iter),
                            tol=float(model.tol), solver="newton-cholesky")
    beta = np.asarray(model.beta_, dtype=float)
    lr.coef_ = (beta[1:] if model.fit_intercept else beta)[None, :].copy()
    lr.intercept_ = np.array([beta[0] if model.fit_intercept else 0.0])
    lr.classes_ = np.array([0, 1])
    lr.n_features_in_ = lr.coef_.shape[1]
    lr.n_iter_ = np.array([int(model.n_iter_)], dtype=np.int32)
    return Pipeline([("preprocess", prep), ("logreg", lr)])


def model_state(model: Any) -> dict[str, Any]:
    """The fitted state of a model as plain data."""
    return {
        "state_version": STATE_VERSION,
        "preprocessor": model.preprocessor_.get_state(),
        "beta_standardized": np.asarray(model.beta_).tolist(),
        "information_standardized": np.asarray(model.information_).tolist(),
        "terms": [str(t) for t in model.terms_],
        "coef": np.asarray(model.coef_).ravel().tolist(),
        "intercept": float(model.intercept_[0]),
        "covariance": np.asarray(model.covariance_).tolist(),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "loglik": float(model.loglik_),
        "n_samples": int(model.n_samples_),
        "n_positives": int(model.n_positives_),
        "n_sites": int(model.n_sites_),
        "dropped_terms": list(model.dropped_terms_),
        "history": list(model.history_),
    }


def save_logreg(model: Any, path: str | os.PathLike) -> None:
    """Write ``model`` as a versioned JSON model file (kind ``logreg``)."""
    write_model_document(
        path, kind=KIND, params=model.get_params(), state=model_state(model),
        feature_names=[str(n) for n in model.feature_names_in_], study_id=model.study_id_,
        study=getattr(model, "study_spec_", None), training=getattr(model, "transcript_", None),
    )


@register_loader(KIND)
def load_logreg(doc: dict[str, Any]):
    """Rebuild a fitted :class:`~ehr_fed.models.FederatedLogisticRegression` from its model document."""
    from ehr_fed.models.logreg import FederatedLogisticRegression
    from ehr_fed.models.persistence import ModelFormatError

    st = doc["state"]
    if st.get("state_version", 0) > STATE_VERSION:
        raise ModelFormatError(f"logreg state version {st.get('state_version')} is newer than this ehr-fed "
                               f"reads ({STATE_VERSION}); upgrade ehr-fed")
    model = FederatedLogisticRegression(**doc["params"])
    prep = FeaturePreprocessor.from_state(st["preprocessor"])
    schema = [f["name"] for f in doc["feature_schema"]]
    if schema != list(prep.feature_names_in_):
        raise ModelFormatError("the feature_schema of the model file does not match its preprocessor state")
    model.preprocessor_ = prep
    model.feature_names_in_ = np.asarray(schema, dtype=object)
    model.n_features_in_ = len(schema)
    model.terms_ = np.asarray(st["terms"], dtype=object)
    model.beta_ = np.asarray(st["beta_standardized"], dtype=float)
    model.information_ = np.asarray(st["information_standardized"], dtype=float)
    model.coef_ = np.asarray(st["coef"], dtype=float)[None, :]
    model.intercept_ = np.array([st["intercept"]], dtype=float)
    model.covariance_ = np.asarray(st["covariance"], dtype=float)
    model.classes_ = np.array([0, 1])
    model.n_iter_, model.converged_, model.loglik_ = st["n_iter"], st["converged"], st["loglik"]
    model.n_samples_, model.n_positives_, model.n_sites_ = st["n_samples"], st["n_positives"], st["n_sites"]
    model.dropped_terms_ = list(st.get("dropped_terms", []))
    model.history_ = list(st.get("history", []))
    model.study_id_ = doc.get("study_id")
    return model
