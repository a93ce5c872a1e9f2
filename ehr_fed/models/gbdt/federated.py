"""The coordinator's side: node histograms from a federation, one ``secure_sum`` per tree level.

Bounds (layout). Every site returns one array ``hist`` of shape ``(n_nodes, n_features, n_bins, n_words)``:
the integer gradient, Hessian (and count) sums of each bin packed into words ``K * 2**-53`` with
``|K| < 2**52`` (see :mod:`.packing`), so the layout is ``{"hist": (1.0, n_sites)}``. Field widths come
from the pooled number of rows, so the decoded sum is the exact integer histogram: encrypted and
plaintext federations, and the pooled learner, see the same numbers and grow the same trees.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from .packing import WordLayout, unpack
from .predictor import Tree

__all__ = ["FederatedHistogramSource", "IncompleteSumError", "check_all_sites", "histogram_layout"]


def histogram_layout(n_sites: int) -> dict[str, tuple[float, int]]:
    """The ``secure_sum`` layout of ``gbdt.histograms``."""
    return {"hist": (1.0, int(n_sites))}


class FederatedHistogramSource:
    """Histogram source of :func:`grower.grow_tree` backed by ``federation.secure_sum``.

    Parameters
    ----------
    federation : ehr_fed.federation.Federation
    common : dict
        Request parameters shared by every round (features, cuts, max_bin, precision, base_score,
        channels, min_count).
    words : WordLayout
        How each bin's fields are packed.
    sites : list of str, optional
        The sites that contributed to the pooled counts; every histogram must come from exactly these
        (a sum missing a site would not be the pooled histogram, and sibling subtraction would break).
    """

    def __init__(self, federation: Any, common: dict, words: WordLayout, training_id: str | None = None,
                 sites: list[str] | None = None):
        self.fed = federation
        self.common = dict(common)
        self.common["training_id"] = training_id or uuid.uuid4().hex
        self.common.update(widths=list(words.widths), word=list(words.word), offset=list(words.offset),
                           n_words=int(words.n_words))
        self.words = words
        self.sites = sorted(federation.site_ids) if sites is None else sorted(sites)
        self.layout = histogram_layout(len(federation.site_ids))
        self.trees: list[dict] = []
        self.n_requests = 0
        self.n_values = 0  # packed values each site encrypted, in total

    def begin_tree(self, trees: list[Tree]) -> None:
        self.trees = [_routing_payload(t) for t in trees]

    def histograms(self, tree: Tree, nodes: list[int]) -> np.ndarray:
        params = dict(self.common)
        params["trees"] = self.trees
        params["tree"] = _routing_payload(tree)
        params["nodes"] = np.asarray(nodes, dtype=np.int64)
        res = self.fed.secure_sum("gbdt.histograms", params, self.layout)
        check_all_sites(res, self.sites, "gbdt.histograms")
        out = np.asarray(res["hist"])
        self.n_requests += 1
        self.n_values += int(out.size)
        fields = unpack(out, self.words)
        hist = np.zeros(fields.shape[:-1] + (3,), dtype=np.int64)
        hist[..., : fields.shape[-1]] = fields
        return hist


class IncompleteSumError(RuntimeError):
    """A histogram sum lacks a site of the training set."""


def check_all_sites(result: Any, sites: list[str], task: str) -> None:
    """Fail unless ``result`` (a SecureSumResult) combines exactly ``sites``."""
    got = sorted(getattr(result, "contributors", sites) or sites)
    if got != sorted(sites):
        missing = getattr(result, "missing", {}) or {}
        raise IncompleteSumError(
            f"{task}: the sum combines sites {got}, but training started with {sorted(sites)}; missing: "
            f"{missing}. Boosting needs every site in every round: fix the failing site and fit again."
        )


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
