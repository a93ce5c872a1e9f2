"""Notebook API: federated summaries as DataFrames (overall, by label, by site) and a clinical Table 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ehr_fed.stats.federated import (
    FINE_BINS,
    _columns,
    _mean_std,
    histogram,
    moments,
    per_site,
    quantiles,
    robust_range,
)

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
    replies = per_site(fed, "stats.moments", {"columns": cols, "by": None})
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


#: how Table 1 summarises each variable type
SUMMARY_LABELS = {"binary": "n (%)", "normal": "mean (SD)", "skewed": "median [IQR]"}


def table_one(fed, columns: Sequence[str] | None = None, by: str = "label", *, study=None) -> pd.DataFrame:
    """The cohort's "Table 1", for the whole cohort and for each outcome group.

    One row per variable, named from the study spec with its unit and summary: ``n (%)`` for yes/no
    variables, ``mean (SD)`` for roughly normal measurements (age, labs), ``median [IQR]`` for counts, scores
    and durations (quartiles from the federated histograms). A "missing, n (%)" row follows a variable only
    where some value is missing. The first row ``N`` counts index events; cells over fewer rows than a
    site's minimum cell count read "suppressed". Columns: ``Overall`` and the outcome groups named from the
    study ("Not readmitted", "Readmitted within 30 days"). ``attrs["sub_rows"]`` lists the missing rows.
    """
    from ehr_fed.stats import display

    study = study if study is not None else display.study_of(fed)
    cols = _columns(fed, columns)
    overall = moments(fed, cols, by=None)
    grouped = moments(fed, cols, by=by)
    names = ["Overall", *display.outcome_names(study)]
    sets = [(names[0], overall, 0), (names[1], grouped, 0), (names[2], grouped, 1)]
    kinds = {j: display.variable_type(study, c) or ("binary" if _is_binary(overall, j) else "normal")
             for j, c in enumerate(cols)}
    skewed = [j for j, k in kinds.items() if k == "skewed"]
    iqr: dict[tuple[int, int], str] = {}
    if skewed:
        sk_cols = [cols[j] for j in skewed]
        integer = [display.integer_valued(study, c) for c in sk_cols]
        rng = robust_range(fed, sk_cols)
        edges = [display_edges(lo, hi, FINE_BINS, True) if whole else np.linspace(lo, hi, FINE_BINS + 1)
                 if np.isfinite(lo) and np.isfinite(hi) else np.linspace(0.0, 1.0, FINE_BINS + 1)
                 for (lo, hi), whole in zip(rng, integer, strict=True)]
        overall_h = histograms_on_edges(fed, sk_cols, edges)
        grouped_h = histograms_on_edges(fed, sk_cols, edges, by=by)
        for i, j in enumerate(skewed):
            e = overall_h[i][0]
            spreads = [_spread(len(e) - 1, g) for g in (overall_h[i][1][0], *grouped_h[i][1])]
            if spreads[1].sum() > 0 and spreads[2].sum() > 0:
                # the outcome groups partition the cohort: their sum is the cohort's histogram with the same
                # merged bins, so the cohort's quartiles and the groups' agree (no median outside both groups')
                spreads[0] = spreads[1] + spreads[2]
            for k, spread in enumerate(spreads):
                iqr[(k, j)] = fmt_iqr(_quartiles(e, spread, integer[i]), integer[i])
    rows: dict[str, dict[str, str]] = {"N": {name: _fmt_int(m["n_rows"][g, 0] if cols else np.nan)
                                             for name, m, g in sets}}
    sub_rows = []
    for j, c in enumerate(cols):
        label = f"{display.feature_name(study, c)}, {SUMMARY_LABELS[kinds[j]]}"
        rows[label] = {}
        for k, (name, m, g) in enumerate(sets):
            rows[label][name] = _cell(kinds[j], m, g, j, iqr.get((k, j)))
        if np.nansum(overall["n_missing"][0, j]) > 0 or not np.isfinite(overall["n_missing"][0, j]):
            miss_label = f"{display.feature_name(study, c, with_unit=False)} missing, n (%)"
            rows[miss_label] = {}
            for name, m, g in sets:
                miss, nr = m["n_missing"][g, j], m["n_rows"][g, j]
                rows[miss_label][name] = (f"{_fmt_int(miss)} ({100 * miss / nr:.1f})"
                                          if np.isfinite(miss) and np.isfinite(nr) and nr else "suppressed")
            sub_rows.append(miss_label)
    out = pd.DataFrame.from_dict(rows, orient="index")[names]
    out.attrs["sub_rows"] = sub_rows
    return out


def nice_step(span: float, bins: int) -> float:
    """The smallest of 1, 2, 2.5 or 5 x 10^k that cuts ``span`` into at most ``bins`` bins."""
    raw = max(span / max(bins, 1), 1e-12)
    base = 10.0 ** np.floor(np.log10(raw))
    return float(next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw * (1 - 1e-9)))


def display_edges(lo: float, hi: float, bins: int = 32, integer: bool = False) -> np.ndarray:
    """Bin edges a reader expects over the public robust range ``[lo, hi]``: round bin widths (1, 2, 2.5, 5
    x 10^k) starting at a multiple of the width; for whole-number features, bins centred on whole numbers.
    The range comes from the disclosure-checked coarse histogram, so these edges reveal nothing new."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if integer:
        lo_i, hi_i = np.floor(lo), max(np.ceil(hi), np.floor(lo) + 1)
        step = max(1.0, np.ceil(nice_step(hi_i - lo_i, bins)))
        return np.arange(lo_i - 0.5, hi_i + step, step)[: bins + 2]
    step = nice_step(hi - lo or 1.0, bins)
    start = np.floor(lo / step) * step
    n = int(np.ceil((hi - start) / step - 1e-9)) or 1
    return start + step * np.arange(n + 1)


