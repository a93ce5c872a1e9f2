"""Federated gradient boosting (XGBoost's objective and split gain over summed, encrypted histograms).

One stage per module, as scikit-learn's histogram boosting: :mod:`.binning` (cuts -> bins),
:mod:`.histogram` (quantised gradients -> histograms), :mod:`.splitting` (gain, leaf weights),
:mod:`.grower` (one tree, level by level), :mod:`.predictor` (trees, margins),
:mod:`.xgboost_json` (XGBoost's model format); :mod:`.tasks` (what a site computes),
:mod:`.federated` (the coordinator's histogram requests), :mod:`.estimator` (the scikit-learn estimator),
:mod:`.persistence` (model files).
"""

from . import tasks  # noqa: F401  (registers the gbdt.* site tasks)
from .estimator import FederatedGradientBoostingClassifier
from .persistence import load_gbdt, save_gbdt

__all__ = ["FederatedGradientBoostingClassifier", "load_gbdt", "save_gbdt"]
