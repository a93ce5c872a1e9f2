"""Federated statistics report: JSON, or one self-contained HTML page (tables and embedded PNG histograms).

Names, units and outcome groups come from the study spec (:mod:`ehr_fed.stats.display`); counts are
integers; Table 1 follows :func:`ehr_fed.stats.describe.table_one`.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.stats import display
from ehr_fed.stats.describe import (
    _is_binary,
    describe,
    describe_by_site,
    display_edges,
    fmt_iqr,
    histograms_on_edges,
    table_one,
)
from ehr_fed.stats.federated import _columns, moments, robust_range
from ehr_fed.stats.page import esc, fmt_int, page, table


def build_report(fed, columns=None, n_histograms: int = 4, hist_bins: int = 32) -> dict[str, Any]:
    """Every summary of the federation as plain data (DataFrames kept for rendering).

    Histograms are released for the first ``n_histograms`` columns and drawn for the first ``n_histograms``
    that are not yes/no variables (those are in Table 1).
    """
    cols = _columns(fed, columns)
    study = display.study_of(fed)
    m = moments(fed, cols)
    kinds = {c: display.variable_type(study, c) or ("binary" if _is_binary(m, j) else "normal")
             for j, c in enumerate(cols)}
    # the first n_histograms columns (the JSON report's), and as many drawable (not yes/no) ones for the page
    drawn = [c for c in cols if kinds[c] != "binary"][:n_histograms]
    hist_cols = [c for c in cols if c in set(cols[:n_histograms]) | set(drawn)] if n_histograms else []
    hists = {}
    if hist_cols:
        rng = robust_range(fed, hist_cols)
        edges = [display_edges(lo, hi, hist_bins, display.integer_valued(study, c) or kinds[c] == "binary")
                 for c, (lo, hi) in zip(hist_cols, rng, strict=True)]
        for c, (e, groups) in zip(hist_cols, histograms_on_edges(fed, hist_cols, edges), strict=True):
            counts = np.zeros(len(e) - 1)
            for first, _, count in groups[0]:
                counts[first] = count
            hists[c] = {"edges": e.tolist(), "counts": counts.tolist(),
                        "merged": [[a, b] for a, b, _ in groups[0] if b > a]}
    return {
        "sites": fed.site_ids,
        "study": getattr(study, "study_id", None),
        "study_description": getattr(study, "description", "") or "",
        "min_cell_count": getattr(getattr(fed, "policy", None), "min_cell_count", None),
        "names": display.feature_names(study, cols),
        "units": {c: display.unit(study, c) for c in cols},
        "kinds": kinds,
        "integer": {c: display.integer_valued(study, c) for c in cols},
        "outcome_groups": list(display.outcome_names(study)),
        "table_one": table_one(fed, cols, study=study),
        "overall": describe(fed, cols),
        "by_label": describe(fed, cols, by="label", quantile_levels=None),
        "by_site": describe_by_site(fed, cols),
        "histograms": hists,
    }


def _df_json(df: pd.DataFrame) -> Any:
    out = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    return json.loads(out.to_json(orient="records"))


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """The report's data as JSON (suppressed cells as null)."""
    data = {k: _df_json(v) if isinstance(v, pd.DataFrame) else v for k, v in report.items()}
    if isinstance(report.get("table_one"), pd.DataFrame):
        data["table_one"] = json.loads(report["table_one"].to_json(orient="index"))
    Path(path).write_text(json.dumps(data, indent=1, default=str))
    return Path(path)


# -- figures -------------------------------------------------------------------------------------------
def histogram_bars(hist: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left edges, widths, heights) of the bars to draw: one bar per released bin or merged group, its
    height the group's count spread over its bins (index events per bin), empty bins at either end left
    out so the axis spans the data."""
    edges, counts = np.asarray(hist["edges"], dtype=float), np.asarray(hist["counts"], dtype=float)
    ends = {int(a): int(b) for a, b in hist.get("merged", [])}
    left, width, height = [], [], []
    for i in np.flatnonzero(counts > 0):
        b = ends.get(int(i), int(i))
        left.append(edges[i])
        width.append(edges[b + 1] - edges[i])
        height.append(counts[i] / (b - i + 1))
    return np.array(left), np.array(width), np.array(height)


def histogram_figure(name: str, hist: dict[str, Any], unit: str | None = None):
    """Bar chart of a released histogram, x labelled with the feature's name and unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    left, width, height = histogram_bars(hist)
    fig, ax = plt.subplots(figsize=(4.4, 2.9), dpi=100)
    if len(left):
        ax.bar(left, height, width=width, align="edge", color="#4878a8", edgecolor="white", linewidth=0.5)
        lo, hi = float(left.min()), float((left + width).max())
        pad = 0.02 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(name)
    bin_width = float(np.diff(np.asarray(hist["edges"], dtype=float)[:2])[0]) if len(hist["edges"]) > 1 else 0
    ax.set_ylabel("index events per bin")
    ax.set_title(f"{name.split(' (')[0]}: bins of {bin_width:g}{' ' + unit if unit else ''}", fontsize=10)
    fig.tight_layout()
    return fig


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# -- tables ---------------------------------------------------------------------------------------------
def _summary(kind: str, mean: float, std: float, n: Any) -> str:
    if pd.isna(mean):
        return "suppressed"
    if kind == "binary":
        return f"{fmt_int(mean * n)} ({100 * mean:.1f} %)" if not pd.isna(n) else f"{100 * mean:.1f} %"
    digits = 2 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def _missing(row: pd.Series) -> str:
    if pd.isna(row["missing"]):
        return "suppressed"
    return f"{fmt_int(row['missing'])} ({row['missing_pct']:.1f} %)" if row["missing"] else "0"


