"""Evaluation report: one self-contained HTML file (embedded PNG figures) and its JSON twin.

::

    report = build_report(fed, model)            # evaluate, Table 1, local-only comparison, LACE
    write_html(report, "report.html"); write_json(report, "report.json")
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.evaluation.external import compare_local_only
from ehr_fed.evaluation.federated import evaluate
from ehr_fed.evaluation.modeljson import model_from_json, model_to_json
from ehr_fed.evaluation.result import EvaluationResult


def model_table(model: Any) -> tuple[str, pd.DataFrame]:
    """("odds ratios", summary) for a logistic regression, ("feature importances", gains) for boosting."""
    if hasattr(model, "summary"):
        return "odds ratios (coefficient table)", pd.DataFrame(model.summary())
    if hasattr(model, "feature_importances_"):
        imp = pd.DataFrame({"importance": np.asarray(model.feature_importances_, dtype=float)},
                           index=pd.Index([str(n) for n in model.feature_names_in_], name="feature"))
        return "feature importances (gain)", imp.sort_values("importance", ascending=False)
    return "model", pd.DataFrame()


def build_report(fed: Any, model: Any, *, result: EvaluationResult | None = None, local_only: bool = True,
                 k: int = 5, table_one: bool = True, **evaluate_kwargs: Any) -> dict[str, Any]:
    """Everything the report shows, as data (DataFrames kept for rendering).

    Parameters
    ----------
    fed : Federation
    model : fitted model or model file path
    result : EvaluationResult, optional
        Reuse an evaluation already run; else :func:`evaluate` runs with ``evaluate_kwargs``.
    local_only : bool
        Add each site's local-only cross-validated AUC (``k`` folds).
    table_one : bool
        Add the cohort's Table 1 (:func:`ehr_fed.stats.table_one`) over the model's features.
    """
    model = model_from_json(model_to_json(model)) if isinstance(model, str | Path) else model
    result = result or evaluate(fed, model, **evaluate_kwargs)
    if local_only and result.local_only is None:
        result.local_only = compare_local_only(fed, model, k=k, federated=result.per_site)
    title, table = model_table(model)
    t1 = None
    if table_one:
        from ehr_fed.stats import table_one as _table_one

        t1 = _table_one(fed, [str(n) for n in model.feature_names_in_])
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "result": result,
            "model_title": title, "model_table": table, "table_one": t1, "model": model}


def _df_records(df: pd.DataFrame | None) -> Any:
    if df is None:
        return None
    return json.loads(df.reset_index().to_json(orient="records"))


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """The report's data as JSON (strict: NaN written as null)."""
    data = {"created": report["created"], "evaluation": report["result"].to_dict(),
            "model_table": {"title": report["model_title"], "rows": _df_records(report["model_table"])},
            "table_one": (json.loads(report["table_one"].to_json(orient="index"))
                          if report["table_one"] is not None else None)}
    path = Path(path)
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
    return path


def _table(df: pd.DataFrame | None, digits: int = 4) -> str:
    if df is None or df.empty:
        return "<p><em>not available</em></p>"
    return df.to_html(float_format=lambda v: f"{v:.{digits}f}", na_rep="-", border=0, classes="t")


def _figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    from ehr_fed.evaluation.plots import figure_png, importance_figure

    res = report["result"]
    figs = [("ROC curve", figure_png(res.plot_roc())), ("Calibration", figure_png(res.plot_calibration()))]
    table = report["model_table"]
    if "importance" in table.columns and len(table):
        figs.append(("Feature importances", figure_png(
            importance_figure(list(table.index), table["importance"].to_numpy(), "feature importance (gain)"))))
    return figs


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table.t{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
.figs img{margin-right:1em;border:1px solid #eee}.note{color:#666;font-size:13px}"""


def _lace_html(lace: dict[str, Any] | None) -> str:
    if not lace:
        return ""
    if lace.get("available"):
        return (f"<p>LACE index as a score: AUC <b>{lace['auc']:.4f}</b> over {lace['n']} index events "
                "with a LACE value.</p>")
    return f"<p class='note'>LACE baseline not available: {html.escape(lace.get('reason', ''))}</p>"


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document (figures embedded as PNG data URIs)."""
    res: EvaluationResult = report["result"]
    figs = "".join(f"<figure style='display:inline-block'><img src='{uri}' alt='{html.escape(name)}'>"
                   f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, uri in _figures(report))
    mode = "Paillier-encrypted sums" if res.encrypted else "plaintext sums (test/demo mode)"
    parts = [
        f"<h1>Federated evaluation: {html.escape(res.model_kind)} model</h1>",
        f"<p class='note'>{len(res.sites)} sites ({html.escape(', '.join(res.sites))}); {mode}; model sha256 "
        f"{res.model_sha256[:16]}...; {res.n_bins} score bins; min cell count {res.min_cell_count}; "
        f"created {report['created']}. No patient-level score left any site: the figures are drawn from "
        "sums over all sites.</p>",
        "<h2>Overall</h2>", _table(res.to_frame()), f"<div class='figs'>{figs}</div>",
        "<h2>Per site</h2>", _table(res.per_site),
        "<h2>Comparison: local-only models and the LACE index</h2>", _table(res.local_only),
        _lace_html(res.lace),
        f"<h2>Model: {html.escape(report['model_title'])}</h2>", _table(report["model_table"]),
        "<h2>Table 1: the cohort</h2>", _table(report["table_one"]),
    ]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>ehr-fed evaluation report</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report))
    return path
