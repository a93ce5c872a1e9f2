"""Notebook API: federated summaries as DataFrames (overall, by label, by site) and a clinical Table 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ehr_fed.stats.federated import _columns, _mean_std, moments, quantiles

_GROUP_NAMES = {None: ["overall"], "label": ["label=0", "label=1"]}


def _frame(m: dict[str, np.ndarray], columns: list[str], groups: list[str]) -> pd.DataFrame:
    mean, std = _mean_std(m, ddof=1)
    rows = []
    for g, gname in enumerate(groups):
        for j, c in enumerate(columns):
            n_rows, n_miss = m["n_rows"][g, j], m["n_missing"][g, j]
            rows.append({
                "group": gname, "feature": c, "n": m["n"][g, j], "missing": n_miss,
                "missing_pct": 100.0 * n_miss / n_rows if n_rows and np.isfinite(n_rows) else np.nan,
                "mean": mean[g, j], "std": std[g, j],
            })
    return pd.DataFrame(rows).set_index(["group", "feature"])


def describe(fed, columns: Sequence[str] | None = None, by: str | None = None,
             quantile_levels: Sequence[float] | None = (0.25, 0.5, 0.75)) -> pd.DataFrame:
    """Federated count, missingness, mean, standard deviation (ddof=1) and quantiles of every feature.

    Returns a DataFrame indexed by (group, feature); ``by="label"`` gives one group per label value.
    Cells over fewer than the sites' ``min_cell_count`` rows are NaN (suppressed at the site).
    Quantiles are for the whole cohort (``by=None`` only).
    """
    cols = _columns(fed, columns)
    df = _frame(moments(fed, cols, by=by), cols, _GROUP_NAMES[by])
    if quantile_levels and by is None:
        q = quantiles(fed, cols, quantile_levels)
        q.index = pd.MultiIndex.from_product([["overall"], q.index], names=["group", "feature"])
        df = df.join(q)
    return df


def describe_by_site(fed, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-site count, missingness, mean and std (each site's own, disclosure-checked aggregates)."""
    cols = _columns(fed, columns)
    replies = fed.query("stats.moments", {"columns": cols, "by": None})
    frames = []
    for sid, r in replies.items():
        m = {k: np.asarray(v, dtype=float) for k, v in r.items()}
        frames.append(_frame(m, cols, [sid]))
    out = pd.concat(frames) if frames else pd.DataFrame()
    out.index = out.index.set_names(["site", "feature"])
    return out


def missingness(fed, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Missing values per feature, overall and by site."""
    overall = describe(fed, columns, quantile_levels=None)[["missing", "missing_pct"]].droplevel(0)
    by_site = describe_by_site(fed, columns)["missing_pct"].unstack(0)
    return overall.join(by_site.add_prefix("missing_pct_"))


def _is_binary(m, j) -> bool:
    """0/1 feature, judged from aggregates only: integer sum and m2 == n p (1 - p)."""
    n, p, m2 = m["n"][0, j], m["mean"][0, j], m["m2"][0, j]
    if not (np.isfinite(n) and np.isfinite(p) and n > 0):
        return False
    s = n * p
    return bool(abs(s - round(s)) < 1e-6 and abs(m2 - n * p * (1 - p)) < 1e-6 * max(1.0, n))


def table_one(fed, columns: Sequence[str] | None = None, by: str = "label") -> pd.DataFrame:
    """The cohort's "Table 1": N, then per feature ``n (%)`` for binary features or ``mean (SD)``,
    and missing ``n (%)``, for the whole cohort and for each label value."""
    cols = _columns(fed, columns)
    overall = moments(fed, cols, by=None)
    grouped = moments(fed, cols, by=by)
    sets = [("Overall", overall, 0), ("label=0", grouped, 0), ("label=1", grouped, 1)]
    rows: dict[str, dict[str, str]] = {"N": {}}
    for name, m, g in sets:
        n_rows = m["n_rows"][g, 0] if cols else np.nan
        rows["N"][name] = _fmt_int(n_rows)
    for j, c in enumerate(cols):
        binary = _is_binary(overall, j)
        label = f"{c}, n (%)" if binary else f"{c}, mean (SD)"
        rows[label] = {}
        rows[f"{c} missing, n (%)"] = {}
        for name, m, g in sets:
            n, s, nr, miss = m["n"][g, j], m["sum"][g, j], m["n_rows"][g, j], m["n_missing"][g, j]
            if binary:
                rows[label][name] = f"{_fmt_int(s)} ({100 * s / n:.1f})" if np.isfinite(s) and n else "suppressed"
            else:
                mean, std = _mean_std({k: np.asarray(v)[g:g + 1, j:j + 1] for k, v in m.items()}, ddof=1)
                rows[label][name] = (f"{mean[0, 0]:.2f} ({std[0, 0]:.2f})" if np.isfinite(mean[0, 0])
                                     else "suppressed")
            rows[f"{c} missing, n (%)"][name] = (f"{_fmt_int(miss)} ({100 * miss / nr:.1f})"
                                                 if np.isfinite(miss) and nr else "suppressed")
    return pd.DataFrame.from_dict(rows, orient="index")[[s[0] for s in sets]]


def _fmt_int(v) -> str:
    return f"{int(round(float(v)))}" if np.isfinite(v) else "suppressed"
