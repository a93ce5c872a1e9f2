import numpy as np

from ehr_fed.models.gbdt.binning import BinMapper, local_bin_edges
from ehr_fed.models.gbdt.grower import GrowParams, LocalHistogramSource, grow_tree
from ehr_fed.models.gbdt.histogram import build_histograms
from ehr_fed.models.gbdt.predictor import apply_tree
from ehr_fed.models.gbdt.splitting import SplitParams

from .conftest import make_data


class RecordingSource(LocalHistogramSource):
    """Records the requested nodes; with ``subtract=False`` the grower's subtraction is checked."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.requests = []

    def histograms(self, tree, nodes):
        self.requests.append(list(nodes))
        return super().histograms(tree, nodes)


def _setup(n=2000, max_bin=16):
    X, y = make_data(n, 5)
    mapper = BinMapper(local_bin_edges(X, max_bin), max_bin)
    src = RecordingSource(X, y, mapper, base_score=float(y.mean()), precision=12)
    src.begin_tree([])
    return X, y, mapper, src


def test_one_request_per_level_and_only_the_smaller_sibling():
    X, y, mapper, src = _setup()
    params = GrowParams(max_depth=4, learning_rate=0.3, split=SplitParams(precision=12, min_count=10))
    tree = grow_tree(src, mapper, params)
    assert tree.depth() == 4
    # one round per level that splits: depth-4 leaves never need histograms
    assert len(src.requests) == 4 and src.requests[0] == [0]
    depth = {0: 0}
    for nid in range(1, tree.n_nodes):
        depth[nid] = depth[tree.parent[nid]] + 1
    assert max(depth[nid] for level in src.requests for nid in level) == 3
    for level in src.requests[1:]:
        for nid in level:
            sib = nid + 1 if tree.left[tree.parent[nid]] == nid else nid - 1
            assert tree.count[nid] <= tree.count[sib]
    # the subtracted siblings' statistics equal a direct computation
    row_node = apply_tree(tree, src.X32)
    direct = build_histograms(src.bins, src.gq, src.hq, row_node, np.arange(tree.n_nodes), mapper.n_bins)
    leaves = [i for i in range(tree.n_nodes) if tree.is_leaf(i)]
    for nid in leaves:
        assert tree.count[nid] == direct[nid, 0, :, 2].sum() == (row_node == nid).sum()
        assert np.isclose(tree.sum_hessian[nid], direct[nid, 0, :, 1].sum() * 2.0**-12)


def test_tree_shape_leaf_values_and_min_count():
    X, y, mapper, src = _setup()
    params = GrowParams(max_depth=3, learning_rate=0.5, split=SplitParams(precision=12, min_count=50))
    tree = grow_tree(src, mapper, params)
    assert tree.depth() <= 3
    for nid in range(tree.n_nodes):
        if tree.is_leaf(nid):
            assert tree.count[nid] >= 50
            assert np.float32(tree.leaf_value[nid]) == np.float32(0.5 * tree.base_weight[nid])
        else:
            assert tree.left[nid] > nid and tree.right[nid] == tree.left[nid] + 1
            assert tree.loss_change[nid] > 0


def test_no_valid_split_gives_a_single_leaf():
    X, y, mapper, src = _setup(n=200)
    params = GrowParams(max_depth=3, learning_rate=0.3, split=SplitParams(precision=12, min_count=150))
    tree = grow_tree(src, mapper, params)
    assert tree.n_nodes == 1 and tree.count[0] == 200
