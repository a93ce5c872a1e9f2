"""Growing one tree level by level (XGBoost's ``grow_policy="depthwise"``) from node histograms.

The grower never sees rows. It asks a :class:`HistogramSource` for the histograms of a batch of nodes
(one batch per level), so the same code grows a tree from a pooled table (:class:`LocalHistogramSource`)
and from a federation (``federated.FederatedHistogramSource``: one ``secure_sum`` per level). Histogram
subtraction: of two siblings only the smaller one (fewer rows; fewer Hessian when counts are not
collected) is requested, the other is ``parent - sibling``, exact because histograms are integer sums. Nodes
at the maximum depth are leaves: their totals come with their parent's split, so their histograms are never
requested (a depth-``d`` tree costs ``d`` histogram rounds, not ``d + 1``). Splits are searched on the
histograms with small bins merged (:func:`.splitting.merge_small_bins`), the same for every source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .binning import BinMapper
from .histogram import build_histograms, logistic_grad_hess, quantize
from .predictor import Tree, apply_tree, base_margin
from .splitting import SplitParams, find_best_split, leaf_weight, merge_small_bins, node_totals

__all__ = ["HistogramSource", "LocalHistogramSource", "GrowParams", "grow_tree"]


class HistogramSource(Protocol):
    """Where node histograms come from."""

    def begin_tree(self, trees: list[Tree]) -> None:
        """Called before each tree with the trees grown so far (margins must include them)."""

    def histograms(self, tree: Tree, nodes: list[int]) -> np.ndarray:
        """int64 histograms of shape (len(nodes), n_features, n_bins, 3) of the given nodes of ``tree``."""


@dataclass(frozen=True)
class GrowParams:
    max_depth: int
    learning_rate: float
    split: SplitParams


class LocalHistogramSource:
    """Histograms from one in-memory table (the pooled learner, and each site's own computation).

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    y : ndarray of shape (n_rows,), 0/1
    mapper : BinMapper
    base_score : float
    precision : int
        Fractional bits of the quantised gradients.
    learning_rate : float
        Only used to reproduce margins; leaf values already carry it.
    """

    def __init__(self, X, y, mapper: BinMapper, base_score: float, precision: int):
        self.X32 = np.asarray(X, dtype=np.float64).astype(np.float32)
        self.y = np.asarray(y, dtype=np.float64)
        self.bins = mapper.transform(self.X32)
        self.n_bins = mapper.n_bins
        self.precision = precision
        self.margin = np.full(self.X32.shape[0], base_margin(base_score), dtype=np.float32)
        self._n_applied = 0
        self.gq = self.hq = None

    def begin_tree(self, trees: list[Tree]) -> None:
        for tree in trees[self._n_applied:]:
            leaf = np.asarray(tree.leaf_value, dtype=np.float32)
            self.margin += leaf[apply_tree(tree, self.X32)]
        self._n_applied = len(trees)
        g, h = logistic_grad_hess(self.margin, self.y)
        self.gq, self.hq = quantize(g, self.precision), quantize(h, self.precision)

    def histograms(self, tree: Tree, nodes: list[int]) -> np.ndarray:
        row_node = apply_tree(tree, self.X32)
        return build_histograms(self.bins, self.gq, self.hq, row_node, np.asarray(nodes), self.n_bins)


def _set_stats(tree: Tree, nid: int, totals: tuple[int, int, int], params: SplitParams) -> None:
    s = params.scale
    G, H = totals[0] * s, totals[1] * s
    tree.base_weight[nid] = float(np.float32(leaf_weight(G, H, params)))
    tree.sum_hessian[nid] = H
    tree.count[nid] = int(totals[2])


def grow_tree(source: HistogramSource, mapper: BinMapper, params: GrowParams) -> Tree:
    """Grow one tree; the histogram source must have had ``begin_tree`` called."""
    sp = params.split
    n_cuts = mapper.n_cuts()
    tree = Tree()
    hists = {0: source.histograms(tree, [0])[0]}
    totals = {0: node_totals(hists[0])}
    _set_stats(tree, 0, totals[0], sp)
    level = [0]
    for depth in range(params.max_depth):
        pairs = []
        merged = merge_small_bins(np.stack([hists[nid] for nid in level]), sp)  # the min-count rule
        for i, nid in enumerate(level):
            info = find_best_split(merged[i], n_cuts, sp)
            if info is None:
                continue
            if info.bin < n_cuts[info.feature]:
                thr = mapper.threshold(info.feature, info.bin)
            else:  # all observed values left, missing right
                thr = np.finfo(np.float32).max
            lo, hi = tree.split(nid, info.feature, info.bin, thr, info.default_left, info.gain)
            totals[lo], totals[hi] = info.left, info.right
            _set_stats(tree, lo, info.left, sp)
            _set_stats(tree, hi, info.right, sp)
            pairs.append((nid, lo, hi))
        if not pairs or depth == params.max_depth - 1:
            break  # the children of the last level are leaves: their totals came with the split
        key = 2 if sp.use_count else 1
        small = [lo if totals[lo][key] <= totals[hi][key] else hi for _, lo, hi in pairs]
        got = source.histograms(tree, small)
        new = {}
        for (parent, lo, hi), s, h in zip(pairs, small, got, strict=True):
            other = hi if s == lo else lo
            new[s] = h
            new[other] = hists[parent] - h
        hists = new
        level = [nid for _, lo, hi in pairs for nid in (lo, hi)]
    for nid in range(tree.n_nodes):
        if tree.is_leaf(nid):
            tree.leaf_value[nid] = float(np.float32(params.learning_rate * tree.base_weight[nid]))
    return tree
