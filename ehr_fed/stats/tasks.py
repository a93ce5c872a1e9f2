"""Site tasks of the federated statistics (local plaintext statistics on the site's feature table).

Every task returns only aggregates; counts are declared so the site (and the decrypting site, on sums)
suppresses cells below ``min_cell_count``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr_fed.federation.tasks import SiteContext, site_task

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


@site_task("stats.count", kind="count", counts={"n": (), "positives": ()})
def count(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Rows (index events) and positives at this site: ``{"n": float, "positives": float}``."""
    n = float(len(table))
    pos = float(table["label"].sum()) if "label" in table and n else 0.0
    return {"n": n, "positives": pos}


@site_task("stats.moments", kind="moments",
           counts={"n": ("sum", "sumsq"), "n_rows": (), "n_missing": ()})
def moments(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Per group (``by``: None or "label") and column: non-missing count, sum, sum of squares,
    number of rows and number missing. Arrays of shape (n_groups, n_columns)."""
    cols = feature_columns(table, params.get("columns"))
    by = params.get("by")
    x = table[cols].to_numpy(dtype=np.float64)
    out = {k: [] for k in ("n", "sum", "sumsq", "n_rows", "n_missing")}
    for mask in _groups(table, by):
        xs = x[mask]
        ok = ~np.isnan(xs)
        xz = np.where(ok, xs, 0.0)
        out["n"].append(ok.sum(axis=0).astype(float))
        out["sum"].append(xz.sum(axis=0))
        out["sumsq"].append((xz * xz).sum(axis=0))
        out["n_rows"].append(np.full(len(cols), float(mask.sum())))
        out["n_missing"].append((~ok).sum(axis=0).astype(float))
    return {k: np.array(v, dtype=np.float64).reshape(-1, len(cols)) for k, v in out.items()}


@site_task("stats.histogram", kind="histogram", histograms=("hist",))
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


@site_task("stats.columns", kind="other")
def columns(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """The feature column names of the site's table (names only, no values)."""
    return {"columns": feature_columns(table)}


@site_task("stats.centered", kind="moments", counts={"n": ("dev", "m2")})
def centered(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Sums of deviations and squared deviations from a public ``center`` (n_groups, n_columns)."""
    cols = feature_columns(table, params.get("columns"))
    center = np.asarray(params["center"], dtype=np.float64)
    x = table[cols].to_numpy(dtype=np.float64)
    dev, m2, n = [], [], []
    for g, mask in enumerate(_groups(table, params.get("by"))):
        d = x[mask] - center[g]
        ok = ~np.isnan(d)
        dz = np.where(ok, d, 0.0)
        dev.append(dz.sum(axis=0))
        m2.append((dz * dz).sum(axis=0))
        n.append(ok.sum(axis=0).astype(float))
    return {"dev": np.array(dev), "m2": np.array(m2), "n": np.array(n)}
