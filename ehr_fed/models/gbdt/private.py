"""Differentially private federated boosting (see :mod:`ehr_fed.privacy.dp` for the mechanism).

``FederatedGradientBoostingClassifier(dp={"epsilon": 4})`` (or ``dp:`` in the federation) declares one
session of private releases, each a secure sum into which every site adds its Skellam noise share:

``gbdt.init``        (group ``preprocess``) the pooled row and positive counts: one row moves them by at most
                     1 each, so ``L1 = 2``, ``L2 = sqrt(2)``.
``gbdt.dp_bin_counts`` (group ``preprocess``) the bin cuts: per feature, row counts on a public grid of
                     ``cut_grid`` equal bins over the feature's public clipping range (values clipped into it,
                     missing values counted nowhere); one row is in at most one bin per feature, so
                     ``L1 = F``, ``L2 = sqrt(F)`` for ``F`` features. The cuts are the grid edges at the
                     ``k / max_bin`` quantiles of the noisy counts (post-processing). With ``bin_edges``
                     given the cuts are public input and this release is not made. Every
                     level request cites the signed release of these counts, and each site recomputes
                     the cuts from it (:mod:`.cuts`).
``gbdt.histograms``  (group ``model``) one release per tree level. In one level every row sits in exactly
                     one node of the partial tree (its current leaf), and in exactly one bin of each of the
                     ``F`` features in that node's histogram; the quantised gradient of a row lies in
                     ``[-2**p, 2**p]`` and its Hessian in ``[0, 2**(p-2)]`` (``|g| <= 1``, ``h <= 1/4`` on the
                     grid ``2**-p``, see :mod:`.histogram`), its count is 1. Per level and channel the integer
                     sensitivities are therefore
                     gradient ``L1 = F 2**p``, ``L2 = sqrt(F) 2**p``;
                     Hessian ``L1 = F 2**(p-2)``, ``L2 = sqrt(F) 2**(p-2)``;
                     count ``L1 = F``, ``L2 = sqrt(F)``
                     (times ``events_per_patient``, applied by the calibration). Which nodes are asked, the
                     margins of the earlier trees and the cuts are functions of earlier releases only.

Budget split (all overridable in ``dp``): the session's zCDP budget goes to the groups by
:data:`~ehr_fed.privacy.dp.DEFAULT_SPLIT` (``preprocess`` 1/8, ``model`` 7/8 when only these two are used);
within ``preprocess`` equally to the counts and the cuts; within ``model`` equally to the
``n_estimators x max_depth`` levels (``level_weights``: relative budget of depth 0, 1, ..., the same in
every tree); within a level to the channels by ``channel_weights`` (default gradient 0.5, Hessian 0.3,
count 0.2; without the count channel gradient 0.6, Hessian 0.4). A tree that stops early leaves its
remaining levels unspent: ``dp_["epsilon"]`` is what the releases made actually spent.

Shape under a small budget: a level's noise per bin does not depend on how many rows its nodes hold, so the
deeper a level, the smaller its signal against the same noise. A stump (``max_depth=1``) has one level, over
every row, from which its split and both leaf values come; with ``n_estimators x max_depth`` levels sharing
the budget, few stumps give the least noisy releases (``benchmarks/dp_utility.py`` uses 8 stumps at
``learning_rate`` 0.5: at epsilon 2 about half the AUC lost by 6 trees of depth 2).

Post-processing of the noisy sums (no privacy cost), done by the decrypting site's release step from the
request's digest-bound DP settings (``dp``, ``dp_channel_weights``, ``dp_max_leaf``, ``dp_min_hessian_sigmas``;
:class:`.release.NoisyRelease`), so the coordinator, the sites' transcript replay and the pooled learner
share one code path: every feature's bins of a node are made to add up to
the same totals (the mean over the features of their noisy sums, ``F`` times less noisy than one; the
difference is spread evenly over the feature's real bins), with the node's Hessian and count totals
clamped at 0; the split search then needs no other change: a child is only made when both sides hold a
Hessian of at least ``min_child_weight``, raised here to ``min_hessian_sigmas`` (2) noise standard
deviations of one bin's Hessian, so no leaf weight ``-G / (H + lambda)`` is taken from a Hessian that noise
alone could produce, and a node whose noisy Hessian is <= 0 gets weight 0 (the splitter's rule). Leaf
values are clamped to ``learning_rate * max_leaf`` (``max_leaf`` 1, as XGBoost's ``max_delta_step``).
Noise never breaks the integer fields: every field is widened by the tail bound of the summed noise
(:func:`ehr_fed.privacy.dp.noise_room`) and sized from a public upper bound of the pooled row count.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import numpy as np

from ehr_fed.privacy.dp import (
    DPConfig,
    DPError,
    OutputSensitivity,
    Release,
    ReleasePlan,
    active_release,
    calibrate,
    dp_task,
    epsilon_spent,
    field_width,
    noise_room,
    requested_dp,
    spent_record,
)

from .federated import FederatedHistogramSource
from .predictor import Tree
from .release import LevelRequest
from .splitting import SplitParams

__all__ = ["OPTION_KEYS", "PrivateBoosting", "PrivateHistogramSource", "resolve_dp", "make_consistent",
           "noise_wire", "noisy_min_child_weight", "private_cuts"]

#: keys of a boosting model's ``dp`` option that are not part of the budget itself
OPTION_KEYS = ("channel_weights", "level_weights", "cut_grid", "feature_bounds", "max_leaf",
               "min_hessian_sigmas")
CHANNEL_NAMES = ("grad", "hess", "count")
DEFAULT_CHANNEL_WEIGHTS = {3: {"grad": 0.5, "hess": 0.3, "count": 0.2}, 2: {"grad": 0.6, "hess": 0.4}}
DEFAULT_CUT_GRID = 64
ROW_BOUND = 1.0e9


# ----------------------------------------------------------------------------------- sensitivities
def _init_sens(params: dict) -> list[OutputSensitivity]:
    return [OutputSensitivity("stats", 2.0, math.sqrt(2.0))]


def _cuts_sens(params: dict) -> list[OutputSensitivity]:
    f = len(params["features"])
    return [OutputSensitivity("counts", float(f), math.sqrt(f))]


def _hist_sens(params: dict) -> list[OutputSensitivity]:
    """Per-level integer sensitivities of the histogram channels (module docstring)."""
    f, p, channels = len(params["features"]), int(params["precision"]), int(params.get("channels", 3))
    if channels not in (2, 3):
        raise ValueError(f"channels must be 2 or 3, got {channels}")
    weights = params.get("dp_channel_weights") or DEFAULT_CHANNEL_WEIGHTS[channels]
    unit = {"grad": float(2**p), "hess": float(2 ** (p - 2)), "count": 1.0}
    out = []
    for name in CHANNEL_NAMES[:channels]:
        w = float(weights.get(name, 0.0))
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(f"dp channel_weights must give {list(CHANNEL_NAMES[:channels])} positive weights, "
                             f"got {weights}")
        out.append(OutputSensitivity(name, f * unit[name], math.sqrt(f) * unit[name], w))
    return out


def noisy_min_child_weight(params: dict) -> float:
    """``dp_min_hessian_sigmas`` (2) noise sd of one bin's summed Hessian at a tree's noisiest level, dequantised.

    From the request's digest-bound settings (plan ``dp``, ``dp_channel_weights``, ``max_depth``,
    ``precision``), so every party that grows or releases the trees raises ``min_child_weight`` alike.
    """
    try:
        plan = ReleasePlan.model_validate(params["dp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a private boosting request carries no valid release plan 'dp' ({exc})") from None
    k = float(params.get("dp_min_hessian_sigmas", 2.0))
    sens = _hist_sens(params)
    sigma = max(calibrate(plan, "model", sens, "gbdt.histograms", d)["hess"].sigma
                for d in range(int(params["max_depth"])))
    return k * sigma * 2.0 ** -int(params["precision"])


# ----------------------------------------------------------------------------------- site side
def noise_init(stats: np.ndarray, rel: Release) -> np.ndarray:
    """The site's row / positive counts plus its noise share."""
    return np.asarray(stats, dtype=np.float64) + rel.noise("stats", 2).astype(np.float64)


