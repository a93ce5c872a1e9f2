"""What one boosting level releases: the best split of each node, decided where the histograms are summed.

A level request names the nodes of the level (``level``), the nodes whose histograms the sites compute
(``nodes``) and, for every other node of the level, its parent and computed sibling (``derive``: the node's
histogram is ``parent - sibling``, exact on integer sums). Whoever holds the summed histograms (the
decrypting site of a federation, or the pooled reference learner) runs :class:`LevelReleaser`:

1. derives the siblings from the parents' histograms it kept from the level above;
2. refuses the level if a node holds fewer than ``min_count`` rows (with the Hessian rule: a Hessian sum
   below ``min_count / 4``): no node below the minimum is ever offered;
3. merges every node's small bins (:func:`.splitting.merge_small_bins`) and finds its best split among those
   whose both children hold at least ``min_count`` rows (:func:`.splitting.find_best_split`);
4. releases one row per node, never a histogram:

   ``[node, split, feature, bin, default_left, gain, G_L, H_L, C_L, G_R, H_R, C_R]``

   ``split = 1``: the chosen split and its children's quantised (G, H, count) sums; ``split = 0`` (a leaf):
   feature, bin = -1 and the node's own sums in the ``_L`` columns.

Both sides grow the tree from these rows with :class:`LevelGrower` (the coordinator, and every site that
replays the transcript), so the pooled learner, plaintext and encrypted federations take one code path.

Private trainings (``dp`` in the request, see :mod:`.private`): the summed histograms carry noise, so the
release step post-processes them (:class:`NoisyRelease`, from the request's digest-bound DP settings): every
level's histograms are made consistent (:func:`.private.make_consistent`) before the split search, a node
whose noisy total is below ``min_count`` is released as a leaf (its sums are noisy, not exact cells), the
split search uses ``min_child_weight`` raised to the noise, and the growers clamp leaf values and accept a
child's own (noisy) totals differing from those its parent's split released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ehr_fed.privacy import DisclosureError

from .predictor import Tree
from .splitting import SplitParams, find_best_split, leaf_weight, merge_small_bins

__all__ = ["RELEASE_COLUMNS", "LevelRequest", "LevelReleaser", "LevelGrower", "NoisyRelease", "noisy_release",
           "release_level", "split_params"]

RELEASE_COLUMNS = ("node", "split", "feature", "bin", "default_left", "gain",
                   "g_left", "h_left", "c_left", "g_right", "h_right", "c_right")
_W = len(RELEASE_COLUMNS)


@dataclass(frozen=True)
class LevelRequest:
    """The nodes a level asks for (see the module docstring)."""

    level: tuple[int, ...]
    nodes: tuple[int, ...]
    derive: tuple[tuple[int, int, int], ...]  # (node, parent, computed sibling)

    def to_params(self) -> dict:
        return {"level": np.asarray(self.level, dtype=np.int64), "nodes": np.asarray(self.nodes, dtype=np.int64),
                "derive": np.asarray(self.derive, dtype=np.int64).reshape(-1, 3)}

    @classmethod
    def from_params(cls, params: dict) -> LevelRequest:
        try:
            level = tuple(int(v) for v in np.asarray(params["level"], dtype=np.int64).ravel())
            nodes = tuple(int(v) for v in np.asarray(params["nodes"], dtype=np.int64).ravel())
            derive = tuple(tuple(int(x) for x in row)
                           for row in np.asarray(params.get("derive", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a boosting level request needs integer 'level', 'nodes' and 'derive' ({exc})") from None
        return cls(level, nodes, derive)


def split_params(params: dict) -> SplitParams:
    """The split settings of a request (``reg_lambda``, ``gamma``, ``min_child_weight``, ``min_count``, ...);
    in a private training ``min_child_weight`` is raised to the noise (:func:`.private.noisy_min_child_weight`)."""
    mcw = float(params["min_child_weight"])
    if params.get("dp") is not None:
        from .private import noisy_min_child_weight

        mcw = max(mcw, noisy_min_child_weight(params))
    return SplitParams(reg_lambda=float(params["reg_lambda"]), gamma=float(params["gamma"]),
                       min_child_weight=mcw, min_count=int(params["min_count"]),
                       precision=int(params["precision"]), use_count=int(params.get("channels", 3)) == 3)


@dataclass(frozen=True)
class NoisyRelease:
    """How the release step and the growers of a private training treat noisy sums (module docstring).

    ``consistent``: ``(n_nodes, F, B, 3)`` histograms -> the same made consistent; ``leaf_bound``: leaf
    values are clamped to ``[-leaf_bound, leaf_bound]``.
    """

    consistent: Callable[[np.ndarray], np.ndarray]
    leaf_bound: float


def noisy_release(params: dict, mask: np.ndarray) -> NoisyRelease | None:
    """The request's private release settings (None when it is not private); ``mask``: real bins (F, B)."""
    if params.get("dp") is None:
        return None
    from .private import make_consistent

    channels = int(params.get("channels", 3))
    bound = float(params["learning_rate"]) * float(params.get("dp_max_leaf", 1.0))
    return NoisyRelease(consistent=lambda h: make_consistent(h, mask, channels), leaf_bound=bound)


