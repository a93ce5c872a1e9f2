"""Evaluation report: one self-contained HTML file (embedded PNG figures) and its JSON twin.

::

    report = build_report(fed, model)            # evaluate, Table 1, local-only comparison, LACE
    write_html(report, "report.html"); write_json(report, "report.json")

The page names features and outcome groups from the study spec (:mod:`ehr_fed.stats.display`), shows
counts as integers and odds ratios without the intercept, says what it evaluated on, and has only the
sections whose data it holds.
"""

from __future__ import annotations

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
from ehr_fed.stats import display
from ehr_fed.stats.page import esc, figure, fmt_int, fmt_num, fmt_p, page, table


def model_table(model: Any) -> tuple[str, pd.DataFrame]:
    """("odds ratios", coefficient table without the intercept) for a logistic regression,
    ("feature importances", gains) for boosting."""
    if hasattr(model, "summary"):
        summary = pd.DataFrame(model.summary())
        return "odds ratios (coefficient table)", summary.drop(index="intercept", errors="ignore")
    if hasattr(model, "feature_importances_"):
        imp = pd.DataFrame({"importance": np.asarray(model.feature_importances_, dtype=float)},
                           index=pd.Index([str(n) for n in model.feature_names_in_], name="feature"))
        return "feature importances (gain)", imp.sort_values("importance", ascending=False)
    return "model", pd.DataFrame()


def build_report(fed: Any, model: Any, *, result: EvaluationResult | None = None, local_only: bool = True,
                 k: int = 5, table_one: bool = True, evaluated_on: str | None = None,
                 **evaluate_kwargs: Any) -> dict[str, Any]:
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
        Add the Table 1 of the evaluated rows (:func:`ehr_fed.stats.table_one`) over the model's features.
    evaluated_on : str, optional
        What the rows are ("the held-out 30 % of each site's patients"); the page says it with their number.
    """
    model = model_from_json(model_to_json(model)) if isinstance(model, str | Path) else model
    result = result or evaluate(fed, model, **evaluate_kwargs)
    if result.dp is not None:  # a private evaluation: the local-only AUCs and Table 1 have no private form here
        local_only = table_one = False
    if local_only and result.local_only is None:
        result.local_only = compare_local_only(fed, model, k=k, federated=result.per_site)
    title, mtable = model_table(model)
    study = display.study_of(model, fed)
    t1 = None
    if table_one:
        from ehr_fed.stats import table_one as _table_one

        t1 = _table_one(fed, [str(n) for n in model.feature_names_in_], study=study)
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "result": result,
            "model_title": title, "model_table": mtable, "table_one": t1, "model": model, "study": study,
            "evaluated_on": evaluated_on, "dp": dp_facts(model)}


#: the parts of a model's ``dp_`` record a report shows
DP_FACTS = ("epsilon", "delta", "epsilon_planned", "releases", "events_per_patient", "mechanism", "protects")


def dp_facts(model: Any) -> dict[str, Any] | None:
    """Epsilon and delta a model's training spent, and what they protect (None: not a private fit)."""
    dp = getattr(model, "dp_", None)
    if not isinstance(dp, dict) or dp.get("epsilon") is None:
        return None
    return {k: dp[k] for k in DP_FACTS if k in dp}


def dp_paragraph(dp: dict[str, Any] | None, evaluation: dict[str, Any] | None = None) -> list[str]:
    """The report's lines on differential privacy: what the model's training spent (none for a model trained
    without it) and what the evaluation spent (``evaluation``: the result's ``dp``; None: exact sums)."""
    parts = []
    if evaluation:
        eval_delta = f"{evaluation.get('delta', float('nan')):g}"
        parts.append(f"<p class='dp'><strong>Differential privacy of this evaluation:</strong> it spent epsilon "
                     f"{fmt_num(evaluation['epsilon'], 3)} (planned {evaluation.get('epsilon_planned', 0):g}), "
                     f"delta {esc(eval_delta)} "
                     f"over {fmt_int(evaluation.get('releases'))} private releases (noisy score histograms, every "
                     "figure computed from them); it protects "
                     f"{esc(evaluation.get('protects', 'one patient'))}.</p>")
    if not dp:
        return parts
    planned = dp.get("epsilon_planned")
    delta = f"{dp.get('delta', float('nan')):g}"
    exact = "" if evaluation else " The evaluation figures themselves are exact sums (not noised)."
    return [f"<p class='dp'><strong>Differential privacy:</strong> the model's training spent epsilon "
            f"{fmt_num(dp['epsilon'], 3)}{f' (planned {planned:g})' if planned is not None else ''}, "
            f"delta {esc(delta)} over {fmt_int(dp.get('releases'))} private releases; it "
            f"protects {esc(dp.get('protects', 'one patient'))}.{exact}</p>", *parts]


