"""Discrimination and calibration from aggregated score histograms.

A site never sends a patient's score. It sends, for a fixed grid of score
bins, the number of positive and negative index events whose predicted risk
falls in each bin, plus sums for the Brier score and calibration. The sums
over sites are what a pooled evaluation would compute on the same grid:

- AUC: the Mann-Whitney statistic over bins, ties within a bin counting 1/2.
  With ``n_bins`` equal-width bins on [0, 1] it equals the pooled AUC of the
  scores rounded to the bin grid; its distance to the unrounded pooled AUC is
  at most half the share of positive-negative pairs that share a bin (reported
  as ``auc_tie_bound``), which the default 10,000 bins keep far below 0.001.
- AUPRC: average precision, sum over thresholds of (R_k - R_{k-1}) P_k, with a
  bin taken as one threshold.
- Brier score, calibration-in-the-large (observed minus expected event rate)
  and a binned calibration curve.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def score_bins(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each score on ``n_bins`` equal-width bins over [0, 1]."""
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    return np.minimum((s * n_bins).astype(np.int64), n_bins - 1)


def local_histograms(scores: np.ndarray, labels: np.ndarray, n_bins: int, n_cal_bins: int) -> dict[str, np.ndarray]:
    """The sums one site contributes to a federated evaluation (no row-level values)."""
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    b = score_bins(scores, n_bins)
    c = score_bins(scores, n_cal_bins)
    return {
        "pos": np.bincount(b, weights=y, minlength=n_bins),
        "neg": np.bincount(b, weights=1.0 - y, minlength=n_bins),
        "cal_n": np.bincount(c, minlength=n_cal_bins).astype(float),
        "cal_p": np.bincount(c, weights=scores, minlength=n_cal_bins),
        "cal_y": np.bincount(c, weights=y, minlength=n_cal_bins),
        "totals": np.array([len(y), y.sum(), scores.sum(), np.sum((scores - y) ** 2)], dtype=float),
    }


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUC from per-bin positive and negative counts (bins in increasing score order).

    Returns
    -------
    auc : float
    tie_bound : float
        Half the share of positive-negative pairs in the same bin: the most the
        binning can move the AUC away from the unbinned one.
    """
    pos = np.asarray(pos, dtype=float)
    neg = np.asarray(neg, dtype=float)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    neg_below = np.cumsum(neg) - neg
    wins = np.sum(pos * neg_below) + 0.5 * np.sum(pos * neg)
    pairs = n_pos * n_neg
    return float(wins / pairs), float(0.5 * np.sum(pos * neg) / pairs)


def auprc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision with each bin as one threshold, from the highest scores down."""
    pos = np.asarray(pos, dtype=float)[::-1]
    neg = np.asarray(neg, dtype=float)[::-1]
    n_pos = pos.sum()
    if n_pos == 0:
        return float("nan")
    tp = np.cumsum(pos)
    fp = np.cumsum(neg)
    keep = (pos + neg) > 0
    precision = tp[keep] / (tp[keep] + fp[keep])
    recall = tp[keep] / n_pos
    recall_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - recall_prev) * precision))


def summarize(sums: dict[str, np.ndarray], min_cell_count: int = 0) -> dict[str, object]:
    """Metrics from summed site histograms; calibration bins below ``min_cell_count`` are merged."""
    n, n_pos, sum_p, sum_sq = (float(v) for v in sums["totals"])
    auc, tie = auc_from_histograms(sums["pos"], sums["neg"])
    return {
        "n": int(round(n)),
        "positives": int(round(n_pos)),
        "auc": auc,
        "auc_tie_bound": tie,
        "auprc": auprc_from_histograms(sums["pos"], sums["neg"]),
        "brier": sum_sq / n if n else float("nan"),
        "observed_rate": n_pos / n if n else float("nan"),
        "expected_rate": sum_p / n if n else float("nan"),
        "calibration_in_the_large": (n_pos - sum_p) / n if n else float("nan"),
        "calibration_curve": calibration_curve(sums["cal_n"], sums["cal_p"], sums["cal_y"], min_cell_count),
    }