def _small_nodes(hists: np.ndarray, sp: SplitParams) -> np.ndarray:
    totals = hists[:, 0].sum(axis=1)  # (n_nodes, 3)
    if sp.use_count:
        return totals[:, 2] < sp.min_count
    return totals[:, 1] < int(np.ceil(sp.min_count * 2.0 ** (sp.precision - 2)))


def _check_node_sizes(hists: np.ndarray, level: tuple[int, ...], sp: SplitParams) -> None:
    small = _small_nodes(hists, sp)
    if small.any():
        raise DisclosureError(
            f"a boosting request asks for nodes {[level[i] for i in np.flatnonzero(small)][:10]} that hold fewer "
            f"pooled rows than min_cell_count={sp.min_count}; no statistic of such a node is released",
            rule="min_cell_count")


def release_level(hists: np.ndarray, level: tuple[int, ...], n_cuts: np.ndarray, sp: SplitParams,
                  noisy: bool = False) -> np.ndarray:
    """Release rows (``RELEASE_COLUMNS``) of the level's nodes from their histograms (n_nodes, F, B, 3).

    ``noisy`` (a private training): a node below ``min_count`` is released as a leaf instead of refused.
    """
    hists = np.asarray(hists, dtype=np.int64)
    small = _small_nodes(hists, sp) if noisy else np.zeros(len(level), dtype=bool)
    if not noisy:
        _check_node_sizes(hists, level, sp)
    merged = merge_small_bins(hists, sp)
    out = np.zeros((len(level), _W), dtype=np.float64)
    for i, nid in enumerate(level):
        info = None if small[i] else find_best_split(merged[i], n_cuts, sp)
        if info is None:
            t = hists[i, 0].sum(axis=0)
            out[i] = [nid, 0, -1, -1, 0, 0.0, t[0], t[1], t[2], 0, 0, 0]
        else:
            out[i] = [nid, 1, info.feature, info.bin, int(info.default_left), info.gain, *info.left, *info.right]
    return out


class LevelReleaser:
    """Holds the summed histograms of one tree's last level and turns the next level's into release rows."""

    def __init__(self) -> None:
        self.tree_key: object = None
        self.kept: dict[int, np.ndarray] = {}

    def release(self, tree_key: object, request: LevelRequest, computed: np.ndarray, n_cuts: np.ndarray,
                sp: SplitParams, keep: bool = True, noisy: NoisyRelease | None = None) -> np.ndarray:
        """``computed``: summed histograms of ``request.nodes`` (in that order); ``noisy``: a private
        training's post-processing (module docstring)."""
        if tree_key != self.tree_key:
            self.tree_key, self.kept = tree_key, {}
        hist = {nid: computed[i] for i, nid in enumerate(request.nodes)}
        for nid, parent, sibling in request.derive:
            if parent not in self.kept or sibling not in hist:
                raise ValueError(
                    f"node {nid} is to be derived from parent {parent} and sibling {sibling}, but this site does "
                    "not hold that parent's summed histogram (it was restarted, or another site decrypted the "
                    "level above); fit again, or fit with sibling='both'")
            hist[nid] = self.kept[parent] - hist[sibling]
        missing = [nid for nid in request.level if nid not in hist]
        if missing:
            raise ValueError(f"the request names level nodes {missing} that are neither computed nor derived")
        stacked = np.stack([hist[nid] for nid in request.level])
        if noisy is not None:
            stacked = noisy.consistent(stacked)
            hist = {nid: stacked[i] for i, nid in enumerate(request.level)}
        rows = release_level(stacked, request.level, n_cuts, sp, noisy=noisy is not None)
        self.kept = {nid: hist[nid] for nid in request.level} if keep else {}
        return rows