def _df_records(df: pd.DataFrame | None) -> Any:
    if df is None:
        return None
    return json.loads(df.reset_index().to_json(orient="records"))


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """The report's data as JSON (strict: NaN written as null)."""
    model = report.get("model")
    intercept = getattr(model, "intercept_", None)
    data = {"created": report["created"], "evaluated_on": report.get("evaluated_on"),
            "evaluation": report["result"].to_dict(),
            "model_table": {"title": report["model_title"], "rows": _df_records(report["model_table"]),
                            **({"intercept": float(np.ravel(intercept)[0])} if intercept is not None else {})},
            "table_one": (json.loads(report["table_one"].to_json(orient="index"))
                          if report["table_one"] is not None else None),
            "dp": report.get("dp")}
    path = Path(path)
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
    return path


# -- tables as a reader wants them ---------------------------------------------------------------------
#: overall metrics: (label, format)
_METRICS = [
    ("n", "Index events evaluated", fmt_int), ("positives", "Outcomes (positives)", fmt_int),
    ("auc", "AUC (c-statistic)", lambda v: fmt_num(v, 3)),
    ("auc_tie_bound", "AUC binning bound (±)", lambda v: fmt_num(v, 4)),
    ("auprc", "AUPRC (average precision)", lambda v: fmt_num(v, 3)),
    ("brier", "Brier score", lambda v: fmt_num(v, 3)),
    ("observed_rate", "Observed event rate", lambda v: fmt_num(v, 3)),
    ("expected_rate", "Mean predicted risk", lambda v: fmt_num(v, 3)),
    ("calibration_in_the_large", "Calibration-in-the-large (observed − expected)", lambda v: fmt_num(v, 3)),
    ("calibration_intercept", "Calibration intercept", lambda v: fmt_num(v, 2)),
    ("calibration_slope", "Calibration slope", lambda v: fmt_num(v, 2)),
]


def overall_table(res: EvaluationResult) -> pd.DataFrame:
    """The overall metrics, formatted (counts as integers), with the LACE baseline when there is one."""
    rows = {label: fn(res.overall.get(key)) for key, label, fn in _METRICS if key in res.overall}
    lace = res.lace or {}
    if lace.get("available"):
        rows["LACE index alone: AUC (baseline)"] = fmt_num(lace.get("auc"), 3)
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def site_metrics_table(per_site: pd.DataFrame) -> pd.DataFrame:
    """Each site's own metrics, formatted; a suppressed site shows why."""
    out = {}
    for sid, r in per_site.iterrows():
        released = bool(r.get("released"))
        out[sid] = {
            "index events": fmt_int(r.get("n")), "positives": fmt_int(r.get("positives")),
            "AUC": fmt_num(r.get("auc"), 3), "AUPRC": fmt_num(r.get("auprc"), 3),
            "Brier": fmt_num(r.get("brier"), 3),
            "calibration-in-the-large": fmt_num(r.get("calibration_in_the_large"), 3),
            "calibration slope": fmt_num(r.get("calibration_slope"), 2),
            "note": "" if released else (r.get("note") or "suppressed by the site's policy"),
        }
    return pd.DataFrame.from_dict(out, orient="index")


