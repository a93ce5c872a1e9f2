"""The result of a federated evaluation: metrics, aggregated histograms, per-site table, figures."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.evaluation.metrics import roc_from_histograms

#: overall metrics in display order, with their labels
OVERALL_LABELS = {
    "n": "index events", "positives": "positives", "auc": "AUC (c-statistic)",
    "auc_tie_bound": "AUC binning bound (+/-)", "auprc": "AUPRC (average precision)", "brier": "Brier score",
    "observed_rate": "observed event rate", "expected_rate": "mean predicted risk",
    "calibration_in_the_large": "calibration-in-the-large (observed - expected)",
    "calibration_intercept": "calibration intercept", "calibration_slope": "calibration slope",
}


@dataclass
class EvaluationResult:
    """Federated evaluation of one model.

    Attributes
    ----------
    overall : dict
        Pooled metrics (keys of :data:`OVERALL_LABELS`).
    calibration_curve : list of dict
        ``n``, ``mean_predicted``, ``observed`` per (merged) calibration bin; every shown bin holds at
        least ``min_cell_count`` events, positives and negatives.
    pos, neg : ndarray of shape (n_bins,)
        Pooled positives / negatives per score bin (sums over sites; no site's own histogram).
    per_site : DataFrame or None
        Each site's own metrics (``released`` False with a ``note`` when suppressed).
    lace : dict or None
        LACE baseline (:func:`ehr_fed.evaluation.lace_baseline`).
    local_only : DataFrame or None
        Local-only cross-validated AUC per site beside the federated model's AUC there
        (:func:`ehr_fed.evaluation.compare_local_only`).
    dp : dict or None
        A private evaluation's record (:mod:`ehr_fed.evaluation.private`): ``epsilon`` and ``delta`` spent,
        the noise of every release; None when the evaluation sums are exact.
    """

    overall: dict[str, Any]
    calibration_curve: list[dict[str, float]]
    pos: np.ndarray
    neg: np.ndarray
    per_site: pd.DataFrame | None = None
    lace: dict[str, Any] | None = None
    local_only: pd.DataFrame | None = None
    sites: list[str] = field(default_factory=list)
    n_bins: int = 0
    encrypted: bool = False
    model_kind: str = ""
    model_sha256: str = ""
    min_cell_count: int = 0
    dp: dict[str, Any] | None = None

    # -- data ------------------------------------------------------------------------------------
    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) of the pooled ROC curve, one point per non-empty score bin."""
        fpr, tpr, _ = roc_from_histograms(self.pos, self.neg)
        return fpr, tpr

    def to_frame(self) -> pd.DataFrame:
        """Overall metrics as a one-column table (``value``) indexed by their labels."""
        rows = {OVERALL_LABELS[k]: self.overall.get(k) for k in OVERALL_LABELS}
        if self.lace is not None:
            rows["LACE index AUC (baseline)"] = self.lace.get("auc")
        return pd.DataFrame({"value": pd.Series(rows, dtype="float64")})

    def to_display_frame(self) -> pd.DataFrame:
        """:meth:`to_frame` as text for people: counts as integers, the other metrics to 4 decimals."""
        counts = {OVERALL_LABELS["n"], OVERALL_LABELS["positives"]}
        frame = self.to_frame()
        text = [("-" if pd.isna(v) else f"{int(round(v)):d}" if label in counts else f"{v:.4f}")
                for label, v in frame["value"].items()]
        return pd.DataFrame({"value": text}, index=frame.index)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (no histograms of single sites exist to include)."""
        fpr, tpr = self.roc_curve()
        return _jsonable({
            "model": {"kind": self.model_kind, "sha256": self.model_sha256},
            "sites": self.sites, "encrypted": self.encrypted, "n_bins": self.n_bins,
            "min_cell_count": self.min_cell_count, "overall": self.overall,
            "calibration_curve": self.calibration_curve,
            "roc_curve": {"fpr": _thin(fpr), "tpr": _thin(tpr)},
            "per_site": _records(self.per_site), "lace": self.lace, "local_only": _records(self.local_only),
            "dp": self.dp,
        })

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def _repr_html_(self) -> str:
        parts = [f"<h4>Federated evaluation ({html.escape(self.model_kind or 'model')}, "
                 f"{len(self.sites)} sites, {'encrypted' if self.encrypted else 'plaintext'} sums)</h4>",
                 self.to_display_frame().to_html()]
        if self.dp is not None:
            parts.append(f"<p>Differential privacy: this evaluation spent epsilon {self.dp['epsilon']:.4g}, delta "
                         f"{self.dp['delta']:g} (noisy histograms)</p>")
        if self.per_site is not None:
            parts += ["<h4>Per site</h4>", self.per_site.to_html(float_format=lambda v: f"{v:.4f}", na_rep="-")]
        if self.local_only is not None:
            parts += ["<h4>Local-only models</h4>",
                      self.local_only.to_html(float_format=lambda v: f"{v:.4f}", na_rep="-")]
        return "\n".join(parts)

    # -- figures ---------------------------------------------------------------------------------
    def plot_roc(self, ax: Any = None):
        """ROC curve from the pooled histograms (with the LACE baseline's AUC in the legend)."""
        from ehr_fed.evaluation.plots import roc_figure

        return roc_figure(self, ax)

    def plot_calibration(self, ax: Any = None):
        """Calibration plot: observed vs mean predicted risk per (merged) bin."""
        from ehr_fed.evaluation.plots import calibration_figure

        return calibration_figure(self, ax)


def _thin(a: np.ndarray, max_points: int = 1000) -> list[float]:
    """At most ``max_points`` evenly spaced points of a curve (first and last kept)."""
    a = np.asarray(a, dtype=float)
    if len(a) > max_points:
        a = a[np.unique(np.linspace(0, len(a) - 1, max_points).round().astype(int))]
    return [round(float(v), 6) for v in a]


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    if df is None:
        return None
    return json.loads(df.reset_index().to_json(orient="records"))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
