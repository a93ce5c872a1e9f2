"""The coordinator's side: one ``secure_sum`` per tree level, answered by the level's released splits.

Layout. Every site returns one flat array ``hist``: for each requested node, the gradient, Hessian (and
count) sums of the real bins (see :mod:`.packing`), declared as exact integer fields whose widths come from
the pooled row count of each node (the root's is the pooled row count; a child's is its count from the
level above, or the pooled count when counts are not collected). The decrypting site decodes the exact
integer histograms, checks that every node's histogram adds up to the same totals for every feature (each
row sits in exactly one bin of each feature; this catches a corrupted or inconsistent sum) and releases
only the level's best splits and child sums (:mod:`.release`), signed. The coordinator never sees a
histogram: it grows the tree from the release and sends the signed records back with every later request
(the transcript the sites replay, :mod:`.transcript`). Encrypted and plaintext federations, and the pooled
learner, compute the same releases and grow the same trees.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from .packing import bin_mask, histogram_segments
from .predictor import Tree
from .release import RELEASE_COLUMNS, LevelRequest
from .transcript import encode_record, routing_payload

__all__ = ["FederatedHistogramSource", "IncompleteSumError", "InconsistentHistogramError", "check_all_sites"]


class FederatedHistogramSource:
    """Histogram source of :func:`grower.grow_tree` backed by ``federation.secure_sum``.

    Parameters
    ----------
    federation : ehr_fed.federation.Federation
    common : dict
        Request parameters shared by every round (:data:`.transcript.SETTINGS` but the training id).
    n_total : int
        Pooled number of rows (bounds the root's sums).
    n_bins : int
        Bins per feature of the dense histograms (value bins + missing bin).
    sites : list of str, optional
        The sites that contributed to the pooled counts; every histogram must come from exactly these
        (a sum missing a site would not be the pooled histogram, and sibling subtraction would break).
    """

    def __init__(self, federation: Any, common: dict, n_total: int, n_bins: int, training_id: str | None = None,
                 sites: list[str] | None = None):
        self.fed = federation
        self.common = dict(common)
        self.common["training_id"] = training_id or uuid.uuid4().hex
        self.n_total = int(n_total)
        self.channels = int(common["channels"])
        self.precision = int(common["precision"])
        n_cuts = np.array([len(c) for c in common["cuts"]], dtype=np.int64)
        self.mask = bin_mask(n_cuts, n_bins)
        self.sites = sorted(federation.site_ids) if sites is None else sorted(sites)
        self.n_sites = len(federation.site_ids)
        self.trees: list[dict] = []
        #: per tree, the signed release records of its levels, as JSON text (sent back with every request)
        self.transcript: list[list[str]] = []
        self.n_requests = 0
        self.n_fields = 0  # integer fields each site sent, in total
        self.n_bits = 0  # bits of those fields

    def begin_tree(self, trees: list[Tree]) -> None:
        self.trees = [routing_payload(t) for t in trees]
        self.transcript = self.transcript[:len(trees)] + [[]]

    def _node_rows(self, tree: Tree, nodes: list[int]) -> list[int]:
        if self.channels < 3:
            return [self.n_total] * len(nodes)
        return [int(tree.count[nid]) if tree.count[nid] > 0 else self.n_total for nid in nodes]

    def _node_hessians(self, tree: Tree, nodes: list[int]) -> list[int | None]:
        """Exact quantised Hessian totals of known nodes (``sum_hessian`` is ``H_q 2**-p``, exact in float64)."""
        return [int(round(tree.sum_hessian[nid] * 2.0**self.precision)) if nid > 0 else None for nid in nodes]

    def _level_params(self, tree: Tree, request: LevelRequest) -> dict:
        p = dict(self.common)
        p["transcript"] = self.transcript
        p["trees"] = self.trees
        p["tree"] = routing_payload(tree)
        p.update(request.to_params())
        return p

    def _segments(self, tree: Tree, nodes: list[int], params: dict) -> list:
        """Integer field widths of the level's histograms (:func:`.packing.histogram_segments`)."""
        return histogram_segments(self._node_rows(tree, nodes), int(self.mask.sum()), self.precision,
                                  self.channels, self._node_hessians(tree, nodes))

    def _summed(self, params: dict) -> None:
        """Called once the level's sum was made (a private session charges it)."""

    def release(self, tree: Tree, request: LevelRequest, params: Any = None) -> np.ndarray:
        """One level: the sites' summed histograms of ``request.nodes``, released as splits by the decrypting site."""
        p = self._level_params(tree, request)
        segments = self._segments(tree, list(request.nodes), p)
        res = self.fed.secure_sum("gbdt.histograms", p, {"hist": {"widths": segments, "max_terms": self.n_sites}})
        self._summed(p)
        check_all_sites(res, self.sites, "gbdt.histograms")
        rows = np.asarray(res.get("splits", np.zeros(0)), dtype=np.float64)
        record = getattr(res, "release", None)
        if rows.shape != (len(request.level), len(RELEASE_COLUMNS)) or not isinstance(record, dict):
            raise ValueError(
                f"the decrypting site released {sorted(res)} of shape {rows.shape} without a signed record for "
                f"{len(request.level)} nodes: every site must run an ehr-fed version whose boosting releases splits "
                "at the decrypting site")
        self.transcript[-1].append(encode_record(record))
        self.n_requests += 1
        self.n_fields += sum(r * len(w) for r, w in segments)
        self.n_bits += sum(r * sum(w) for r, w in segments)
        return rows


class InconsistentHistogramError(RuntimeError):
    """A summed histogram does not add up to the same node totals for every feature."""


def check_consistent(hist: np.ndarray, channels: int, nodes: list[int]) -> None:
    """Every feature's bins of a node must add up to the same (G, H, C) totals."""
    sums = hist[..., :channels].sum(axis=2)  # (n_nodes, n_features, channels)
    bad = np.flatnonzero((sums != sums[:, :1, :]).any(axis=(1, 2)))
    if bad.size:
        raise InconsistentHistogramError(
            f"the summed histograms of nodes {[int(nodes[i]) for i in bad]} do not add up to the same totals "
            "for every feature: a site sent rows it does not hold in every feature, or a sum was corrupted. "
            "Check that every site runs the same ehr-fed version and the same feature table, then fit again."
        )


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

