"""The boosting minimum-count rule: splits are searched on histograms whose small bins are merged."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.models.gbdt.binning import BinMapper, local_bin_edges
from ehr_fed.models.gbdt.grower import GrowParams, LocalHistogramSource, grow_tree
from ehr_fed.models.gbdt.histogram import build_histograms
from ehr_fed.models.gbdt.predictor import apply_tree
from ehr_fed.models.gbdt.splitting import SplitParams, merge_small_bins

from .conftest import make_data


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("use_count", [True, False])
def test_merged_groups_keep_sums_and_hold_the_minimum(seed, use_count):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.uniform(0.2, 4), size=(3, 4, 17))
    counts[:, :, rng.random(17) < 0.3] = 0
    hess = counts * rng.integers(1, 2**10, size=counts.shape)  # precision 12: h_q <= 2**10 per row
    hist = np.stack([rng.integers(-50, 50, size=counts.shape) * (counts > 0), hess, counts], axis=-1)
    sp = SplitParams(min_count=10, precision=12, use_count=use_count)
    out = merge_small_bins(hist, sp)
    np.testing.assert_array_equal(out.sum(axis=2), hist.sum(axis=2))
    key = out[..., 2] if use_count else out[..., 1]
    need = 10 if use_count else 10 * 2**10
    nodes_ok = (hist[..., 2].sum(axis=2) >= 10) if use_count else (hist[..., 1].sum(axis=2) >= need)
    for i, j in zip(*np.nonzero(nodes_ok), strict=True):
        nz = key[i, j][key[i, j] > 0]
        assert np.all(nz >= need)
        assert np.all(out[i, j, :, 2][out[i, j, :, 2] > 0] >= 10)  # rows, either way
        # sums sit where the group ends: cumulative counts agree with the raw ones at each sum bin
        cut = np.flatnonzero(out[i, j, :-1].any(axis=1))
        if out[i, j, -1, 2] != hist[i, j, -1, 2]:  # small missing bin: counted with the last value group
            assert out[i, j, -1, 2] == 0
            cut = cut[:-1]
        np.testing.assert_array_equal(np.cumsum(out[i, j, :-1, 2])[cut], np.cumsum(hist[i, j, :-1, 2])[cut])


def test_idempotent():
    X, y = make_data(600, 3)
    mapper = BinMapper(local_bin_edges(X, 32), 32)
    src = LocalHistogramSource(X, y, mapper, base_score=float(y.mean()), precision=12)
    src.begin_tree([])
    h = src.histograms(grow_tree.__globals__["Tree"](), [0])
    sp = SplitParams(min_count=10, precision=12)
    once = merge_small_bins(h, sp)
    np.testing.assert_array_equal(merge_small_bins(once, sp), once)


@pytest.mark.parametrize("use_count", [True, False])
def test_trees_route_rows_as_the_merged_histograms_count_them(use_count):
    """Every node of a grown tree holds the rows the merged histograms said (thresholds and missing
    directions agree with the merging), and no node or bin group below the minimum was split on."""
    X, y = make_data(3000, 11)
    mapper = BinMapper(local_bin_edges(X, 64), 64)
    src = LocalHistogramSource(X, y, mapper, base_score=float(y.mean()), precision=12)
    src.begin_tree([])
    sp = SplitParams(min_count=25, precision=12, use_count=use_count)
    tree = grow_tree(src, mapper, GrowParams(max_depth=5, learning_rate=0.3, split=sp))
    assert tree.n_nodes > 7
    row_node = apply_tree(tree, src.X32)
    direct = build_histograms(src.bins, src.gq, src.hq, row_node, np.arange(tree.n_nodes), mapper.n_bins)
    rows = direct[:, 0, :, 2].sum(axis=1)
    hess = direct[:, 0, :, 1].sum(axis=1)
    for nid in range(tree.n_nodes - 1, 0, -1):  # children have higher ids: add each node into its parent
        rows[tree.parent[nid]] += rows[nid]
        hess[tree.parent[nid]] += hess[nid]
    assert rows[0] == len(y)
    for nid in range(tree.n_nodes):
        if use_count:
            assert tree.count[nid] == rows[nid]
        assert rows[nid] >= 25
        assert tree.sum_hessian[nid] == hess[nid] * 2.0**-12