def local_only_table(local: pd.DataFrame) -> pd.DataFrame:
    """Local-only cross-validated AUC per site beside the federated model's AUC there."""
    out = {}
    for sid, r in local.iterrows():
        k = r.get("k")
        out[sid] = {f"local-only model, {fmt_int(k)}-fold CV AUC" if not pd.isna(k) else "local-only model AUC":
                    fmt_num(r.get("local_cv_auc"), 3),
                    "federated model AUC": fmt_num(r.get("federated_auc"), 3),
                    "difference (federated − local)": fmt_num(r.get("difference"), 3),
                    "note": r.get("note") or ""}
    return pd.DataFrame.from_dict(out, orient="index")


def odds_ratio_table(summary: pd.DataFrame, study: Any = None) -> pd.DataFrame:
    """Odds ratio (95 % CI) and p-value per term, display names from the study; no intercept."""
    rows = {}
    for term, r in summary.drop(index="intercept", errors="ignore").iterrows():
        rows[display.term_name(study, str(term))] = {
            "odds ratio": fmt_num(r["odds_ratio"], 2),
            "95 % CI": f"{fmt_num(r['or_ci_lower'], 2)} to {fmt_num(r['or_ci_upper'], 2)}",
            "p": fmt_p(r["P>|z|"]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def model_terms_note(model: Any, study: Any = None) -> str:
    """Which of the study's features the model uses, and its terms (features, missing-value indicators)."""
    used = [str(n) for n in getattr(model, "feature_names_in_", [])]
    all_features = [f.name for f in getattr(study, "features", None) or []]
    unused = [f for f in all_features if f not in used]
    parts = [f"The model uses {len(used)} of the study's {len(all_features)} features" if all_features
             else f"The model uses {len(used)} features"]
    terms = [str(t) for t in getattr(model, "terms_", [])]
    if terms:
        n_missing = sum(t.startswith("missing_") for t in terms)
        n_feat = len(terms) - n_missing
        parts[0] += (f"; its {len(terms)} terms are {n_feat} feature{'s' if n_feat != 1 else ''} and "
                     f"{n_missing} missing-value indicator{'s' if n_missing != 1 else ''}")
    dropped = list(getattr(model, "dropped_terms_", []) or [])
    if dropped:
        parts.append("Left out as constant: " + ", ".join(display.term_name(study, t) for t in dropped))
    if unused:
        parts.append("Not in the model: " + ", ".join(display.feature_name(study, f) for f in unused))
    return ". ".join(parts) + "."


def _fit_note(summary: pd.DataFrame) -> str:
    a = summary.attrs
    if not a:
        return ""
    penalty = a.get("penalty") or "none"
    c_text = f" (C = {a['C']:g})" if penalty == "l2" and a.get("C") is not None else ""
    state = "converged" if a.get("converged") else "NOT converged"
    return (f"Fitted on {fmt_int(a.get('n_samples'))} index events ({fmt_int(a.get('n_positives'))} outcomes) "
            f"at {a.get('n_sites')} sites; {state} after {a.get('n_iter')} Newton rounds; penalty {penalty}"
            f"{c_text}; {a.get('note', '')}.")


# -- figures ---------------------------------------------------------------------------------------------
def figures(res: EvaluationResult, model: Any = None, study: Any = None) -> list[tuple[str, str]]:
    """(caption, PNG data URI) of the ROC curve and the calibration plot (the evaluation's figures)."""
    import matplotlib

    matplotlib.use("Agg")
    from ehr_fed.evaluation.plots import figure_png

    return [("ROC curve", figure_png(res.plot_roc())), ("Calibration", figure_png(res.plot_calibration()))]


def importance_png(model: Any, study: Any = None) -> str:
    """PNG data URI of a boosted model's feature importances, features named from the study spec."""
    import matplotlib

    matplotlib.use("Agg")
    from ehr_fed.evaluation.plots import figure_png, importance_figure

    names = [display.feature_name(study, str(n)) for n in model.feature_names_in_]
    return figure_png(importance_figure(names, np.asarray(model.feature_importances_, dtype=float),
                                        "Feature importance (gain)"))


def evaluation_sections(res: EvaluationResult, model: Any = None, study: Any = None, *, level: int = 2
                        ) -> list[str]:
    """The HTML sections of one evaluation: overall metrics and figures, per site, local-only, LACE."""
    h = f"h{level}"
    figs = "".join(figure(uri, name) for name, uri in figures(res, model, study))
    parts = [f"<{h}>Overall</{h}>", table(overall_table(res), index_label="metric")]
    if "auc_tie_bound" in res.overall:
        parts.append(f"<p class='note'>The AUC is computed from score histograms whose small bins the sites "
                     f"merge until each holds at least {fmt_int(res.min_cell_count)} index events; the AUC of the "
                     "unbinned scores lies within the binning bound of the value shown.</p>")
    parts.append(f"<div class='figs'>{figs}</div>")
    if res.per_site is not None and len(res.per_site):
        parts += [f"<{h}>Per site</{h}>", table(site_metrics_table(res.per_site), index_label="site",
                                               left=["note"])]
    if res.local_only is not None and len(res.local_only):
        parts += [f"<{h}>Comparison with local-only models</{h}>",
                  table(local_only_table(res.local_only), index_label="site", left=["note"])]
    lace = res.lace or {}
    if lace.get("available"):
        parts.append(f"<p class='note'>Baseline: the LACE index alone as a risk score has AUC "
                     f"{fmt_num(lace['auc'], 3)} over the {fmt_int(lace['n'])} index events with a LACE "
                     "value.</p>")
    return parts


def model_sections(model: Any, title: str, mtable: pd.DataFrame, study: Any = None, *, level: int = 2
                   ) -> list[str]:
    """The model's own table: odds ratios (logistic regression) or a note on the importances (boosting)."""
    h = f"h{level}"
    note = f"<p class='note'>{esc(model_terms_note(model, study))}</p>"
    if "odds_ratio" in mtable.columns:
        summary = model.summary() if hasattr(model, "summary") else mtable  # keeps the fit in .attrs
        return [f"<{h}>Model: odds ratios</{h}>", note,
                table(odds_ratio_table(mtable, study), index_label="term"),
                f"<p class='note'>Odds ratio per unit of each feature (per year, per mg/dL, ...; yes vs no for "
                f"yes/no variables), adjusted for the others. {esc(_fit_note(summary))}</p>"]
    if "importance" in mtable.columns:
        figs = ([f"<div class='figs'>{figure(importance_png(model, study), 'Feature importances')}</div>"]
                if hasattr(model, "feature_importances_") else [])
        return [f"<{h}>Model: gradient boosting</{h}>", note, *figs]
    return []


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML document (figures embedded as PNG data URIs)."""
    res: EvaluationResult = report["result"]
    study = report.get("study")
    mode = "Paillier-encrypted sums" if res.encrypted else "plaintext sums (test/demo mode)"
    on = report.get("evaluated_on") or "every row of the sites' tables (no held-out split given)"
    outcome = display.outcome_name(study) if study is not None else "the label"
    kind = {"logreg": "logistic regression", "gbdt": "gradient boosting"}.get(res.model_kind, res.model_kind)
    parts = [
        f"<h1>Federated evaluation: {esc(kind or 'model')}</h1>",
        f"<p>Predicting {esc(outcome)}. Evaluated on {esc(on)}: {fmt_int(res.overall.get('n'))} index events, "
        f"{fmt_int(res.overall.get('positives'))} with the outcome, at {len(res.sites)} sites "
        f"({esc(', '.join(res.sites))}).</p>",
        *([f"<p class='note'>Note: {esc(report['evaluation_note'])}.</p>"] if report.get("evaluation_note") else []),
        f"<p class='note'>{mode}; model sha256 {esc(res.model_sha256[:16])}...; {fmt_int(res.n_bins)} score "
        f"bins; minimum cell count {fmt_int(res.min_cell_count)}; created {esc(report['created'])}. No "
        "patient-level score left any site: the figures are drawn from sums over all sites.</p>",
        *dp_paragraph(report.get("dp"), res.dp),
        *evaluation_sections(res, report.get("model"), study),
        *model_sections(report.get("model"), report["model_title"], report["model_table"], study),
    ]
    t1 = report.get("table_one")
    if t1 is not None:
        parts += ["<h2>Table 1: the evaluated index events</h2>",
                  table(t1, index_label="", sub_rows=t1.attrs.get("sub_rows", []))]
    return page("ehr-fed evaluation report", parts)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