def noise_wire(flat: np.ndarray, channels: int, rel: Release) -> np.ndarray:
    """Flat histogram fields ``(node, bin, channel)`` plus the site's noise share of every channel."""
    fields = np.asarray(flat, dtype=np.int64).reshape(-1, channels).copy()
    for c, name in enumerate(CHANNEL_NAMES[:channels]):
        fields[:, c] += rel.noise(name, fields.shape[0])
    return fields.ravel()


def grid_counts(X: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Row counts of every feature on its public grid, shape ``(F, G)`` (values clipped into the grid)."""
    F, G = X.shape[1], grid.shape[1] - 1
    out = np.zeros((F, G), dtype=np.int64)
    for j in range(F):
        x = X[:, j]
        x = x[~np.isnan(x)]
        b = np.clip(np.searchsorted(grid[j, 1:-1], x, side="right"), 0, G - 1)
        out[j] = np.bincount(b, minlength=G)
    return out


def site_dp_bin_counts(table, params: dict, ctx) -> dict[str, np.ndarray]:
    """Noisy per-feature counts on a public grid (for private bin cuts); only as a private release."""
    from ehr_fed.privacy.errors import DisclosureError

    from .tasks import _features

    rel = active_release()
    if rel is None:  # exact fine-grid counts would release small cells: this task exists only with noise
        raise DisclosureError(f"site {ctx.site_id}: 'gbdt.dp_bin_counts' is released only with differential "
                              "privacy (a dp release plan)", rule="dp_required", site_id=ctx.site_id)
    grid = np.asarray(params["grid"], dtype=np.float64)
    names = list(params["features"])
    if grid.ndim != 2 or grid.shape[0] != len(names) or grid.shape[1] < 3 or not np.all(np.diff(grid, axis=1) > 0):
        raise ValueError(f"gbdt.dp_bin_counts: grid must be increasing edges of shape ({len(names)}, G + 1), "
                         f"G >= 2, got shape {grid.shape}")
    counts = grid_counts(_features(table, names), grid).ravel()
    return {"counts": counts + rel.noise("counts", counts.size)}


def _register() -> None:
    from ehr_fed.federation.tasks import site_task

    site_task("gbdt.dp_bin_counts", kind="histogram", params=("features", "grid", "dp", "dp_index"))(site_dp_bin_counts)
    dp_task("gbdt.init", "preprocess", _init_sens)
    dp_task("gbdt.dp_bin_counts", "preprocess", _cuts_sens)
    dp_task("gbdt.histograms", "model", _hist_sens)


_register()


# ----------------------------------------------------------------------------------- coordinator side
def resolve_dp(model: Any, federation: Any) -> tuple[DPConfig, dict[str, Any]] | None:
    """The session's budget and options: the model's ``dp``, else the federation's; None = off."""
    requested = requested_dp(model, federation, OPTION_KEYS)
    if requested is None:
        return None
    cfg, opts = requested
    grid = opts.get("cut_grid", DEFAULT_CUT_GRID)
    if not (isinstance(grid, int) and 2 <= grid <= 4096):
        raise DPError(f"dp cut_grid must be an integer in 2..4096, got {grid!r}")
    for key in ("max_leaf", "min_hessian_sigmas"):
        if key in opts and not (isinstance(opts[key], int | float) and opts[key] >= 0):
            raise DPError(f"dp {key} must be a number >= 0, got {opts[key]!r}")
    return cfg, opts


def make_consistent(hist: np.ndarray, mask: np.ndarray, channels: int) -> np.ndarray:
    """Noisy node histograms made to add up to one total per node and channel over every feature.

    The total is the mean of the features' noisy sums (Hessian and count totals clamped at 0); each
    feature's difference to it is spread evenly over that feature's real bins (integer remainder to its
    lowest bins). Post-processing: no privacy cost.
    """
    out = np.array(hist, dtype=np.int64, copy=True)
    m = mask.sum(axis=1).astype(np.int64)  # real bins per feature
    rank = np.where(mask, np.cumsum(mask, axis=1) - 1, np.iinfo(np.int64).max)
    for c in range(channels):
        sums = (out[..., c] * mask[None]).sum(axis=2)  # (nodes, F)
        total = np.rint(sums.mean(axis=1))
        if c > 0:
            total = np.maximum(total, 0.0)
        diff = total.astype(np.int64)[:, None] - sums
        q, r = np.divmod(diff, m[None, :])
        add = q[:, :, None] + (rank[None] < r[:, :, None])
        out[..., c] += np.where(mask[None], add, 0)
    return out


def private_cuts(counts: np.ndarray, grid: np.ndarray, max_bin: int) -> list[np.ndarray]:
    """Cuts per feature: the grid edges at the ``k / max_bin`` quantiles of the noisy counts."""
    cuts = []
    qs = np.linspace(0.0, 1.0, int(max_bin) + 1)[1:-1]
    for j in range(grid.shape[0]):
        c = np.maximum(np.asarray(counts[j], dtype=np.float64), 0.0)
        if not c.sum() > 0:
            cuts.append(np.array([], dtype=np.float64))
            continue
        cdf = np.cumsum(c) / c.sum()
        idx = np.searchsorted(cdf, qs, side="left")  # the bin where the quantile is reached
        idx = idx[idx < grid.shape[1] - 2]  # its upper edge, never the grid's last
        cuts.append(np.unique(grid[j, idx + 1]).astype(np.float64))
    return cuts


class PrivateBoosting:
    """The coordinator's side of one private boosting session: plan, layouts, records, post-processing."""

    def __init__(self, model: Any, fed: Any, cfg: DPConfig, opts: dict[str, Any], names: list[str],
                 need_cuts: bool):
        from ehr_fed.privacy.bounds import default_feature_bounds

        self.model, self.fed, self.opts = model, fed, dict(opts)
        self.names = list(names)
        # the public clipping ranges of the cut grid, checked before anything is released
        self.bounds = (np.asarray(default_feature_bounds(getattr(fed, "study", None), self.names,
                                                         opts.get("feature_bounds")), dtype=float)
                       if need_cuts else None)
        self.depth = int(model.max_depth)
        self.n_levels = int(model.n_estimators) * self.depth
        lw = opts.get("level_weights")
        if lw is not None:
            lw = [float(x) for x in lw]
            if len(lw) != self.depth or not all(x > 0 and math.isfinite(x) for x in lw):
                raise DPError(f"dp level_weights must be {self.depth} positive numbers (one per depth of "
                              f"max_depth={self.depth}), got {opts['level_weights']!r}")
        n_pre = 2 if need_cuts else 1
        self.plan = ReleasePlan(**cfg.model_dump(), releases={"preprocess": n_pre, "model": self.n_levels},
                                weights={"model": (lw or [1.0] * self.depth) * int(model.n_estimators)},
                                plan_id=uuid.uuid4().hex)
        self.p = self.plan.to_params()
        self.n_sites = len(fed.site_ids)
        self.records: list[dict[str, Any]] = []
        self.pre_index = 0
        self.level_noise: dict[int, dict[str, dict[str, float]]] = {}

    def _record(self, task: str, group: str, sens: list[OutputSensitivity], index: int) -> dict[str, Any]:
        outs = calibrate(self.plan, group, sens, task, index)
        rec = {"task": task, "group": group, "rho": sum(o.rho for o in outs.values()),
               "xi": sum(o.xi for o in outs.values()),
               "noise": {k: {"sigma": o.sigma, "l1": o.l1, "l2": o.l2} for k, o in outs.items()}}
        self.records.append(rec)
        return rec

    # -- preprocessing releases -------------------------------------------------------------------
    def init(self) -> tuple[Any, float, float]:
        """The noisy pooled row and positive counts; also sets the public row bound ``n_bound``."""
        idx = self.pre_index
        noise = calibrate(self.plan, "preprocess", _init_sens({}), "gbdt.init", idx)["stats"]
        res = self.fed.secure_sum("gbdt.init", {"dp": self.p, "dp_index": idx},
                                  {"stats": (ROW_BOUND + noise_room(noise), self.n_sites)})
        self.pre_index += 1
        self._record("gbdt.init", "preprocess", _init_sens({}), idx)
        stats = np.asarray(res["stats"], dtype=np.float64)
        n, n_pos = float(np.rint(stats[0])), float(np.rint(stats[1]))
        if not n > 10 * noise.sigma:
            raise ValueError(f"the federation holds too few rows for a private fit at epsilon="
                             f"{self.plan.epsilon:g} (noisy pooled row count {n:.0f}, noise sd {noise.sigma:.1f})")
        self.n_bound = n + 12.0 * noise.sigma  # public bound of the pooled rows (noise beyond 12 sd: never)
        self.n_noise = noise.sigma
        return res, n, float(np.clip(n_pos, 1.0, n - 1.0))

    def cuts(self, max_bin: int) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Private bin cuts from noisy counts on a public grid over each feature's clipping range, and their
        source (the signed release of the counts, the grid and the release index: see :mod:`.cuts`)."""
        names, bounds = self.names, self.bounds
        g = int(self.opts.get("cut_grid", DEFAULT_CUT_GRID))
        grid = np.linspace(bounds[:, 0], bounds[:, 1], g + 1).T
        params = {"features": list(names), "grid": grid, "dp": self.p, "dp_index": self.pre_index}
        noise = calibrate(self.plan, "preprocess", _cuts_sens(params), "gbdt.dp_bin_counts", self.pre_index)
        width = field_width(self.n_bound + noise_room(noise["counts"]))
        res = self.fed.secure_sum("gbdt.dp_bin_counts", params,
                                  {"counts": {"widths": [[len(names) * g, [width]]], "max_terms": self.n_sites}})
        self._record("gbdt.dp_bin_counts", "preprocess", _cuts_sens(params), self.pre_index)
        self.pre_index += 1
        self.feature_bounds = dict(zip(names, bounds.tolist(), strict=True))
        counts = np.rint(np.asarray(res["counts"], dtype=np.float64)).reshape(len(names), g)
        record = getattr(res, "release", None)
        source = {"kind": "private", "grid": grid, "dp_index": params["dp_index"],
                  "record": json.dumps(record, sort_keys=True, separators=(",", ":")) if record else None}
        return private_cuts(counts, grid, max_bin), source

    # -- levels -----------------------------------------------------------------------------------
    def level_index(self, tree: int, level: int) -> int:
        if not 0 <= level < self.depth:
            raise DPError(f"a tree asked for histogram level {level}, but the plan has {self.depth} per tree")
        return tree * self.depth + level

    def histogram_layout(self, params: dict, n_nodes: int, n_valid: int) -> dict[str, dict]:
        """Integer fields of a private level: the public row bound plus the tail bound of the noise."""
        noise = calibrate(self.plan, "model", _hist_sens(params), "gbdt.histograms", int(params["dp_index"]))
        p, n = int(params["precision"]), self.n_bound
        bounds = {"grad": n * 2.0**p, "hess": n * 2.0 ** (p - 2), "count": n}
        widths = [field_width(bounds[c] + noise_room(noise[c])) for c in CHANNEL_NAMES[:int(params["channels"])]]
        return {"hist": {"widths": [[int(n_nodes) * int(n_valid), widths]], "max_terms": self.n_sites}}

    def record_level(self, params: dict) -> None:
        idx = int(params["dp_index"])
        rec = self._record("gbdt.histograms", "model", _hist_sens(params), idx)
        self.level_noise.setdefault(idx % self.depth, rec["noise"])

    def split_params(self, sp: SplitParams, common: dict) -> SplitParams:
        """``min_child_weight`` raised to the noise (:func:`noisy_min_child_weight`), as the release step does."""
        from dataclasses import replace

        self.min_child_weight = max(sp.min_child_weight, noisy_min_child_weight(common))
        return replace(sp, min_child_weight=self.min_child_weight)

    def channel_weights(self, common: dict) -> dict[str, float]:
        return dict(self.opts.get("channel_weights") or DEFAULT_CHANNEL_WEIGHTS[int(common["channels"])])

    def dp_record(self, common: dict) -> dict[str, Any]:
        """The model's ``dp_``: what the session spent and how (see :func:`ehr_fed.privacy.dp.spent_record`)."""
        levels = [r for r in self.records if r["task"] == "gbdt.histograms"]
        per_level = {d: epsilon_spent([(r["rho"], r["xi"])], self.plan.delta)
                     for d, r in ((i % self.depth, r) for i, r in enumerate(levels))}
        return spent_record(
            self.plan, self.records, model="gbdt", precision=int(common["precision"]),
            channels=list(CHANNEL_NAMES[:int(common["channels"])]), levels_planned=self.n_levels,
            levels_released=len(levels), channel_weights=self.channel_weights(common),
            epsilon_per_level={str(d): e for d, e in sorted(per_level.items())},
            noise={"gbdt.init": self.records[0]["noise"],
                   **({"gbdt.dp_bin_counts": self.records[1]["noise"]}
                      if len(self.records) > 1 and self.records[1]["task"] == "gbdt.dp_bin_counts" else {}),
                   "gbdt.histograms": {str(d): n for d, n in sorted(self.level_noise.items())}},
            feature_bounds=getattr(self, "feature_bounds", None), cut_grid=int(self.opts.get("cut_grid",
                                                                                          DEFAULT_CUT_GRID)),
            min_child_weight=getattr(self, "min_child_weight", None),
            max_leaf=float(self.opts.get("max_leaf", 1.0)),
            note="trees are grown from noisy histograms; node Hessians, counts and gains in the model are noisy",
        )


class PrivateHistogramSource(FederatedHistogramSource):
    """:class:`.federated.FederatedHistogramSource` for a private session: one private release per level.

    The requests carry the session's DP settings (bound by every record's link, see
    :data:`.transcript.DP_SETTINGS`); the field widths come from :meth:`PrivateBoosting.histogram_layout`.
    """

    def __init__(self, session: PrivateBoosting, federation: Any, common: dict, n_bins: int,
                 sites: list[str] | None = None):
        common = {**common, "dp": session.p, "dp_channel_weights": session.channel_weights(common),
                  "dp_max_leaf": float(session.opts.get("max_leaf", 1.0)),
                  "dp_min_hessian_sigmas": float(session.opts.get("min_hessian_sigmas", 2.0))}
        super().__init__(federation, common, int(math.ceil(session.n_bound)), n_bins, sites=sites)
        self.session = session
        self.tree_index, self.level = -1, 0

    def begin_tree(self, trees: list[Tree]) -> None:
        super().begin_tree(trees)
        self.tree_index, self.level = self.tree_index + 1, 0

    def _level_params(self, tree: Tree, request: LevelRequest) -> dict:
        p = super()._level_params(tree, request)
        p["dp_index"] = self.session.level_index(self.tree_index, self.level)
        return p

    def _segments(self, tree: Tree, nodes: list[int], params: dict) -> list:
        layout = self.session.histogram_layout(params, len(nodes), int(self.mask.sum()))
        return layout["hist"]["widths"]

    def _summed(self, params: dict) -> None:
        self.level += 1
        self.session.record_level(params)
