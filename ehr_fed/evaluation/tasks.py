"""Site tasks of federated evaluation (imported at the sites: ``ehr_fed.evaluation.tasks``).

Every task scores the site's own table with the model sent as JSON text (``params["model"]``), after checking
that the site can verify the model (:mod:`ehr_fed.evaluation.provenance`), and returns aggregates only:

``evaluation.row_count``          secure sum: rows and positives (sizes the other layouts)
``evaluation.score_histograms``   secure sum: per score bin positives / negatives (merged below the
                                  minimum cell count at the decrypting site), totals
``evaluation.calibration_step``   secure sum: score and information of y ~ a + b logit(p) (Newton step)
``evaluation.lace_histograms``    secure sum: positives / negatives per LACE index value (clinical baseline;
                                  merged like the score histograms)
``evaluation.site_metrics``       query: this site's own AUC, AUPRC, Brier, calibration (policy-checked)
``evaluation.local_cv``           query: cross-validated AUC of a model fitted on this site alone

The secure-sum outputs are opened only as sums over at least ``min_sites`` sites (the decrypting site
checks). With a private release active, the two histogram tasks return exact integer bins plus this site's
noise share (:mod:`ehr_fed.evaluation.private`). The query tasks release a site's scalars only when it has at least ``min_cell_count`` positive
and negative index events; otherwise they say so and release nothing else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr_fed.evaluation.metrics import (
    calibration_fit,
    calibration_slope_step,
    local_histograms,
    logit,
)
from ehr_fed.evaluation.modeljson import model_from_json
from ehr_fed.evaluation.private import noisy_histograms
from ehr_fed.evaluation.provenance import check_evaluated_model
from ehr_fed.federation.tasks import SiteContext, site_task
from ehr_fed.privacy.dp import active_release

#: largest LACE index value (L 0-7, A 0/3, C 0-5, E 0-4)
LACE_MAX = 19


def site_scores(table: pd.DataFrame, params: dict, ctx: SiteContext) -> tuple[np.ndarray, np.ndarray]:
    """Predicted risk of label 1 and the label of each row of the site's table.

    Only a model this site can verify is scored (:func:`ehr_fed.evaluation.provenance.check_evaluated_model`:
    it follows from a training transcript the site checks, or its digest is in the site's
    ``approved_models``); any other is refused before a row is scored.

    The model scores its own features, selected by name (in the model's order) from the site's feature
    table, which holds every feature of the study in the study's order: a model fitted on a subset of the
    features, or listing them in another order, is evaluated on the same columns it was trained on.
    """
    model = model_from_json(params["model"])
    check_evaluated_model(params["model"], ctx)
    if "label" not in table.columns:
        raise ValueError("the site's feature table has no 'label' column; evaluation needs the outcome")
    y = table["label"].to_numpy(dtype=np.float64)
    if len(table) == 0:
        return np.zeros(0), y
    features = [str(n) for n in model.feature_names_in_]  # model files always record the features by name
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise ValueError(f"the site's feature table lacks the model's feature column(s) {missing}; harmonize "
                         "the site with the study spec the model was trained with")
    p = np.asarray(model.predict_proba(table[features])[:, 1], dtype=np.float64)
    return p, y


@site_task("evaluation.row_count", kind="metric", counts={"n": ()}, params=())
def row_count(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """``{"n": [rows, positives]}`` (summed across sites; sizes the layouts of the other rounds)."""
    y = table["label"].to_numpy(dtype=np.float64) if "label" in table.columns else np.zeros(len(table))
    return {"n": np.array([float(len(table)), float(np.nansum(y))])}


@site_task("evaluation.score_histograms", kind="metric", counts={"n": ()}, histograms=("pos", "neg"),
           params=("model", "n_bins"))
def score_histograms(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Positives and negatives per score bin (``n_bins`` equal bins on [0, 1]) and totals.

    Outputs: ``pos``, ``neg`` (n_bins,), declared histograms (the decrypting site merges bins below the
    minimum cell count), ``n`` (rows, positives: declared counts) and ``sums`` (sum of p, sum of
    (p - y)^2). The calibration curve is read from the merged histograms at the coordinator, so no second
    grid of counts can be differenced against them.
    """
    p, y = site_scores(table, params, ctx)
    h = local_histograms(p, y, int(params["n_bins"]), 1)
    rel = active_release()
    if rel is not None:  # differentially private form (ehr_fed.evaluation.private): noisy histograms only
        return noisy_histograms(h["pos"], h["neg"], "evaluation.score_histograms", rel)
    t = h["totals"]
    return {"pos": h["pos"], "neg": h["neg"], "n": t[:2].copy(), "sums": t[2:].copy()}


@site_task("evaluation.calibration_step", kind="metric", params=("model", "coef"))
def calibration_step(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Score (2,) and information (2, 2) of the logistic recalibration y ~ a + b logit(p) at ``coef``."""
    p, y = site_scores(table, params, ctx)
    return calibration_slope_step(logit(p), y, np.asarray(params["coef"], dtype=np.float64))


@site_task("evaluation.lace_histograms", kind="metric", histograms=("pos", "neg"), params=())
def lace_histograms(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Positives and negatives per LACE value 0..19 (rows without LACE left out; zeros without the column)."""
    bins = LACE_MAX + 1
    if "lace" not in table.columns or "label" not in table.columns:
        empty = {"pos": np.zeros(bins), "neg": np.zeros(bins)}
        rel = active_release()
        return empty if rel is None else noisy_histograms(empty["pos"], empty["neg"], "evaluation.lace_histograms",
                                                          rel)
    lace = table["lace"].to_numpy(dtype=np.float64)
    y = table["label"].to_numpy(dtype=np.float64)
    ok = np.isfinite(lace)
    idx = np.clip(np.rint(lace[ok]), 0, LACE_MAX).astype(np.int64)
    out = {"pos": np.bincount(idx, weights=y[ok], minlength=bins).astype(float),
           "neg": np.bincount(idx, weights=1.0 - y[ok], minlength=bins).astype(float)}
    rel = active_release()
    if rel is not None:  # differentially private form (ehr_fed.evaluation.private)
        return noisy_histograms(out["pos"], out["neg"], "evaluation.lace_histograms", rel)
    return out


def _too_few(y: np.ndarray, ctx: SiteContext, at_least: int | None = None) -> str | None:
    """Why this site may not release its own metrics (None when it may); states no count."""
    need = max(ctx.policy.min_cell_count, at_least or 0)
    n_pos = float(np.sum(y == 1))
    n_neg = float(np.sum(y == 0))
    if n_pos < need or n_neg < need:
        return (f"suppressed: fewer than {need} positive or negative index events at this site "
                f"(min_cell_count={ctx.policy.min_cell_count})")
    return None


@site_task("evaluation.site_metrics", kind="metric", params=("model",))
def site_metrics(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """This site's own discrimination and calibration of the model, or the reason it is suppressed."""
    p, y = site_scores(table, params, ctx)
    why = _too_few(y, ctx)
    if why:
        return {"released": False, "reason": why}
    from sklearn.metrics import average_precision_score, roc_auc_score

    a, b = calibration_fit(lambda coef: calibration_slope_step(logit(p), y, coef))
    return {
        "released": True, "reason": "", "n": float(len(y)), "positives": float(y.sum()),
        "auc": float(roc_auc_score(y, p)), "auprc": float(average_precision_score(y, p)),
        "brier": float(np.mean((p - y) ** 2)), "observed_rate": float(y.mean()),
        "expected_rate": float(p.mean()), "calibration_in_the_large": float(y.mean() - p.mean()),
        "calibration_intercept": _finite(a), "calibration_slope": _finite(b),
    }


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@site_task("evaluation.local_cv", kind="metric", params=("features", "k", "local_model", "seed"))
def local_cv(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    """Cross-validated AUC of a model fitted on this site's data alone (only the AUC leaves the site).

    ``params``: ``features`` (list of str), ``k`` (folds, default 5), ``local_model`` ("logreg" or
    "gbdt"), ``seed``. The AUC is that of the pooled out-of-fold predictions.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    k = int(params.get("k", 5))
    if k < 2:
        raise ValueError(f"local_cv: k must be >= 2 folds, got {k}")
    y = table["label"].to_numpy(dtype=np.int64)
    why = _too_few(y, ctx, at_least=k)
    if why:
        return {"released": False, "reason": why, "k": k}
    feats = [f for f in params["features"] if f in table.columns]
    X = table[feats].to_numpy(dtype=np.float64)
    X = X[:, ~np.all(np.isnan(X), axis=0)]  # never observed here: nothing to learn from
    est = _local_estimator(str(params.get("local_model", "logreg")), int(params.get("seed", 0)))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(params.get("seed", 0)))
    oof = cross_val_predict(est, X, y, cv=cv, method="predict_proba")[:, 1]
    return {"released": True, "reason": "", "k": k, "cv_auc": float(roc_auc_score(y, oof))}


def _local_estimator(kind: str, seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(SimpleImputer(add_indicator=True), StandardScaler(),
                             LogisticRegression(max_iter=1000))
    if kind == "gbdt":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=100, max_depth=4, random_state=seed)
    raise ValueError(f"local_model {kind!r} is not one of ['logreg', 'gbdt']")
