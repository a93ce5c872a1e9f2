"""Site tasks of federated boosting: what a hospital computes on its own rows.

Statelessness. Every request carries everything the site needs: the feature names, the bin cuts, the base
score, all finished trees and the tree being grown (routing arrays only: children, feature, threshold,
default direction, leaf values). A site can therefore answer any request from scratch (a restarted site,
a Flower node that lost its process). For speed a site keeps, per training id, its binned rows and the
margins after the finished trees it has already applied; each cached tree is identified by a digest of its
routing arrays, and the cache is used only when the request's trees start with exactly the cached ones,
otherwise the margins are recomputed from the trees in the request. Within a tree, each row's node is
recomputed from the partial tree (``max_depth`` vectorised steps).

Replies:

``gbdt.schema``      ``{"features": [...]}`` (query): the feature columns of the site's table.
``gbdt.init``        ``{"stats": [n_rows, n_positive]}`` (for the base score and the layout bounds).
``gbdt.histograms``  ``{"hist": flat integer fields}``: per node the gradient, Hessian (and, with the count
                     rule, row-count) sums of every real bin (see :mod:`.packing`), gradients and Hessians
                     quantised to ``2**-precision`` (see :mod:`.histogram`); the coordinator's layout gives
                     the bit width of each field. Only as a masked contribution to a secure sum, and only
                     when the request follows from its signed transcript (:mod:`.transcript`).

The decrypting site's release step of ``gbdt.histograms`` (:func:`release_splits`) turns the summed
histograms into the level's release (:mod:`.release`): the best split of each node and its children's sums,
``{"splits": rows, "link": chain link}``. No histogram leaves the decrypting site; it keeps the level's summed
histograms (per training id and tree) to derive the next level's larger siblings.

Under a private release plan (``dp`` in the parameters, see :mod:`.private`) ``gbdt.init`` and
``gbdt.histograms`` add the site's Skellam noise share to every value before it is masked; the release step
then post-processes the noisy sums (:class:`.release.NoisyRelease`) instead of checking them for exact
consistency.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import release_digest
from ehr_fed.federation.tasks import SiteContext, site_task
from ehr_fed.privacy.dp import active_release

from .binning import BinMapper
from .federated import InconsistentHistogramError, check_consistent
from .histogram import build_histograms, logistic_grad_hess, quantize
from .packing import bin_mask, from_wire, to_wire
from .predictor import apply_tree, base_margin
from .release import LevelReleaser, LevelRequest, noisy_release, split_params
from .transcript import (
    DP_SETTINGS,
    SETTINGS,
    check_request,
    decode_record,
    last_record,
    link,
    settings_digest,
)

__all__ = ["site_schema", "site_init", "site_histograms", "release_splits", "clear_cache"]

_CACHE: OrderedDict[tuple, dict] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()
#: the decrypting site's summed histograms of each training's last level (for the sibling derivation)
_RELEASERS: OrderedDict[tuple, LevelReleaser] = OrderedDict()


def clear_cache() -> None:
    """Forget every cached training state (the next request recomputes from its trees) and every kept level."""
    with _LOCK:
        _CACHE.clear()
        _RELEASERS.clear()


def _features(table: pd.DataFrame, names: list[str]) -> np.ndarray:
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise ValueError(f"the feature table has no columns {missing}; expected the model's features {names}")
    x = table[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(x).any(axis=0)
    if bad.any():
        raise ValueError(f"feature column(s) {[n for n, b in zip(names, bad, strict=True) if b]} hold infinite "
                         "values; fix the harmonized table (missing values must be empty, not inf)")
    return x


def _digest(tree: dict) -> str:
    h = hashlib.sha256()
    for k in ("left", "right", "feature", "threshold", "default_left", "leaf_value"):
        h.update(np.ascontiguousarray(np.asarray(tree[k], dtype=np.float64)).tobytes())
    return h.hexdigest()


def _state(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    key = (ctx.site_id, str(params["training_id"]), id(table), len(table))
    with _LOCK:
        st = _CACHE.get(key)
        if st is not None:
            _CACHE.move_to_end(key)
    if st is None:
        X32 = _features(table, params["features"]).astype(np.float32)
        mapper = BinMapper([np.asarray(c) for c in params["cuts"]], int(params["max_bin"]))
        st = {
            "X32": X32,
            "y": table["label"].to_numpy(dtype=np.float64),
            "bins": mapper.transform(X32),
            "n_bins": mapper.n_bins,
            "mask": bin_mask(mapper.n_cuts(), mapper.n_bins),
            "applied": [],
            "margin": None,
            "base_score": None,
        }
        with _LOCK:
            _CACHE[key] = st
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return st


def _margins(st: dict, trees: list[dict], base_score: float) -> np.ndarray:
    digests = [_digest(t) for t in trees]
    n_done = len(st["applied"])
    if st["base_score"] != base_score or st["applied"] != digests[:n_done]:
        st["margin"], st["applied"], n_done = None, [], 0
    if st["margin"] is None:
        st["margin"] = np.full(st["X32"].shape[0], base_margin(base_score), dtype=np.float32)
        st["base_score"] = base_score
    for t in trees[n_done:]:
        st["margin"] += np.asarray(t["leaf_value"], dtype=np.float32)[apply_tree(t, st["X32"])]
    st["applied"] = digests
    return st["margin"]


def _check_min_count(params: dict, ctx: SiteContext) -> None:
    ctx.policy.check_min_count(int(params.get("min_count", 0)), "a gradient-boosting request (min_count)",
                               ctx.site_id)


def site_schema(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """The site's feature columns (every column that is not a meta column), in table order."""
    from ehr_fed.models.base import feature_columns

    return {"features": feature_columns(table)}


