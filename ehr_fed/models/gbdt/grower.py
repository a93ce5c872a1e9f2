"""Growing one tree level by level (XGBoost's ``grow_policy="depthwise"``) from released splits.

The grower never sees rows, nor histograms. For each level it sends a :class:`.release.LevelRequest` to a
source and gets back the level's release (:mod:`.release`): per node the best split and its children's
sums, or "leaf". The same code grows a tree from a pooled table (:class:`LocalHistogramSource`, which
computes the histograms itself and releases them with the same :class:`.release.LevelReleaser` the
decrypting site runs) and from a federation (``federated.FederatedHistogramSource``: one ``secure_sum`` per
level, split search at the decrypting site). Histogram subtraction: of two siblings only the smaller one
(fewer rows; fewer Hessian when counts are not collected) is requested, the other is ``parent - sibling``,
derived where the parent's summed histogram is kept (``sibling="both"`` requests both instead). Nodes at the
maximum depth are leaves: their totals come with their parent's split, so a depth-``d`` tree costs ``d``
rounds, not ``d + 1``. Splits are searched on the histograms with small bins merged
(:func:`.splitting.merge_small_bins`), the same for every source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .binning import BinMapper
from .histogram import build_histograms, logistic_grad_hess, quantize
from .predictor import Tree, apply_tree, base_margin
from .release import LevelGrower, LevelReleaser, LevelRequest
from .splitting import SplitParams

__all__ = ["HistogramSource", "LocalHistogramSource", "GrowParams", "grow_tree"]


class HistogramSource(Protocol):
    """Where the release of a tree level comes from."""

    def begin_tree(self, trees: list[Tree]) -> None:
        """Called before each tree with the trees grown so far (margins must include them)."""

    def release(self, tree: Tree, request: LevelRequest, params: GrowParams) -> np.ndarray:
        """Release rows (:data:`.release.RELEASE_COLUMNS`) of ``request.level``, in that order."""


@dataclass(frozen=True)
class GrowParams:
    max_depth: int
    learning_rate: float
    split: SplitParams
    sibling: str = "derive"  # "derive": parent - smaller child where the sums are; "both": request both
    leaf_bound: float | None = None  # a private training's leaf clamp (see .release.NoisyRelease)


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
        self.releaser = LevelReleaser()
        self.n_cuts = mapper.n_cuts()
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

    def release(self, tree: Tree, request: LevelRequest, params: GrowParams) -> np.ndarray:
        """The level's release from the pooled histograms, as a decrypting site computes it."""
        computed = self.histograms(tree, list(request.nodes))
        return self.releaser.release((self._n_applied, id(tree)), request, computed, self.n_cuts, params.split,
                                     keep=params.sibling == "derive")


def grow_tree(source: HistogramSource, mapper: BinMapper, params: GrowParams) -> Tree:
    """Grow one tree; the histogram source must have had ``begin_tree`` called."""
    grower = LevelGrower(params.split, params.max_depth, params.learning_rate, mapper.threshold, mapper.n_cuts(),
                         params.sibling, leaf_bound=params.leaf_bound)
    while not grower.done:
        request = grower.request()
        grower.apply(source.release(grower.tree, request, params), request.level)
    return grower.tree
