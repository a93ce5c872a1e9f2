"""Federated models with the scikit-learn estimator API.

``FederatedLogisticRegression`` (Newton-Raphson on encrypted pooled sums) and, imported on first use,
``FederatedGradientBoostingClassifier`` (:mod:`ehr_fed.models.gbdt`). Model files: :func:`load_model`.
"""

from __future__ import annotations

from typing import Any

from ehr_fed.models import logreg_tasks  # noqa: F401  (registers the logreg site tasks)
from ehr_fed.models.logreg import FederatedLogisticRegression
from ehr_fed.models.logreg_newton import PerfectSeparationError, SingularInformationError
from ehr_fed.models.persistence import ModelFormatError, load_model

__all__ = [
    "FederatedGradientBoostingClassifier",
    "FederatedLogisticRegression",
    "ModelFormatError",
    "PerfectSeparationError",
    "SingularInformationError",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name == "FederatedGradientBoostingClassifier":
        from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

        return FederatedGradientBoostingClassifier
    raise AttributeError(f"module 'ehr_fed.models' has no attribute {name!r}")
