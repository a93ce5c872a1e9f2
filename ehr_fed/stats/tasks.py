"""Site tasks of the federated statistics (local plaintext statistics on the site's feature table).

Every task returns only aggregates; every count-bearing output (derived ones too: missing counts, the
ones and zeros of a 0/1 column) is declared so the site (and the decrypting site, on sums) suppresses
cells below ``min_cell_count`` and, complementarily, the cells that would give them back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr_fed.federation.crosssite import CROSS_SITE_TASKS, FLAGS_TASK
from ehr_fed.federation.tasks import SiteContext, get_task, site_task
from ehr_fed.privacy.cells import protect

META_COLUMNS = ("site_id", "person_key", "index_time", "label")


def feature_columns(table: pd.DataFrame, columns=None) -> list[str]:
    """The feature columns of a feature table (all after the four key columns), or ``columns`` checked."""
    feats = [c for c in table.columns if c not in META_COLUMNS]
    if columns is None:
        return feats
    cols = list(columns)
    bad = [c for c in cols if c not in table.columns or c in ("site_id", "person_key", "index_time")]
    if bad:
        raise KeyError(f"unknown or non-numeric feature column(s) {bad}; feature columns: {feats}")
    return cols


def _groups(table: pd.DataFrame, by: str | None) -> list[np.ndarray]:
    """Row masks: overall, or per label value (0, 1)."""
    if by is None:
        return [np.ones(len(table), dtype=bool)]
    if by == "label":
        lab = table["label"].to_numpy()
        return [lab == 0, lab == 1]
    raise ValueError(f"by={by!r}: expected None or 'label'")


def _column_cells(params: dict) -> list[str]:
    """The statistics of a column (moments, histograms) over one participant set: one key per column. (A
    site's row count is no such cell: it is what a per-site count shows anyway.)"""
    cols = params.get("columns")
    return [f"col:{c}" for c in (cols if isinstance(cols, list) else [])]


@site_task("stats.count", kind="count", counts={"n": (), "positives": ()}, params=("flags",))
def count(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Rows (index events) and positives at this site: ``{"n": float, "positives": float}``."""
    n = float(len(table))
    pos = float(table["label"].sum()) if "label" in table and n else 0.0
    return {"n": n, "positives": pos}


#: the count outputs of the moment tasks, each with what it must hide along with it. Per cell
#: ``n + n_missing = n_rows`` and, for a 0/1 column, ``n_ones + n_zeros = n`` (the sum of a 0/1 column is
#: the count ``n_ones``; its sum of squares, mean and spread give it too), so hiding one count hides its
#: partners and every sum that would give it back; axis 0 (the ``by`` groups) partitions the rows, so a
#: hidden group hides another group too (:func:`ehr_fed.privacy.suppress`).
MOMENT_COUNTS = {
    "n_rows": ("n", "n_missing", "n_ones", "n_zeros"),
    "n_missing": ("n", "n_ones", "n_zeros"),
    "n": ("n_missing", "n_ones", "n_zeros"),
    "n_ones": ("n_zeros",),
    "n_zeros": ("n_ones",),
}


def _moment_counts(*sums: str) -> dict[str, tuple[str, ...]]:
    return {k: (*deps, *sums) for k, deps in MOMENT_COUNTS.items()}


def _counts(x: np.ndarray, mask: np.ndarray, binary: np.ndarray) -> dict[str, np.ndarray]:
    xs = x[mask]
    ok = ~np.isnan(xs)
    return {
        "n": ok.sum(axis=0).astype(float),
        "n_rows": np.full(x.shape[1], float(mask.sum())),
        "n_missing": (~ok).sum(axis=0).astype(float),
        "n_ones": np.where(binary, (xs == 1).sum(axis=0), 0).astype(float),
        "n_zeros": np.where(binary, (xs == 0).sum(axis=0), 0).astype(float),
    }


def _binary(x: np.ndarray) -> np.ndarray:
    """Columns whose every observed value at this site is 0 or 1."""
    with np.errstate(invalid="ignore"):
        return np.all(np.isnan(x) | (x == 0) | (x == 1), axis=0)


@site_task("stats.moments", kind="moments", counts=_moment_counts("sum", "sumsq"), cells=_column_cells,
           params=("columns", "by", "flags", "dp", "dp_clip"))
def moments(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Per group (``by``: None or "label") and column: non-missing count, sum, sum of squares,
    number of rows and number missing, and for 0/1 columns the numbers of ones and zeros (0 elsewhere).
    Arrays of shape (n_groups, n_columns)."""
    cols = feature_columns(table, params.get("columns"))
    by = params.get("by")
    x = table[cols].to_numpy(dtype=np.float64)
    binary = _binary(x)
    out: dict[str, list] = {k: [] for k in ("n", "sum", "sumsq", "n_rows", "n_missing", "n_ones", "n_zeros")}
    for mask in _groups(table, by):
        xz = np.where(np.isnan(x[mask]), 0.0, x[mask])
        out["sum"].append(xz.sum(axis=0))
        out["sumsq"].append((xz * xz).sum(axis=0))
        for k, v in _counts(x, mask, binary).items():
            out[k].append(v)
    return {k: np.array(v, dtype=np.float64).reshape(-1, len(cols)) for k, v in out.items()}


@site_task("stats.histogram", kind="histogram", histograms=("hist",), edges="edges", cells=_column_cells,
           params=("columns", "edges", "by"))
def histogram(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Counts of each column's non-missing values in public bins.

    ``params``: ``columns`` (list of str), ``edges`` (array (n_columns, n_bins + 1), increasing rows; the
    bins are ``[e_i, e_i+1)``, values outside the edges are clipped into the first / last bin), optional
    ``by`` ("label": one histogram per label value). Returns ``hist`` of shape
    (n_groups, n_columns, n_bins).
    """
    cols = feature_columns(table, params["columns"])
    edges = np.asarray(params["edges"], dtype=np.float64)
    if edges.ndim != 2 or edges.shape[0] != len(cols) or edges.shape[1] < 2:
        raise ValueError(f"edges must have shape (n_columns={len(cols)}, n_bins + 1), got {edges.shape}")
    n_bins = edges.shape[1] - 1
    groups = _groups(table, params.get("by"))
    out = np.zeros((len(groups), len(cols), n_bins))
    for j, c in enumerate(cols):
        x = table[c].to_numpy(dtype=np.float64)
        idx = np.clip(np.searchsorted(edges[j], x, side="right") - 1, 0, n_bins - 1)
        ok = ~np.isnan(x)
        for g, mask in enumerate(groups):
            sel = ok & mask
            out[g, j] = np.bincount(idx[sel], minlength=n_bins)[:n_bins]
    return {"hist": out}


@site_task("stats.columns", kind="other", params=())
def columns(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """The feature column names of the site's table (names only, no values)."""
    return {"columns": feature_columns(table)}


@site_task("stats.centered", kind="moments", counts=_moment_counts("dev", "m2"), cells=_column_cells,
           params=("columns", "by", "center"))
def centered(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Sums of deviations and squared deviations from a public ``center`` (n_groups, n_columns), with the
    same counts as ``stats.moments`` (so the same cells are hidden in both releases)."""
    cols = feature_columns(table, params.get("columns"))
    center = np.asarray(params["center"], dtype=np.float64)
    x = table[cols].to_numpy(dtype=np.float64)
    binary = _binary(x)
    out: dict[str, list] = {k: [] for k in ("dev", "m2", "n", "n_rows", "n_missing", "n_ones", "n_zeros")}
    for g, mask in enumerate(_groups(table, params.get("by"))):
        d = x[mask] - center[g]
        dz = np.where(np.isnan(d), 0.0, d)
        out["dev"].append(dz.sum(axis=0))
        out["m2"].append((dz * dz).sum(axis=0))
        for k, v in _counts(x, mask, binary).items():
            out[k].append(v)
    return {k: np.array(v, dtype=np.float64).reshape(-1, len(cols)) for k, v in out.items()}


def _own_mask(task_name: str, params: dict, table, ctx: SiteContext) -> dict[str, np.ndarray]:
    task = get_task(task_name)
    result = task.fn(table, params, ctx)
    before = {k: np.asarray(v, dtype=float) for k, v in result.items()}
    protect(result, task.counts, task.histograms, ctx.policy.min_cell_count)
    out = {}
    for name, was in before.items():
        now = np.asarray(np.nan if result[name] is None else result[name], dtype=float)
        out[name] = (np.isnan(now) & ~np.isnan(was)).astype(float).reshape(was.shape)
    return out


@site_task(FLAGS_TASK, kind="other", params=("task", "params"))
def site_flags(table, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """1 for every cell of the per-site task's result that this site hides under its own rules, else 0."""
    task = params.get("task")
    if task not in CROSS_SITE_TASKS:
        raise ValueError(f"flags are computed for the per-site tasks {list(CROSS_SITE_TASKS)}, not {task!r}")
    inner = params.get("params") or {}
    if not isinstance(inner, dict):
        raise ValueError("flags: params must be the per-site task's parameters (a mapping)")
    return _own_mask(task, inner, table, ctx)
