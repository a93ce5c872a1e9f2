import numpy as np
import pytest

from ehr_fed.federation import SiteContext
from ehr_fed.models.gbdt import tasks as site_tasks
from ehr_fed.models.gbdt.binning import BinMapper, local_bin_edges
from ehr_fed.models.gbdt.packing import bin_mask, from_wire
from ehr_fed.models.gbdt.predictor import Tree
from ehr_fed.privacy import DisclosureError, PrivacyPolicy

from .conftest import FEATURES

#: the policy of a local fit's one site (no small-cell rule): it accepts cuts given by the caller
LOCAL = PrivacyPolicy(min_cell_count=1)


def _params(table, trees=(), tree=None, **extra):
    X = table[FEATURES].to_numpy()
    t = tree or Tree()
    p = {
        "training_id": "t1", "features": FEATURES, "cuts": local_bin_edges(X, 8), "cut_source": {"kind": "public"},
        "max_bin": 8,
        "precision": 10, "base_score": 0.3, "channels": 3, "min_count": 10,
        "reg_lambda": 1.0, "gamma": 0.0, "min_child_weight": 1.0, "learning_rate": 0.3, "max_depth": 3,
        "n_estimators": 5, "sibling": "derive", "transcript": [[] for _ in range(len(trees) + 1)],
        "trees": [x.to_routing() for x in trees], "tree": t.to_routing(),
        "level": [0], "nodes": [0], "derive": np.zeros((0, 3), dtype=np.int64),
    }
    p.update(extra)
    return p


def test_histograms_of_the_root_count_every_row_once(small_data):
    table = small_data["tables"]["site_1"]
    ctx = SiteContext(site_id="site_1", policy=LOCAL)
    params = _params(table)
    out = site_tasks.site_histograms(table, params, ctx)
    mapper = BinMapper(params["cuts"], 8)
    mask = bin_mask(mapper.n_cuts(), mapper.n_bins)
    # only real bins travel: each feature's value bins up to its last cut, and its missing bin
    assert out["hist"].size == int(mask.sum()) * 3 <= len(FEATURES) * 9 * 3
    hist = from_wire(out["hist"], mask, 1, 3)
    assert hist.shape == (1, len(FEATURES), 9, 3)
    assert (hist[0, :, :, 2].sum(axis=1) == len(table)).all()
    assert np.array_equal(out["hist"], np.rint(out["hist"]))


def test_a_tree_without_released_splits_is_refused(small_data):
    table = small_data["tables"]["site_1"]
    ctx = SiteContext(site_id="site_1", policy=LOCAL)
    t = Tree()
    lo, hi = t.split(0, 1, 3, 0.0, True, 1.0)
    with pytest.raises(DisclosureError, match=r"\[transcript\].*tree being grown differs from its released splits"):
        site_tasks.site_histograms(table, _params(table, tree=t, level=[lo, hi], nodes=[lo]), ctx)
    with pytest.raises(DisclosureError, match=r"\[transcript\]"):
        site_tasks.site_histograms(table, _params(table, transcript=[]), ctx)


def test_cached_and_recomputed_answers_agree(small_data, monkeypatch):
    # the cache is under test here, not the transcript: crafted trees, accepted
    monkeypatch.setattr(site_tasks, "check_request", lambda params, ctx: None)
    table = small_data["tables"]["site_2"]
    ctx = SiteContext(site_id="site_2", policy=PrivacyPolicy())
    t = Tree()
    lo, hi = t.split(0, 1, 3, 0.0, True, 1.0)
    t.leaf_value[lo], t.leaf_value[hi] = -0.1, 0.2
    site_tasks.clear_cache()
    site_tasks.site_histograms(table, _params(table), ctx)  # warm cache with no trees applied
    warm = site_tasks.site_histograms(table, _params(table, trees=[t], tree=t, nodes=[lo, hi]), ctx)
    site_tasks.clear_cache()
    cold = site_tasks.site_histograms(table, _params(table, trees=[t], tree=t, nodes=[lo, hi]), ctx)
    assert np.array_equal(warm["hist"], cold["hist"])
    # a different history (e.g. another coordinator run with the same id) is not served from the cache
    t.leaf_value[lo] = 0.5
    other = site_tasks.site_histograms(table, _params(table, trees=[t], tree=t, nodes=[lo, hi]), ctx)
    assert not np.array_equal(other["hist"], cold["hist"])


def test_site_refuses_small_leaves_and_reports_schema(small_data):
    table = small_data["tables"]["site_0"]
    ctx = SiteContext(site_id="site_0", policy=PrivacyPolicy(min_cell_count=25))
    with pytest.raises(DisclosureError, match="below this site's minimum cell count 25"):
        site_tasks.site_histograms(table, _params(table), ctx)
    assert site_tasks.site_schema(table, {}, ctx) == {"features": FEATURES}
    stats = site_tasks.site_init(table, {}, ctx)["stats"]
    assert stats.tolist() == [len(table), float(table["label"].sum())]


def test_a_site_with_a_small_cell_rule_refuses_given_cuts_and_a_source_it_cannot_check(small_data):
    table = small_data["tables"]["site_1"]
    ctx = SiteContext(site_id="site_1", policy=PrivacyPolicy())
    with pytest.raises(DisclosureError, match=r"\[transcript\].*bin cuts are given, not derived"):
        site_tasks.site_histograms(table, _params(table), ctx)
    with pytest.raises(DisclosureError, match=r"\[transcript\].*cut_source must be a mapping whose kind"):
        site_tasks.site_histograms(table, _params(table, cut_source={"kind": "trusted"}), ctx)
    with pytest.raises(DisclosureError, match=r"\[transcript\].*keeps no protocol state"):
        site_tasks.site_histograms(table, _params(table, cut_source={"kind": "sketch", "coarse": "{}"}), ctx)