def features_table(report: dict[str, Any]) -> pd.DataFrame:
    """All features: type, non-missing n, missing n (%), n (%) or mean (SD), and quartiles for non-binary."""
    overall = report["overall"].droplevel(0)
    rows = {}
    for c, r in overall.iterrows():
        kind = report["kinds"].get(c, "normal")
        t1_label = f"{report['names'].get(c, c)}, median [IQR]"
        if t1_label in report["table_one"].index:  # the same figures as Table 1
            quart = report["table_one"].loc[t1_label, "Overall"]
        else:
            quart = ("" if kind == "binary" or "q0.5" not in r or pd.isna(r.get("q0.5"))
                     else fmt_iqr(np.array([r["q0.25"], r["q0.5"], r["q0.75"]]), report["integer"].get(c, False)))
        rows[report["names"].get(c, c)] = {
            "type": {"binary": "yes/no", "skewed": "count / skewed", "normal": "measurement"}[kind],
            "n (non-missing)": fmt_int(r["n"], "suppressed"), "missing, n (%)": _missing(r),
            "n (%) yes / mean (SD)": _summary(kind, r["mean"], r["std"], r["n"]),
            "median [IQR]": quart or "-",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _grouped(report: dict[str, Any], df: pd.DataFrame, groups: list[str], names: list[str]) -> pd.DataFrame:
    out = {}
    for c in df.index.get_level_values(1).unique():
        kind = report["kinds"].get(c, "normal")
        row = {}
        for g, name in zip(groups, names, strict=True):
            r = df.loc[(g, c)]
            row[f"{name}: n"] = fmt_int(r["n"], "suppressed")
            row[f"{name}: n (%) yes / mean (SD)"] = _summary(kind, r["mean"], r["std"], r["n"])
        out[report["names"].get(c, c)] = row
    return pd.DataFrame.from_dict(out, orient="index")


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document."""
    t1 = report["table_one"]
    study = report.get("study")
    title = f"Federated statistics{': ' + study if study else ''}"
    figs = [f"<img src='{_png(histogram_figure(report['names'].get(c, c), h, report['units'].get(c)))}' "
            f"alt='{esc(report['names'].get(c, c))}'>" for c, h in report["histograms"].items()
            if report["kinds"].get(c) != "binary"]
    groups = report.get("outcome_groups") or ["label=0", "label=1"]
    by_label = _grouped(report, report["by_label"], ["label=0", "label=1"], groups)
    sites = list(report["by_site"].index.get_level_values(0).unique())
    by_site = _grouped(report, report["by_site"], sites, sites)
    mcc = report.get("min_cell_count")
    body = [
        f"<h1>{esc(title)}</h1>",
        *([f"<p>{esc(report['study_description'])}</p>"] if report.get("study_description") else []),
        f"<p class='note'>{len(report['sites'])} sites ({esc(', '.join(report['sites']))}). Every number is an "
        "aggregate released under each site's privacy policy; a cell reads \"suppressed\" when it held fewer "
        f"rows than the minimum cell count{f' ({mcc})' if mcc else ''} or would reveal such a cell.</p>",
        "<h2>Table 1</h2>",
        table(t1, index_label="", sub_rows=t1.attrs.get("sub_rows", [])),
        "<p class='note'>n (%) for yes/no variables, mean (SD) for measurements, median [IQR] for counts, "
        "scores and durations; a \"missing\" row follows a variable only where values are missing.</p>",
    ]
    if figs:
        body += ["<h2>Histograms</h2>", f"<div class='figs'>{''.join(figs)}</div>",
                 "<p class='note'>Each histogram spans the feature's robust range (the few most extreme rows "
                 "fall in the end bins); bins with fewer rows than the minimum cell count are merged with their "
                 "neighbours and drawn as one wide bar of the same area.</p>"]
    body += ["<h2>All features</h2>", table(features_table(report), index_label="feature", left=["type"]),
             "<h2>By outcome</h2>", table(by_label, index_label="feature"),
             "<h2>By site</h2>", table(by_site, index_label="feature")]
    return page("ehr-fed federated statistics", body)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    Path(path).write_text(render_html(report), encoding="utf-8")
    return Path(path)
