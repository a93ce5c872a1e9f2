"""The coordinator's side: node histograms from a federation, one ``secure_sum`` per tree level.

Bounds (layout). Every site returns one array ``hist`` of shape ``(n_nodes, n_features, n_bins, C)``:
gradient sums (each row ``|g| <= 1``), Hessian sums (``h <= 0.25``) and, with the count rule, row counts.
Any entry of a site's array is therefore at most its number of rows in magnitude, so the layout is
``{"hist": (n_total_rows, n_sites)}`` (per-contribution bound, number of contributions), like the other
federated models. Gradient and Hessian are quantised to ``2**-precision`` before summing; the coordinator
rounds the decrypted sum back onto that grid (``rint(sum * 2**precision)``), which recovers the exact
integer sums whenever the fixed-point error of the encryption, summed over the contributions, is below
half a grid step, so encrypted and plaintext federations give identical trees.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from .predictor import Tree

__all__ = ["FederatedHistogramSource", "histogram_layout"]


def histogram_layout(n_total: float, n_sites: int) -> dict[str, tuple[float, int]]:
    """The ``secure_sum`` layout of ``gbdt.histograms``."""
    return {"hist": (float(max(n_total, 1.0)), int(n_sites))}


class FederatedHistogramSource:
    """Histogram source of :func:`grower.grow_tree` backed by ``federation.secure_sum``.

    Parameters
    ----------
    federation : ehr_fed.federation.Federation
    common : dict
        Request parameters shared by every round (features, cuts, max_bin, precision, base_score,
        channels, min_count).
    n_total : float
        Pooled number of rows (bounds the layout).
    """

    def __init__(self, federation: Any, common: dict, n_total: float, training_id: str | None = None):
        self.fed = federation
        self.common = dict(common)
        self.common["training_id"] = training_id or uuid.uuid4().hex
        self.layout = histogram_layout(n_total, len(federation.site_ids))
        self.precision = int(common["precision"])
        self.channels = int(common["channels"])
        self.trees: list[dict] = []
        self.n_requests = 0
        self.n_values = 0  # histogram entries each site encrypted

    def begin_tree(self, trees: list[Tree]) -> None:
        self.trees = [_routing_payload(t) for t in trees]

    def histograms(self, tree: Tree, nodes: list[int]) -> np.ndarray:
        params = dict(self.common)
        params["trees"] = self.trees
        params["tree"] = _routing_payload(tree)
        params["nodes"] = np.asarray(nodes, dtype=np.int64)
        out = self.fed.secure_sum("gbdt.histograms", params, self.layout)["hist"]
        self.n_requests += 1
        self.n_values += int(np.asarray(out).size)
        return _to_grid(np.asarray(out, dtype=np.float64), self.precision, self.channels)


def _to_grid(hist: np.ndarray, precision: int, channels: int) -> np.ndarray:
    """Decrypted float sums -> exact int64 histogram with 3 channels (count 0 when not collected)."""
    out = np.zeros(hist.shape[:-1] + (3,), dtype=np.int64)
    out[..., :2] = np.rint(hist[..., :2] * 2.0**precision).astype(np.int64)
    if channels == 3:
        out[..., 2] = np.rint(hist[..., 2]).astype(np.int64)
    return out


def _routing_payload(tree: Tree) -> dict[str, np.ndarray]:
    """A tree's routing arrays as message-safe numpy arrays."""
    r = tree.to_routing()
    return {
        "left": np.asarray(r["left"], dtype=np.int64),
        "right": np.asarray(r["right"], dtype=np.int64),
        "feature": np.asarray(r["feature"], dtype=np.int64),
        "threshold": np.asarray(r["threshold"], dtype=np.float64),
        "default_left": np.asarray(r["default_left"], dtype=bool),
        "leaf_value": np.asarray(r["leaf_value"], dtype=np.float64),
    }