def site_init(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """Row and positive counts of the site."""
    y = table["label"].to_numpy(dtype=np.float64)
    stats = np.array([float(y.size), float(y.sum())])
    rel = active_release()
    return {"stats": stats if rel is None else private.noise_init(stats, rel)}


def site_histograms(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """Quantised gradient / Hessian (/ count) histograms of the requested nodes of the current tree."""
    _check_min_count(params, ctx)
    check_request(params, ctx)  # the trees and nodes must follow from the signed releases so far
    st = _state(table, params, ctx)
    margin = _margins(st, list(params.get("trees") or []), float(params["base_score"]))
    precision = int(params["precision"])
    g, h = logistic_grad_hess(margin, st["y"])
    gq, hq = quantize(g, precision), quantize(h, precision)
    row_node = apply_tree(params["tree"], st["X32"])
    hist = build_histograms(st["bins"], gq, hq, row_node, np.asarray(params["nodes"], dtype=np.int64),
                            st["n_bins"])
    channels = int(params.get("channels", 3))
    wire = to_wire(hist, st["mask"], channels)
    rel = active_release()  # a private level: this site's noise share of every field (see .private)
    return {"hist": wire if rel is None else private.noise_wire(wire, channels, rel)}


def _releaser(ctx: SiteContext, training_id: str) -> LevelReleaser:
    key = (ctx.site_id, training_id)
    with _LOCK:
        rel = _RELEASERS.get(key)
        if rel is None:
            rel = _RELEASERS[key] = LevelReleaser()
            while len(_RELEASERS) > _CACHE_SIZE:
                _RELEASERS.popitem(last=False)
        _RELEASERS.move_to_end(key)
    return rel


def release_splits(arrays: dict, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """The decrypting site's release of a level: best splits and child sums, never the histograms."""
    _check_min_count(params, ctx)
    sp = split_params(params)
    mapper = BinMapper([np.asarray(c, dtype=np.float64) for c in params["cuts"]], int(params["max_bin"]))
    request = LevelRequest.from_params(params)
    channels = int(params.get("channels", 3))
    mask = bin_mask(mapper.n_cuts(), mapper.n_bins)
    hist = from_wire(np.asarray(arrays["hist"]), mask, len(request.nodes), channels)
    noisy = noisy_release(params, mask)  # a private level: noisy sums, made consistent instead of checked
    if noisy is None:
        try:
            check_consistent(hist, channels, list(request.nodes))
        except InconsistentHistogramError as exc:
            raise ProtocolError(str(exc)) from None
    transcript = params["transcript"]
    tree, depth = len(transcript) - 1, len(transcript[-1])
    rows = _releaser(ctx, str(params["training_id"])).release(tree, request, hist, mapper.n_cuts(), sp,
                                                               keep=params["sibling"] == "derive", noisy=noisy)
    previous = last_record(transcript)
    previous = None if previous is None else release_digest(decode_record(previous))
    return {"splits": rows, "link": link(settings_digest(params), tree, depth, previous)}


#: the parameters of a level request: the training's settings, the private ones, the trees and the level
HISTOGRAM_PARAMS = (*SETTINGS, *DP_SETTINGS, "dp_index", "transcript", "trees", "tree", "level", "nodes", "derive")

site_task("gbdt.schema", kind="other", params=())(site_schema)
site_task("gbdt.init", kind="count", counts={"stats": ()}, params=("dp", "dp_index"))(site_init)
site_task("gbdt.histograms", kind="histogram", post_decrypt=release_splits, params=HISTOGRAM_PARAMS)(site_histograms)

from . import private  # noqa: E402  (declares the private forms: gbdt.init, gbdt.histograms, bin cuts)
