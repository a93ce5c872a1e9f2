import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier as GBC

from .conftest import FEATURES, make_data, split_sites

SMALL = dict(n_estimators=4, max_depth=3, max_bin=16, learning_rate=0.3)


def _same_trees(a, b):
    assert len(a.trees_) == len(b.trees_)
    for s, t in zip(a.trees_, b.trees_, strict=True):
        assert s.to_routing() == t.to_routing()
        assert s.count == t.count and s.sum_hessian == t.sum_hessian and s.loss_change == t.loss_change


@pytest.fixture(scope="module")
def fed_plain_model(plain_fed):
    return GBC(encrypted=False, **SMALL).fit(plain_fed)


def test_federated_trees_identical_to_pooled_learner_with_the_same_bins(fed_plain_model, small_data):
    pooled_table = pd.concat(small_data["tables"].values(), ignore_index=True)
    pooled = GBC(bin_edges=fed_plain_model.bin_edges_, **SMALL).fit(pooled_table)
    _same_trees(fed_plain_model, pooled)
    assert fed_plain_model.base_score_ == pooled.base_score_
    assert list(fed_plain_model.feature_names_in_) == FEATURES
    assert fed_plain_model.n_samples_ == 3000
    assert np.array_equal(fed_plain_model.predict_proba(pooled_table), pooled.predict_proba(pooled_table))


def test_encrypted_federation_grows_identical_trees(fed_plain_model, encrypted_fed):
    enc = GBC(encrypted=True, **SMALL).fit(encrypted_fed)  # the sites derive the same cuts from their sketch
    assert all(np.array_equal(a, b) for a, b in zip(enc.bin_edges_, fed_plain_model.bin_edges_, strict=True))
    _same_trees(fed_plain_model, enc)


def test_bin_edges_come_from_federated_quantiles(fed_plain_model, plain_fed):
    from ehr_fed.stats.federated import federated_bin_edges

    edges = federated_bin_edges(plain_fed, FEATURES, 16)
    for name, cuts in zip(FEATURES, fed_plain_model.bin_edges_, strict=True):
        assert np.array_equal(cuts, np.unique(edges[name].astype(np.float32)))


def test_test_auc_close_to_pooled_xgboost():
    X, y = make_data(20000, 10)
    Xt, yt = make_data(20000, 11)
    from ehr_fed.federation import Federation

    params = dict(n_estimators=30, max_depth=4, learning_rate=0.1, max_bin=64, reg_lambda=1.0, gamma=0.0,
                  min_child_weight=1.0)
    with Federation.in_process(split_sites(X, y, 4, seed=3), encrypted=False) as fed:
        ours = GBC(encrypted=False, **params).fit(fed)
    ref = xgb.XGBClassifier(tree_method="hist", **params).fit(X, y)
    auc_ours = roc_auc_score(yt, ours.predict_proba(Xt)[:, 1])
    auc_xgb = roc_auc_score(yt, ref.predict_proba(Xt)[:, 1])
    assert auc_xgb > 0.75
    assert abs(auc_ours - auc_xgb) < 0.005


def test_leaves_respect_the_policy_minimum_cell_count(fed_plain_model):
    for t in fed_plain_model.trees_:
        assert min(t.count[i] for i in range(t.n_nodes) if t.is_leaf(i)) >= 10


def test_hessian_rule_floors_min_child_weight(plain_fed, fed_plain_model):
    m = GBC(encrypted=False, min_count_rule="hessian", min_cell_count=40, **SMALL).fit(plain_fed)
    for t in m.trees_:
        for i in range(t.n_nodes):
            if t.is_leaf(i):
                assert t.sum_hessian[i] >= 10.0  # 40 / 4: hence at least 40 rows, as h <= 0.25


def test_sites_refuse_a_minimum_count_below_their_policy(plain_fed, fed_plain_model):
    with pytest.raises(Exception, match="minimum cell count 10"):
        GBC(encrypted=False, min_cell_count=5, bin_edges=fed_plain_model.bin_edges_, **SMALL).fit(plain_fed)


def test_sites_with_a_small_cell_rule_refuse_cuts_given_by_the_analyst(plain_fed, fed_plain_model):
    """bin_edges are not derived from a sketch the sites contributed to: refused with what to do instead."""
    with pytest.raises(Exception, match=r"bin cuts are given, not derived .*leave bin_edges unset"):
        GBC(encrypted=False, bin_edges=fed_plain_model.bin_edges_, **SMALL).fit(plain_fed)


def test_encrypted_model_needs_an_encrypting_federation(plain_fed):
    with pytest.raises(ValueError, match=r"encrypted=True\) needs an encrypting federation"):
        GBC(**SMALL).fit(plain_fed)


def test_stateless_sites_recompute_from_the_trees_in_the_request(plain_fed, fed_plain_model):
    from ehr_fed.models.gbdt import tasks as site_tasks

    calls = []

    def progress(info):
        calls.append(info)
        site_tasks.clear_cache()

    m = GBC(encrypted=False, **SMALL).fit(plain_fed, progress=progress)
    _same_trees(fed_plain_model, m)
    assert [c["tree"] for c in calls] == [1, 2, 3, 4] and calls[-1]["n_estimators"] == 4


def test_sklearn_contract(fed_plain_model, small_data):
    est = GBC(n_estimators=7, max_depth=2, gamma=0.5, hessian_export="strip")
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "trees_")
    with pytest.raises(AttributeError, match="This FederatedGradientBoostingClassifier instance is not fitted yet"):
        c.predict_proba(small_data["Xt"])
    p = fed_plain_model.predict_proba(small_data["tables"]["site_0"])
    assert p.shape == (len(small_data["tables"]["site_0"]), 2) and np.allclose(p.sum(axis=1), 1)
    assert set(fed_plain_model.predict(small_data["Xt"])) <= {0, 1}
    fi = fed_plain_model.feature_importances_
    assert fi.shape == (8,) and np.isclose(fi.sum(), 1.0) and np.argmax(fi) in (0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="X has 7 features, but FederatedGradientBoostingClassifier is "
                                         "expecting 8 features"):
        fed_plain_model.predict_proba(small_data["Xt"][:, :7])


@pytest.mark.parametrize("bad, message", [
    (dict(n_estimators=0), "n_estimators must be an int >= 1"),
    (dict(min_count_rule="rows"), "min_count_rule must be one of"),
    (dict(hessian_export="hide"), "hessian_export must be one of"),
    (dict(learning_rate=0.0), r"learning_rate must be in \(0, 1\]"),
])
def test_invalid_parameters_are_reported(small_data, bad, message):
    with pytest.raises(ValueError, match=message):
        GBC(**bad).fit(small_data["X"], small_data["y"])


def test_save_and_load_through_the_model_registry(fed_plain_model, small_data, tmp_path):
    from ehr_fed.models import load_model

    path = fed_plain_model.save(tmp_path / "gbdt.json")
    loaded = load_model(path)
    assert isinstance(loaded, GBC)
    assert loaded.get_params()["n_estimators"] == 4
    assert np.array_equal(loaded.predict_proba(small_data["Xt"]), fed_plain_model.predict_proba(small_data["Xt"]))
    assert list(loaded.feature_names_in_) == FEATURES
