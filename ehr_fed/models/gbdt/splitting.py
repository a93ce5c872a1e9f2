"""Split finding on an (aggregated) histogram: XGBoost's gain, leaf weight and constraints.

With ``G``, ``H`` the sums of gradient and Hessian in a node, XGBoost (``binary:logistic``, no L1 term,
``max_delta_step=0``) uses

* leaf weight ``w = -G / (H + reg_lambda)`` (0 when ``H < min_child_weight``);
* split gain ("loss_chg") ``G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)``; a split is taken
  only when the gain exceeds ``1e-6`` and is at least ``gamma``, and both children have
  ``H >= min_child_weight``.

Missing values: every cut is tried twice, missing rows going right and going left (the learned default
direction); in addition the split "all observed values left, missing right" is tried, which isolates the
missing rows. Here, as a disclosure-control addition, both children must also hold at least
``min_count`` rows (the pooled count channel of the histogram), and before a node's splits are searched
its bins are merged (:func:`merge_small_bins`) until every group of adjacent bins holds at least
``min_count`` pooled rows: no threshold is offered between two bins of a group, so no split ever depends on
a bin of fewer rows. The pooled learner and the federated one apply the same rule to the same integer
histograms and grow the same trees.

Ties are broken deterministically: lowest feature, then lowest bin, then missing-right before missing-left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SplitParams", "SplitInfo", "node_totals", "leaf_weight", "find_best_split", "merge_small_bins"]

K_RT_EPS = 1e-6


@dataclass(frozen=True)
class SplitParams:
    """Regularisation and constraints of split finding (XGBoost's names and meanings)."""

    reg_lambda: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    min_count: int = 0
    precision: int = 16  # fractional bits of the quantised gradients
    use_count: bool = True  # False: the histogram's count channel is absent (zeros) and not checked

    @property
    def scale(self) -> float:
        return float(2.0**-self.precision)


@dataclass(frozen=True)
class SplitInfo:
    """The best split of a node."""

    feature: int
    bin: int
    default_left: bool
    gain: float
    left: tuple[int, int, int]  # quantised (G, H, count) of the left child
    right: tuple[int, int, int]


def node_totals(hist: np.ndarray) -> tuple[int, int, int]:
    """Quantised (G, H, count) of a node from its histogram of shape (n_features, n_bins, 3)."""
    t = hist[0].sum(axis=0)
    return int(t[0]), int(t[1]), int(t[2])


def leaf_weight(G: float, H: float, params: SplitParams) -> float:
    """XGBoost's optimal leaf weight for dequantised sums (before the learning rate)."""
    if H < params.min_child_weight or H <= 0.0:
        return 0.0
    return -G / (H + params.reg_lambda)


def _score(G: np.ndarray, H: np.ndarray, lam: float) -> np.ndarray:
    return G * G / (H + lam)


def find_best_split(hist: np.ndarray, n_cuts: np.ndarray, params: SplitParams) -> SplitInfo | None:
    """Best split of one node, or None when no split is valid.

    Parameters
    ----------
    hist : int64 ndarray of shape (n_features, n_bins, 3)
        The node's histogram; the last bin holds missing values.
    n_cuts : int ndarray of shape (n_features,)
        Number of cuts of each feature.
    params : SplitParams
    """
    hist = np.asarray(hist, dtype=np.int64)
    n_features, n_bins, _ = hist.shape
    n_value = n_bins - 1
    total = hist[0].sum(axis=0)  # (3,)
    missing = hist[:, n_value, :]  # (F, 3)
    cum = np.cumsum(hist[:, :n_value, :], axis=1)  # (F, n_value, 3): bins 0..b
    s = params.scale
    lam = params.reg_lambda
    parent = _score(total[0] * s, total[1] * s, lam)

    b = np.arange(n_value)[None, :]
    nc = np.asarray(n_cuts, dtype=np.int64)[:, None]
    gains = np.full((n_features, n_value, 2), -np.inf)
    lefts = []
    for d, (left, valid) in enumerate(
        (
            (cum, b <= nc),  # d=0: missing right (b == n_cuts: all observed left, missing right)
            # d=1: missing left. With merged bins (min_count > 1) the observed part of the left side must
            # not be empty: "missing alone left" is the mirror of d=0 at b == n_cuts, and only that form
            # routes rows as the merged histogram counts them (module doc of merge_small_bins)
            (cum + missing[:, None, :], (b < nc) & ((cum != 0).any(axis=2) if params.min_count > 1 else True)),
        )
    ):
        right = total[None, None, :] - left
        GL, HL, CL = left[..., 0] * s, left[..., 1] * s, left[..., 2]
        GR, HR, CR = right[..., 0] * s, right[..., 1] * s, right[..., 2]
        ok = (
            valid
            & (HL >= params.min_child_weight)
            & (HR >= params.min_child_weight)
            & (HL > 0)
            & (HR > 0)
        )
        if params.use_count:
            ok &= (CL >= max(params.min_count, 1)) & (CR >= max(params.min_count, 1))
        g = _score(GL, HL, lam) + _score(GR, HR, lam) - parent
        gains[..., d] = np.where(ok, g, -np.inf)
        lefts.append(left)
    flat = int(np.argmax(gains))
    j, bb, d = np.unravel_index(flat, gains.shape)
    best = float(gains[j, bb, d])
    if not np.isfinite(best) or best <= K_RT_EPS or best < params.gamma:
        return None
    left = lefts[d][j, bb]
    right = total - left
    return SplitInfo(
        feature=int(j),
        bin=int(bb),
        default_left=bool(d == 1),
        gain=best,
        left=(int(left[0]), int(left[1]), int(left[2])),
        right=(int(right[0]), int(right[1]), int(right[2])),
    )


def merge_small_bins(hists: np.ndarray, params: SplitParams) -> np.ndarray:
    """Merge adjacent bins of node histograms until each group holds at least ``params.min_count`` rows.

    Parameters
    ----------
    hists : int64 ndarray of shape (n_nodes, n_features, n_bins, 3)
        Raw node histograms (last bin = missing values).
    params : SplitParams
        ``min_count``; with ``use_count`` the count channel decides, otherwise the Hessian channel must
        reach ``min_count / 4`` (every row's Hessian is at most 1/4, so such a group holds at least
        ``min_count`` rows).

    Returns
    -------
    int64 ndarray of the same shape
        Each group's (G, H, count) sums sit in the group's last non-empty value bin (its missing-value
        bin when the group is only that bin); every other bin of the group is 0. Groups are read from
        the lowest bin up, the missing bin last; a last group below the minimum joins the one before.

    With the sums at a group's last bin, every threshold inside a group gives the same gain as the
    threshold just below the group, and the tie-break (lowest bin) picks the latter, so the chosen
    threshold routes rows exactly as the merged histogram counts them. A missing-value bin merged into
    value bins is counted at the group's last value bin; the missing-left direction then never wins (it
    ties, and missing-right is preferred), so missing rows go right, like that group.
    """
    hists = np.asarray(hists, dtype=np.int64)
    if params.min_count <= 1 or hists.size == 0:
        return hists
    n_nodes, n_features, n_bins, n_ch = hists.shape
    h = hists.reshape(n_nodes * n_features, n_bins, n_ch)
    if params.use_count:
        key, need = 2, int(params.min_count)
    else:
        key, need = 1, int(np.ceil(params.min_count * 2.0 ** (params.precision - 2)))
    rows = np.arange(h.shape[0])
    out = np.zeros_like(h)
    acc = np.zeros((h.shape[0], n_ch), dtype=np.int64)
    last_nz = np.full(h.shape[0], -1)  # last non-empty value bin of the open group
    prev = np.full(h.shape[0], -1)  # where the last closed group's sums sit
    for b in range(n_bins):
        col = h[:, b, :]
        acc += col
        nonempty = col.any(axis=1)
        if b < n_bins - 1:
            last_nz = np.where(nonempty, b, last_nz)
        close = acc[:, key] >= need
        if close.any():
            r = rows[close]
            pos = np.where(last_nz[r] >= 0, last_nz[r], b)
            out[r, pos] = acc[r]
            prev[r] = pos
            acc[r] = 0
            last_nz[r] = -1
    rest = rows[acc.any(axis=1)]
    if rest.size:
        joined = prev[rest] >= 0
        pos = np.where(last_nz[rest] >= 0, last_nz[rest], np.where(joined, prev[rest], n_bins - 1))
        carried = np.where(joined[:, None], out[rest, np.maximum(prev[rest], 0)], 0)
        out[rest[joined], prev[rest[joined]]] = 0
        out[rest, pos] = carried + acc[rest]
    return out.reshape(hists.shape)
