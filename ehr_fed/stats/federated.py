"""Federated descriptive statistics: everything through ``Federation.secure_sum`` (or, by site, through
``Federation.query``) and the sites' disclosure policy.

Quantiles without releasing extreme values
------------------------------------------
A site's minimum or maximum is one patient's value, so ranges are never taken from the data directly:

1. *Coarse pass*: an encrypted histogram over a fixed, public grid (``0, ±{1, 2, 5}·10^k``,
   k = -3..6). The decrypting site merges bins holding fewer than ``min_cell_count`` rows into their
   neighbours. The *robust range* runs from the lower edge of the last bin of the first merged group to
   the upper edge of the first bin of the last merged group: at most ``min_cell_count - 1`` extreme rows
   on each side fall outside it, and no edge is finer than the public grid.
2. *Fine pass*: an encrypted histogram with ``FINE_BINS`` equal bins over that range (values outside are
   clipped into the end bins), again merged at the decrypting site. Quantiles are interpolated linearly
   within bins (merged groups spread their count evenly over their bins); their resolution is
   ``range / FINE_BINS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ehr_fed.stats.tasks import META_COLUMNS, MOMENT_COUNTS

FINE_BINS = 1024
_BIG = 1e12


def coarse_grid() -> np.ndarray:
    """The public coarse grid: ``-1e12, -5e6 .. -1e-3, 0, 1e-3 .. 5e6, 1e12``."""
    pos = np.array([m * 10.0**k for k in range(-3, 7) for m in (1, 2, 5)])
    return np.concatenate([[-_BIG], -pos[::-1], [0.0], pos, [_BIG]])


def _n_sites(fed) -> int:
    return len(fed.site_ids)


def _columns(fed, columns) -> list[str]:
    if columns is not None:
        return list(columns)
    study = getattr(fed, "study", None)
    feats = getattr(study, "features", None)
    if feats:
        return [f if isinstance(f, str) else f.name for f in feats]
    res = fed.query("stats.columns", {})
    return list(next(iter(res.values()))["columns"])


# -- per-site releases ----------------------------------------------------------------------------
#: the outputs of each per-site task that the common suppression flags cover
_PER_SITE_OUTPUTS = {"stats.count": ("n", "positives"),
                     "stats.moments": ("n", "sum", "sumsq", "n_rows", "n_missing", "n_ones", "n_zeros")}


def per_site(fed, task: str, params: dict) -> dict[str, dict]:
    """Each site's own aggregates (``stats.count`` or ``stats.moments``), with one suppression for all.

    First a secure sum counts, per cell, the sites that would hide it under their own rules; then every site
    answers the query hiding each cell some site hides (:mod:`ehr_fed.federation.crosssite`), so no pooled
    sum minus the other sites' values gives back a hidden cell. Returns ``{site_id: result}``.
    """
    from ehr_fed.federation.crosssite import FLAGS_TASK, flag_params

    if task not in _PER_SITE_OUTPUTS:
        raise ValueError(f"per-site releases exist for {sorted(_PER_SITE_OUTPUTS)}, not {task!r}")
    k = _n_sites(fed)
    flags = fed.secure_sum(FLAGS_TASK, flag_params(task, params), {n: (2.0, k) for n in _PER_SITE_OUTPUTS[task]})
    return fed.query(task, {**params, "flags": flags.release})


def site_counts(fed) -> pd.DataFrame:
    """Index events and positives per site (cells some site must hide read NaN at every site)."""
    replies = per_site(fed, "stats.count", {})
    return pd.DataFrame({sid: {"n": r["n"], "positives": r["positives"]} for sid, r in replies.items()}).T.astype(float)


# -- moments ---------------------------------------------------------------------------------------
#: public per-site bounds of the encrypted sums (fixed-point headroom; a site whose sum exceeds one
#: refuses with a clear error: pass larger bounds to :func:`moments`). Absolute precision of a pooled
#: sum is about ``bound * 2**-53`` times the number of sites.
ROW_BOUND = 1e9
SUM_BOUND = 1e10
SUMSQ_BOUND = 1e13


def moments(fed, columns: Sequence[str], by: str | None = None, *, sum_bound: float = SUM_BOUND,
            sumsq_bound: float = SUMSQ_BOUND) -> dict[str, np.ndarray]:
    """Pooled moments of ``columns`` per group, arrays of shape (n_groups, n_columns), small cells NaN.

    Keys: ``n`` (non-missing), ``n_rows``, ``n_missing``, ``n_ones`` / ``n_zeros`` (0/1 columns; 0
    elsewhere), ``sum``, ``sumsq``, ``mean`` and ``m2`` (sum of
    squared deviations from the mean). Two rounds: raw sums with the public bounds, then sums of
    deviations from that approximate mean, with bounds derived from the first round's aggregates
    (a site's sum of squared deviations about the pooled mean never exceeds the pooled one), so
    ``mean`` and ``m2`` are exact to about 1e-15 relative, free of the fixed-point quantum and of the
    cancellation in ``sumsq - n mean**2``.
    """
    k = _n_sites(fed)
    cols = list(columns)
    counts = {c: (ROW_BOUND, k) for c in MOMENT_COUNTS}
    layout = {**counts, "sum": (sum_bound, k), "sumsq": (sumsq_bound, k)}
    raw = {key: np.asarray(v, dtype=float) for key, v in
           fed.secure_sum("stats.moments", {"columns": cols, "by": by}, layout).items()}
    n = raw["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        center = np.where(n > 0, raw["sum"] / n, 0.0)
        approx_m2 = raw["sumsq"] - n * center**2
    # a hidden cell gets no centre (NaN): the sites send 0 for it, so its sums bound nothing
    center = np.where(np.isnan(n) | np.isnan(raw["sum"]), np.nan, center)
    n_tot = float(np.nansum(raw["n_rows"][:, :1])) or 1.0
    m2_bound = float(np.nanmax(np.abs(approx_m2), initial=0.0))
    m2_bound = 2.0 * m2_bound + 1e-3 * max(1.0, k * sumsq_bound * 2.0**-50) + 1e-6
    dev_bound = float(np.sqrt(n_tot * m2_bound)) + 1e-6
    dev = fed.secure_sum("stats.centered", {"columns": cols, "by": by, "center": center},
                         {**counts, "dev": (dev_bound, k), "m2": (m2_bound, k)})
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.asarray(dev["dev"], dtype=float)
        for c in MOMENT_COUNTS:  # a cell hidden in either release is hidden in both
            raw[c] = np.where(np.isnan(np.asarray(dev[c], dtype=float)), np.nan, raw[c])
        raw["mean"] = center + d / n
        raw["m2"] = np.maximum(np.asarray(dev["m2"], dtype=float) - d * d / n, 0.0)
    return raw


def _mean_std(m, ddof: int = 0):
    n = m["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if "mean" in m and "m2" in m:
            mean, m2 = m["mean"], m["m2"]
        else:  # one site's own exact float sums
            mean = m["sum"] / n
            m2 = m["sumsq"] - n * mean**2
        var = m2 / (n - ddof)
    return mean, np.sqrt(np.maximum(var, 0.0))


def federated_standardization(fed, columns: Sequence[str], *, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and standard deviation (``ddof=0`` like scikit-learn's StandardScaler) of ``columns``
    over the non-missing values of every site. Returns two float arrays of shape (n_columns,); a column
    with fewer than ``min_cell_count`` values gets NaN."""
    m = moments(fed, columns)
    mean, std = _mean_std(m, ddof)
    return mean[0], std[0]


# -- histograms and quantiles ---------------------------------------------------------------------
class Histogram:
    """Pooled, merged histogram counts and the bins the decrypting site merged.

    ``counts`` (n_groups, n_columns, n_bins): a merged group's count sits in its first bin;
    :meth:`groups` gives ``(first_bin, last_bin, count)`` for every non-empty group of one row.
    ``merged``: the decrypting site's merged groups as it released them (``[flat_row, bin, bin, ...]``);
    ``release``: its signed release record of ``counts`` (None for a histogram built locally).
    """

    def __init__(self, edges: np.ndarray, counts: np.ndarray, merged: list[list[int]],
                 release: dict | None = None):
        self.edges = edges
        self.counts = counts
        self.merged = [[int(x) for x in entry] for entry in merged or []]
        self.release = release
        n_cols, n_bins = counts.shape[1], counts.shape[2]
        self._merged: dict[tuple[int, int], dict[int, int]] = {}
        for entry in self.merged:
            flat_row, bins = int(entry[0]), [int(b) for b in entry[1:]]
            key = divmod(flat_row, n_cols)
            self._merged.setdefault(key, {})[bins[0]] = bins[-1]
        self.n_bins = n_bins

    def groups(self, g: int, j: int) -> list[tuple[int, int, float]]:
        row = np.nan_to_num(self.counts[g, j])
        ends = self._merged.get((g, j), {})
        return [(int(i), ends.get(int(i), int(i)), float(row[i])) for i in np.flatnonzero(row > 0)]


def histogram(fed, columns: Sequence[str], edges: np.ndarray, by: str | None = None) -> Histogram:
    """Pooled histogram over public ``edges`` (n_columns, n_bins + 1), small bins merged at the site."""
    edges = np.asarray(edges, dtype=np.float64)
    out = fed.secure_sum("stats.histogram", histogram_params(columns, edges, by),
                         {"hist": (ROW_BOUND, _n_sites(fed))})
    return Histogram(edges, np.asarray(out["hist"]), out.suppressed.get("hist", []),
                     getattr(out, "release", None))


def histogram_params(columns: Sequence[str], edges: np.ndarray, by: str | None = None) -> dict:
    """The parameters of a ``stats.histogram`` request (what its release record's digest names)."""
    return {"columns": list(columns), "edges": np.asarray(edges, dtype=np.float64), "by": by}


def coarse_edges(n_columns: int) -> np.ndarray:
    """The edges of the coarse pass: the public grid for every column."""
    return np.tile(coarse_grid(), (int(n_columns), 1))


def range_from_coarse(hist: Histogram) -> np.ndarray:
    """(n_columns, 2) robust range from a merged coarse-grid histogram (see module doc); NaN: no values."""
    grid = coarse_grid()
    out = np.full((hist.counts.shape[1], 2), np.nan)
    for j in range(hist.counts.shape[1]):
        groups = hist.groups(0, j)
        if not groups:
            continue
        lo_bin = groups[0][1]           # last bin of the first group
        hi_bin = groups[-1][0]          # first bin of the last group
        if hi_bin < lo_bin:             # a single group
            lo_bin = hi_bin = groups[0][0]
        out[j] = grid[lo_bin], grid[hi_bin + 1]
    return out


def robust_range(fed, columns: Sequence[str]) -> np.ndarray:
    """(n_columns, 2) robust lower / upper range from the coarse public-grid histogram (see module doc)."""
    return range_from_coarse(histogram(fed, columns, coarse_edges(len(columns))))


def fine_edges(rng: np.ndarray, bins: int = FINE_BINS) -> np.ndarray:
    """Edges (n_columns, bins + 1) of the fine pass: ``bins`` equal bins over each robust range."""
    lo = np.where(np.isnan(rng[:, 0]), 0.0, rng[:, 0])
    hi = np.where(np.isnan(rng[:, 1]), 1.0, rng[:, 1])
    return np.linspace(lo, hi, bins + 1).T


def fine_histograms(fed, columns: Sequence[str], bins: int = FINE_BINS, by: str | None = None) -> Histogram:
    """Merged histograms with ``bins`` equal bins over each column's robust range."""
    return histogram(fed, columns, fine_edges(robust_range(fed, columns), bins), by=by)


def _quantiles_from_hist(edges: np.ndarray, groups, n_bins: int, qs: np.ndarray) -> np.ndarray:
    """Linear interpolation of quantiles; merged groups spread their count over their bins."""
    spread = np.zeros(n_bins)
    for a, b, c in groups:
        spread[a:b + 1] = c / (b - a + 1)
    total = spread.sum()
    if total <= 0:
        return np.full(len(qs), np.nan)
    cum = np.concatenate([[0.0], np.cumsum(spread)]) / total
    return np.interp(qs, cum, edges)


def quantiles(fed, columns: Sequence[str], qs: Sequence[float] = (0.25, 0.5, 0.75)) -> pd.DataFrame:
    """Federated quantiles of ``columns`` (rows) at ``qs`` (columns), from merged fine histograms."""
    columns = list(columns)
    qs = np.asarray(qs, dtype=float)
    h = fine_histograms(fed, columns)
    data = [_quantiles_from_hist(h.edges[j], h.groups(0, j), h.n_bins, qs) for j in range(len(columns))]
    return pd.DataFrame(data, index=pd.Index(columns, name="feature"), columns=[f"q{q:g}" for q in qs])


def federated_bin_edges(fed, columns: Sequence[str], max_bin: int = 256) -> dict[str, np.ndarray]:
    """Cut values for histogram boosting from federated quantiles: ``{column: cuts}``.

    Cuts are strictly increasing float64, at most ``max_bin - 1`` per column. A column whose merged
    fine histogram has at most ``max_bin`` non-empty groups (e.g. binary, counts) gets one cut at the
    lower edge of each group after the first, so every distinct value keeps its own bin; other columns
    get the ``k / max_bin`` quantiles. Resolution and the range rule: see the module docstring.
    """
    return bin_edge_sketch(fed, columns, max_bin)[0]


def bin_edge_sketch(fed, columns: Sequence[str], max_bin: int = 256) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`federated_bin_edges` and the sketch they follow from: ``(cuts, source)``.

    ``source`` holds the two signed ``stats.histogram`` releases (coarse and fine pass) as canonical JSON
    text with the merged groups the decrypting site reported (:func:`merged_runs`), ``{"kind": "sketch",
    "coarse": .., "coarse_merged": .., "fine": .., "fine_merged": ..}``: what a site needs to recompute the
    cuts itself (:func:`cuts_from_sketch`), as a boosting site does before it computes anything over them.
    """
    import json

    columns = list(columns)
    if max_bin < 2:
        raise ValueError(f"max_bin must be >= 2, got {max_bin}")
    coarse = histogram(fed, columns, coarse_edges(len(columns)))
    fine = histogram(fed, columns, fine_edges(range_from_coarse(coarse)))
    cuts = cuts_from_fine(fine, max_bin)
    source = {"kind": "sketch", "coarse_merged": merged_runs(coarse.merged), "fine_merged": merged_runs(fine.merged)}
    for name, h in (("coarse", coarse), ("fine", fine)):
        source[name] = (json.dumps(h.release, sort_keys=True, separators=(",", ":"))
                        if isinstance(h.release, dict) else None)
    return dict(zip(columns, cuts, strict=True)), source


def merged_runs(merged: list[list[int]]) -> np.ndarray:
    """Merged groups ``[flat_row, bin, bin, ...]`` (runs of bins) as an int64 array of ``(flat_row, first, last)``."""
    return np.array([[int(g[0]), int(g[1]), int(g[-1])] for g in merged], dtype=np.int64).reshape(-1, 3)


def cuts_from_fine(h: Histogram, max_bin: int) -> list[np.ndarray]:
    """The cuts of every column of a merged fine histogram (the rule of :func:`federated_bin_edges`)."""
    out = []
    for j in range(h.counts.shape[1]):
        groups = h.groups(0, j)
        if len(groups) <= max_bin:
            cuts = np.array([h.edges[j][a] for a, _, _ in groups[1:]])
        else:
            qs = np.linspace(0, 1, max_bin + 1)[1:-1]
            cuts = np.unique(_quantiles_from_hist(h.edges[j], groups, h.n_bins, qs))
        cuts = np.unique(cuts[np.isfinite(cuts)])
        if cuts.size > max_bin - 1:
            cuts = cuts[np.unique(np.linspace(0, cuts.size - 1, max_bin - 1).round().astype(int))]
        out.append(cuts.astype(np.float64))
    return out


def cuts_from_sketch(coarse_counts: np.ndarray, coarse_merged: list, fine_counts: np.ndarray, fine_merged: list,
                     max_bin: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fine pass's edges and the cuts, recomputed from the released coarse and fine histograms alone
    (the same functions as :func:`bin_edge_sketch`); ``(fine edges, cuts per column)``."""
    coarse_counts = np.asarray(coarse_counts, dtype=np.float64)
    coarse = Histogram(coarse_edges(coarse_counts.shape[1]), coarse_counts, coarse_merged)
    edges = fine_edges(range_from_coarse(coarse))
    fine = Histogram(edges, np.asarray(fine_counts, dtype=np.float64), fine_merged)
    return edges, cuts_from_fine(fine, max_bin)


__all__ = ["META_COLUMNS", "Histogram", "bin_edge_sketch", "coarse_edges", "coarse_grid", "cuts_from_fine",
           "cuts_from_sketch", "federated_bin_edges", "federated_standardization", "fine_edges", "fine_histograms",
           "histogram", "histogram_params", "merged_runs", "moments", "per_site", "quantiles", "range_from_coarse", "robust_range",
           "site_counts"]