def histograms_on_edges(fed, columns: Sequence[str], edges: Sequence[np.ndarray], by: str | None = None
                        ) -> list[tuple[np.ndarray, list[list[tuple[int, int, float]]]]]:
    """Pooled histograms of ``columns`` over per-column ``edges`` (any lengths): ``[(edges, groups per
    group of rows)]`` with the released ``(first_bin, last_bin, count)`` groups. One secure sum per distinct
    number of edges; the sites clip values outside the edges into the end bins and merge small bins."""
    out: list = [None] * len(columns)
    n_groups = 1 if by is None else 2
    for size in sorted({len(e) for e in edges}):
        idx = [j for j, e in enumerate(edges) if len(e) == size]
        h = histogram(fed, [columns[j] for j in idx], np.array([edges[j] for j in idx]), by=by)
        for i, j in enumerate(idx):
            out[j] = (np.asarray(edges[j], dtype=float), [h.groups(g, i) for g in range(n_groups)])
    return out


def _spread(n_bins: int, groups) -> np.ndarray:
    """Counts per bin from released ``(first_bin, last_bin, count)`` groups, a merged group's count spread
    evenly over its bins."""
    spread = np.zeros(n_bins)
    for a, b, c in groups:
        spread[a:b + 1] = c / (b - a + 1)
    return spread


def _quartiles(edges: np.ndarray, spread: np.ndarray, integer: bool) -> np.ndarray:
    """Quartiles from counts per bin: for whole numbers (bins centred on them) the value whose bin holds
    the quantile; else linear interpolation within bins."""
    qs = np.array([0.25, 0.5, 0.75])
    total = spread.sum()
    if total <= 0:
        return np.full(3, np.nan)
    if not integer:
        cum = np.concatenate([[0.0], np.cumsum(spread)]) / total
        return np.interp(qs, cum, edges)
    cum = np.cumsum(spread) / total
    idx = np.minimum(np.searchsorted(cum, qs - 1e-12), len(spread) - 1)
    return (edges[idx] + edges[idx + 1]) / 2.0


def _cell(kind: str, m, g: int, j: int, iqr: str | None) -> str:
    n, s = m["n"][g, j], m["sum"][g, j]
    if kind == "binary":
        return f"{_fmt_int(s)} ({100 * s / n:.1f})" if np.isfinite(s) and np.isfinite(n) and n else "suppressed"
    if kind == "skewed":
        return iqr or "suppressed"
    mean, std = _mean_std({k: np.asarray(v)[g:g + 1, j:j + 1] for k, v in m.items()}, ddof=1)
    mu, sd = mean[0, 0], std[0, 0]
    if not np.isfinite(mu):
        return "suppressed"
    digits = 2 if abs(mu) < 10 else 1
    return f"{mu:.{digits}f} ({sd:.{digits}f})"


def fmt_iqr(q: np.ndarray, integer: bool) -> str:
    """``median [Q1, Q3]`` from quartiles ``q``: whole numbers for counts, else 1 decimal."""
    if not np.all(np.isfinite(q)):
        return "suppressed"
    if integer:
        q = np.round(q)
        return f"{q[1]:.0f} [{q[0]:.0f}, {q[2]:.0f}]"
    return f"{q[1]:.1f} [{q[0]:.1f}, {q[2]:.1f}]"


def _fmt_int(v) -> str:
    return f"{int(round(float(v)))}" if np.isfinite(v) else "suppressed"
