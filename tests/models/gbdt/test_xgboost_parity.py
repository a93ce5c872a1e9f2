"""The pooled learner without the minimum-count rule, on XGBoost's own cuts, grows XGBoost's trees.

This is what the benchmark ``gbdt_min_count`` relies on when it reads a gap as the rule's, the cuts' or the
fixed-point grid's: with the same cuts, no rule and a fine gradient grid nothing else differs.
"""

import numpy as np
import pytest
import xgboost as xgb

from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier as GBC
from ehr_fed.models.gbdt.predictor import predict_margin

from .conftest import FEATURES, feature_table, make_data

PARAMS = dict(n_estimators=12, max_depth=4, learning_rate=0.3, max_bin=32, reg_lambda=1.0, gamma=0.0,
              min_child_weight=1.0)


def _xgboost_cuts(X, y, max_bin):
    indptr, values = xgb.QuantileDMatrix(X, y, max_bin=max_bin).get_quantile_cut()
    # each feature's cuts without XGBoost's minimum (first) and beyond-maximum (last) sentinels
    return [np.asarray(values[indptr[j] + 1:indptr[j + 1] - 1], dtype=np.float64) for j in range(X.shape[1])]


@pytest.fixture(scope="module")
def fitted():
    X, y = make_data(4000, 21)
    ref = xgb.XGBClassifier(tree_method="hist", n_jobs=1, base_score=float(np.float32(y.mean())),
                            **PARAMS).fit(X, y)
    table = feature_table(X, y, "pooled")
    cuts = _xgboost_cuts(X, y, PARAMS["max_bin"])
    return X, y, ref, table, cuts


def _first_differing_tree(ref, ours, X):
    for k in range(1, len(ours.trees_) + 1):
        mx = ref.predict(X, output_margin=True, iteration_range=(0, k))
        if np.abs(mx - predict_margin(ours.trees_[:k], X, ours.base_score_)).max() > 1e-4:
            return k
    return None


def test_same_cuts_no_rule_fine_grid_gives_xgboosts_trees(fitted):
    X, y, ref, table, cuts = fitted
    ours = GBC(min_cell_count=1, bin_edges=cuts, precision=20, **PARAMS).fit(table[[*FEATURES, "label"]])
    assert _first_differing_tree(ref, ours, X) is None
    booster_trees = ref.get_booster().get_dump()
    assert [t.n_nodes for t in ours.trees_] == [d.count("\n") for d in booster_trees]


def test_the_minimum_count_rule_changes_the_trees(fitted):
    X, y, ref, table, cuts = fitted
    ours = GBC(min_cell_count=50, bin_edges=cuts, precision=20, **PARAMS).fit(table[[*FEATURES, "label"]])
    assert _first_differing_tree(ref, ours, X) is not None
    assert min(min(t.count[n] for n in range(t.n_nodes) if t.is_leaf(n)) for t in ours.trees_) >= 50
