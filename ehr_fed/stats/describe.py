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
    out = pd.DataFrame(rows).set_index(["group", "feature"])
    for c in ("n", "missing"):  # counts: integers (suppressed cells <NA>)
        out[c] = out[c].round().astype("Int64")
    return out


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
    from ehr_fed.stats.federated import _quantiles_from_hist, fine_histograms, histogram

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
        h_all = fine_histograms(fed, sk_cols)
        h_by = histogram(fed, sk_cols, h_all.edges, by=by)
        for i, j in enumerate(skewed):
            integer = display.integer_valued(study, cols[j])
            for g, h, gg in ((0, h_all, 0), (1, h_by, 0), (2, h_by, 1)):
                q = _quantiles_from_hist(h.edges[i], h.groups(gg, i), h.n_bins, np.array([0.25, 0.5, 0.75]))
                iqr[(g, j)] = fmt_iqr(q, integer)
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