class LevelGrower:
    """Grows one tree from release rows, level by level (XGBoost's depthwise policy).

    Parameters
    ----------
    sp : SplitParams
    max_depth : int
    learning_rate : float
    threshold : callable ``(feature, bin) -> float``
        The cut of a split (from the session's bin cuts).
    n_cuts : ndarray
        Cuts per feature (``bin == n_cuts[feature]``: all observed values left, missing right).
    sibling : {"derive", "both"}
        Request only the smaller child of each split (the other is derived) or both children.
    leaf_bound : float or None
        A private training's leaf clamp (:class:`NoisyRelease`); it also accepts a node's own noisy totals
        differing from those its parent's split released. None: exact sums, checked.
    """

    def __init__(self, sp: SplitParams, max_depth: int, learning_rate: float,
                 threshold: Callable[[int, int], float], n_cuts: np.ndarray, sibling: str = "derive",
                 leaf_bound: float | None = None):
        self.sp, self.max_depth, self.learning_rate = sp, int(max_depth), float(learning_rate)
        self.leaf_bound = leaf_bound
        self.threshold, self.n_cuts, self.sibling = threshold, np.asarray(n_cuts), sibling
        self.tree = Tree()
        self.totals: dict[int, tuple[int, int, int]] = {}
        self.depth = 0
        self.pairs: list[tuple[int, int, int]] = []
        self.done = False

    def request(self) -> LevelRequest:
        """What the next level needs."""
        if self.done:
            raise ValueError("the tree is finished: it requests no further level")
        if self.depth == 0:
            return LevelRequest((0,), (0,), ())
        level = tuple(nid for _, lo, hi in self.pairs for nid in (lo, hi))
        if self.sibling == "both":
            return LevelRequest(level, level, ())
        key = 2 if self.sp.use_count else 1
        nodes, derive = [], []
        for parent, lo, hi in self.pairs:
            small, other = (lo, hi) if self.totals[lo][key] <= self.totals[hi][key] else (hi, lo)
            nodes.append(small)
            derive.append((other, parent, small))
        return LevelRequest(level, tuple(nodes), tuple(derive))

    def apply(self, rows: np.ndarray, level: tuple[int, ...]) -> None:
        """Apply the release rows of ``level``; raises ValueError when they do not fit the tree."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.shape != (len(level), _W) or not np.array_equal(rows[:, 0], np.asarray(level, dtype=np.float64)):
            raise ValueError(f"release rows of shape {rows.shape} do not answer the level {list(level)}")
        if not np.isfinite(rows).all() or (rows[:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]] % 1 != 0).any():
            raise ValueError("release rows hold non-integer node ids, flags or sums")
        tree, pairs = self.tree, []
        for row in rows:
            nid, is_split = int(row[0]), int(row[1])
            left, right = tuple(int(v) for v in row[6:9]), tuple(int(v) for v in row[9:12])
            total = tuple(a + b for a, b in zip(left, right, strict=True)) if is_split else left
            if self.leaf_bound is None and nid in self.totals and self.totals[nid] != total:
                raise ValueError(f"node {nid}'s released sums differ from those its parent's split released")
            self.totals[nid] = total
            if nid == 0:
                self._set_stats(0, total)
            if not is_split:
                continue
            feature, b = int(row[2]), int(row[3])
            if not (0 <= feature < self.n_cuts.size and 0 <= b <= self.n_cuts[feature]) or row[1] != 1:
                raise ValueError(f"node {nid}: split on feature {feature}, bin {b} is outside the bin cuts")
            thr = self.threshold(feature, b) if b < self.n_cuts[feature] else np.finfo(np.float32).max
            lo, hi = tree.split(nid, feature, b, thr, bool(row[4]), float(row[5]))
            self.totals[lo], self.totals[hi] = left, right
            self._set_stats(lo, left)
            self._set_stats(hi, right)
            pairs.append((nid, lo, hi))
        self.pairs = pairs
        self.depth += 1
        if not pairs or self.depth == self.max_depth:  # the last level's children are leaves
            self._finish()

    def _set_stats(self, nid: int, totals: tuple[int, int, int]) -> None:
        s = self.sp.scale
        G, H = totals[0] * s, totals[1] * s
        self.tree.base_weight[nid] = float(np.float32(leaf_weight(G, H, self.sp)))
        self.tree.sum_hessian[nid] = H
        self.tree.count[nid] = int(totals[2])

    def _finish(self) -> None:
        tree = self.tree
        for nid in range(tree.n_nodes):
            if tree.is_leaf(nid):
                value = float(np.float32(self.learning_rate * tree.base_weight[nid]))
                if self.leaf_bound is not None:
                    value = float(np.float32(np.clip(value, -self.leaf_bound, self.leaf_bound)))
                tree.leaf_value[nid] = value
        self.done = True
