"""Saving and loading through the model registry (:mod:`ehr_fed.models.persistence`, kind ``gbdt``).

The state is the XGBoost JSON document itself (with Hessian sums as the model's ``hessian_export`` says)
plus the bin edges and training counts, so a saved file can be turned into an XGBoost model without
ehr-fed, and a loaded model predicts exactly as the saved one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ehr_fed.models.persistence import register_loader, write_model_document

from .estimator import FederatedGradientBoostingClassifier

__all__ = ["save_gbdt", "load_gbdt"]


def save_gbdt(model: FederatedGradientBoostingClassifier, path: str | Path) -> Path:
    """Write ``model`` as an ehr-fed model file of kind ``gbdt``."""
    from ehr_fed.models.base import check_is_fitted

    check_is_fitted(model, "trees_")
    params = {k: v for k, v in model.get_params().items() if k != "bin_edges"}
    state = {
        "xgboost": model.to_xgboost_json(),
        "base_score": float(model.base_score_),
        "bin_edges": [np.asarray(c, dtype=np.float64).tolist() for c in getattr(model, "bin_edges_", [])],
        "n_samples": int(getattr(model, "n_samples_", 0)),
        "n_positives": int(getattr(model, "n_positives_", 0)),
    }
    return write_model_document(path, kind="gbdt", params=params, state=state,
                                feature_names=[str(n) for n in model.feature_names_in_],
                                study_id=getattr(getattr(model, "study_spec_", None), "study_id", None),
                                study=getattr(model, "study_spec_", None), dp=getattr(model, "dp_", None),
                                training=getattr(model, "transcript_", None))


@register_loader("gbdt")
def load_gbdt(doc: dict[str, Any]) -> FederatedGradientBoostingClassifier:
    """The fitted estimator of a ``gbdt`` model document."""
    state = doc["state"]
    model = FederatedGradientBoostingClassifier.from_xgboost_json(state["xgboost"], **doc.get("params", {}))
    model.base_score_ = float(state["base_score"])
    model.feature_names_in_ = np.asarray([f["name"] for f in doc["feature_schema"]], dtype=object)
    model.bin_edges_ = [np.asarray(c, dtype=np.float32) for c in state.get("bin_edges", [])]
    model.n_samples_ = int(state.get("n_samples", 0))
    model.n_positives_ = int(state.get("n_positives", 0))
    return model
