"""Gradients of the logistic loss, their fixed-point quantisation, and gradient / Hessian / count histograms.

Exactness is the point of this module. Gradients and Hessians are rounded once, at the row, to integers
on a grid of ``2**-precision`` (``g_q = round(g * 2**precision)``); every histogram is then a sum of
integers, which is exact in any order and in any partition of the rows (all sums stay below ``2**53``).
Hence the pooled histogram, the sum of the sites' plaintext histograms, the decrypted sum of their
encrypted histograms (a Paillier fixed-point encoding with at least ``precision`` fractional bits is exact
on these values) and a parent minus its sibling are bit-for-bit the same numbers, and federated trees equal
pooled trees. XGBoost's GPU ``hist`` quantises gradients for the same reason.

Histogram layout: ``int64`` array of shape ``(n_nodes, n_features, n_bins, 3)``; channel 0 = sum of
``g_q``, 1 = sum of ``h_q``, 2 = row count. Per row ``|g| <= 1`` and ``0 <= h <= 0.25``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "sigmoid",
    "logistic_grad_hess",
    "quantize",
    "build_histograms",
    "CHANNELS",
]

CHANNELS = ("grad", "hess", "count")


def sigmoid(margin: np.ndarray) -> np.ndarray:
    """Logistic function, computed stably."""
    m = np.asarray(margin, dtype=np.float64)
    out = np.empty_like(m)
    pos = m >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-m[pos]))
    e = np.exp(m[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logistic_grad_hess(margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivative of the log loss with respect to the margin (``binary:logistic``).

    Returns ``g = p - y`` (in [-1, 1]) and ``h = max(p (1 - p), 1e-16)`` (in (0, 0.25]).
    """
    p = sigmoid(margin)
    g = p - np.asarray(y, dtype=np.float64)
    h = np.maximum(p * (1.0 - p), 1e-16)
    return g, h


def quantize(values: np.ndarray, precision: int) -> np.ndarray:
    """Round to the fixed-point grid ``2**-precision``; returns the integers (int64)."""
    return np.rint(np.asarray(values, dtype=np.float64) * float(2**precision)).astype(np.int64)


def build_histograms(
    bins: np.ndarray,
    gq: np.ndarray,
    hq: np.ndarray,
    row_node: np.ndarray,
    nodes: np.ndarray,
    n_bins: int,
) -> np.ndarray:
    """Histograms of the requested nodes.

    Parameters
    ----------
    bins : ndarray of shape (n_rows, n_features), integer bin indices
    gq, hq : ndarray of shape (n_rows,), int64 quantised gradient and Hessian
    row_node : ndarray of shape (n_rows,), the node id each row currently sits in
    nodes : ndarray of shape (n_nodes,), node ids whose histograms are wanted
    n_bins : int, bins per feature (value bins + missing bin)

    Returns
    -------
    ndarray of int64, shape (n_nodes, n_features, n_bins, 3)
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    n_rows, n_features = bins.shape
    out_size = nodes.size * n_features * n_bins
    if nodes.size == 0:
        return np.zeros((0, n_features, n_bins, 3), dtype=np.int64)
    # position of each row's node in `nodes`, -1 when not requested
    order = np.argsort(nodes)
    sorted_nodes = nodes[order]
    loc = np.searchsorted(sorted_nodes, row_node)
    loc = np.minimum(loc, sorted_nodes.size - 1)
    hit = sorted_nodes[loc] == row_node
    rows = np.flatnonzero(hit)
    pos = order[loc[rows]]
    base = (pos * n_features)[:, None] + np.arange(n_features)[None, :]
    flat = (base * n_bins + bins[rows].astype(np.int64)).ravel()
    out = np.empty((out_size, 3), dtype=np.int64)
    for c, w in enumerate((gq[rows], hq[rows], None)):
        weights = None if w is None else np.repeat(w.astype(np.float64), n_features)
        out[:, c] = np.rint(np.bincount(flat, weights=weights, minlength=out_size)).astype(np.int64)
    return out.reshape(nodes.size, n_features, n_bins, 3)