def calibration_curve(
    count: np.ndarray, sum_p: np.ndarray, sum_y: np.ndarray, min_cell_count: int = 0
) -> list[dict[str, float]]:
    """Mean predicted vs observed rate per bin, merging neighbouring bins until each holds
    at least ``min_cell_count`` events (and positives), so no small cell is shown."""
    points: list[dict[str, float]] = []
    acc_n = acc_p = acc_y = 0.0
    for n_i, p_i, y_i in zip(count, sum_p, sum_y, strict=True):
        acc_n, acc_p, acc_y = acc_n + n_i, acc_p + p_i, acc_y + y_i
        big_enough = acc_n >= max(1, min_cell_count) and (
            min_cell_count == 0 or (acc_y >= min_cell_count and acc_n - acc_y >= min_cell_count)
        )
        if big_enough:
            points.append({"n": float(acc_n), "mean_predicted": float(acc_p / acc_n),
                           "observed": float(acc_y / acc_n)})
            acc_n = acc_p = acc_y = 0.0
    if acc_n > 0:
        if points:  # fold the small remainder into the last shown bin
            last = points[-1]
            tot = last["n"] + acc_n
            points[-1] = {
                "n": float(tot),
                "mean_predicted": float((last["mean_predicted"] * last["n"] + acc_p) / tot),
                "observed": float((last["observed"] * last["n"] + acc_y) / tot),
            }
        elif acc_n >= min_cell_count:
            points.append({"n": float(acc_n), "mean_predicted": float(acc_p / acc_n),
                           "observed": float(acc_y / acc_n)})
    return points


#: predicted risks are clipped to [P_CLIP, 1 - P_CLIP] before taking their logit
P_CLIP = 1e-12
#: largest |logit(p)| after clipping (sizes the calibration layouts)
LOGIT_BOUND = float(np.log((1 - P_CLIP) / P_CLIP))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of risks clipped to [P_CLIP, 1 - P_CLIP]."""
    p = np.clip(np.asarray(p, dtype=float), P_CLIP, 1.0 - P_CLIP)
    return np.log(p) - np.log1p(-p)


def calibration_slope_step(logit_p: np.ndarray, y: np.ndarray, coef: np.ndarray) -> dict[str, np.ndarray]:
    """Score and information of y ~ a + b * logit(p) at ``coef`` = (a, b): one site's Newton sums.

    Returns ``grad`` (2,) and ``info`` (2, 2); summed over sites they are the pooled score and Fisher
    information of the recalibration model.
    """
    logit_p = np.asarray(logit_p, dtype=float)
    y = np.asarray(y, dtype=float)
    x = np.column_stack([np.ones_like(logit_p), logit_p])
    eta = x @ np.asarray(coef, dtype=float)
    p = expit(eta)  # no overflow for a very negative eta
    w = p * (1.0 - p)
    return {"grad": x.T @ (y - p), "info": (x * w[:, None]).T @ x}


def calibration_fit(step, max_iter: int = 25, tol: float = 1e-10) -> tuple[float, float]:
    """Newton-Raphson for the recalibration model y ~ a + b logit(p), starting at (0, 1).

    Parameters
    ----------
    step : callable
        ``step(coef) -> {"grad": (2,), "info": (2, 2)}``: the (pooled) sums at ``coef``; locally
        :func:`calibration_slope_step`, federated a secure sum of every site's.
    max_iter : int
        Most Newton steps (each one round in a federation).
    tol : float
        Stop when the largest step is below ``tol``.

    Returns
    -------
    intercept, slope : float
        NaN when the information is singular (e.g. a constant score) or the label has one class.
    """
    coef = np.array([0.0, 1.0])
    for _ in range(max_iter):
        s = step(coef)
        grad, info = np.asarray(s["grad"], dtype=float), np.asarray(s["info"], dtype=float)
        if not (np.all(np.isfinite(grad)) and np.all(np.isfinite(info))):
            return float("nan"), float("nan")
        try:
            delta = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            return float("nan"), float("nan")
        coef = coef + delta
        if not np.all(np.isfinite(coef)) or np.abs(coef).max() > 1e6:
            return float("nan"), float("nan")
        if np.abs(delta).max() < tol:
            break
    return float(coef[0]), float(coef[1])


def roc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve from per-bin counts (bins in increasing score order).

    Returns
    -------
    fpr, tpr : ndarray
        Starting at (0, 0), one point per non-empty bin from the highest scores down, ending at (1, 1).
    threshold_bin : ndarray of int
        The lowest bin counted as positive at each point (``len(pos)`` for the first point).
    """
    pos = np.asarray(pos, dtype=float)[::-1]
    neg = np.asarray(neg, dtype=float)[::-1]
    keep = (pos + neg) > 0
    n_pos, n_neg = pos.sum(), neg.sum()
    tp, fp = np.cumsum(pos)[keep], np.cumsum(neg)[keep]
    bins = (len(pos) - 1 - np.arange(len(pos)))[keep]
    fpr = np.concatenate([[0.0], fp / n_neg if n_neg else np.zeros_like(fp)])
    tpr = np.concatenate([[0.0], tp / n_pos if n_pos else np.zeros_like(tp)])
    return fpr, tpr, np.concatenate([[len(pos)], bins])
