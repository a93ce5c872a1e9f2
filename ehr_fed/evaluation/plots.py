"""Figures of a federated evaluation (matplotlib; Agg when no display), drawn from aggregates only."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np


def _axes(ax: Any, size=(4.6, 4.2)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, dpi=100)
    return fig, ax


def roc_figure(result: Any, ax: Any = None):
    """ROC curve of the pooled score histograms; returns the Figure."""
    fig, ax = _axes(ax)
    fpr, tpr = result.roc_curve()
    auc = result.overall.get("auc", float("nan"))
    ax.plot(fpr, tpr, color="#1f5f9f", lw=2, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC 0.5)")
    lace = getattr(result, "lace", None) or {}
    if lace.get("available"):  # a number, not a curve: written on the plot, not in the legend
        ax.text(0.97, 0.30, f"LACE index alone: AUC {lace['auc']:.3f}", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="#444")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(f"ROC curve, {len(result.sites)} sites pooled", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(result: Any, ax: Any = None):
    """Observed vs mean predicted risk per calibration bin (point size ~ events); returns the Figure."""
    fig, ax = _axes(ax)
    pts = result.calibration_curve
    x = np.array([p["mean_predicted"] for p in pts])
    y = np.array([p["observed"] for p in pts])
    n = np.array([p["n"] for p in pts])
    hi = float(max(x.max() if len(x) else 0, y.max() if len(y) else 0, 0.05)) * 1.05
    hi = min(hi, 1.0)
    ax.plot([0, hi], [0, hi], ls="--", color="grey", lw=1, label="perfect calibration")
    if len(x):
        sizes = 20 + 180 * n / n.max()
        ax.plot(x, y, color="#b0502a", lw=1)
        ax.scatter(x, y, s=sizes, color="#b0502a", zorder=3, label="bins (merged to >= min cell count)")
    o = result.overall
    ax.set_title(f"Calibration: slope {o.get('calibration_slope', float('nan')):.2f}, "
                 f"in-the-large {o.get('calibration_in_the_large', float('nan')):+.3f}", fontsize=10)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("mean predicted risk")
    ax.set_ylabel("observed event rate")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def importance_figure(names: list[str], values: np.ndarray, title: str, ax: Any = None,
                      xlabel: str = "share of the model's total gain"):
    """Horizontal bar chart of the 20 largest non-zero values (feature importances), largest on top; the
    features the model never uses are named below the axis."""
    values = np.asarray(values, dtype=float)
    used = np.flatnonzero(values > 0)
    order = used[np.argsort(values[used])[::-1][:20]][::-1]
    fig, ax = _axes(ax, size=(5.6, 0.28 * max(len(order), 1) + 1.5))
    ax.barh([names[i] for i in order], values[order], color="#4878a8")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(float(values.max(initial=0.0)) * 1.08, 1e-9))
    unused = [names[i] for i in np.flatnonzero(values <= 0)]
    if unused:
        shown = ", ".join(unused[:4]) + (f" and {len(unused) - 4} more" if len(unused) > 4 else "")
        ax.annotate(f"{len(unused)} feature{'s' if len(unused) > 1 else ''} not used by any split: {shown}",
                    xy=(0, 0),
                    xycoords="figure fraction", xytext=(6, 4), textcoords="offset points", fontsize=8,
                    color="#555")
    fig.tight_layout()
    return fig


def figure_png(fig) -> str:
    """The figure as a base64 PNG ``data:`` URI (and closes it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
