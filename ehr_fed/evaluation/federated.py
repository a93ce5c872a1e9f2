"""Federated evaluation of a fitted model: no patient score leaves a site.

>>> result = evaluate(fed, model)          # doctest: +SKIP
>>> result.overall["auc"], result.per_site, result.plot_roc()   # doctest: +SKIP

Rounds (all through the federation, subject to each site's policy):

1. ``evaluation.row_count`` (secure sum): pooled rows, to size the encodings.
2. ``evaluation.score_histograms`` (secure sum): positives / negatives per fine score bin, which the
   decrypting site merges until every released group holds 0 or at least ``min_cell_count`` index
   events, and totals; gives AUC (with a certain bound ``auc_tie_bound`` covering the merging), AUPRC,
   Brier score, calibration-in-the-large and the calibration curve.
3. ``evaluation.calibration_step`` (secure sum, a few rounds): Newton-Raphson for the calibration
   intercept and slope, y ~ a + b logit(p).
4. ``evaluation.site_metrics`` (query): each site's own metrics, released only with enough events.
5. ``evaluation.lace_histograms`` (secure sum, optional): the LACE index as the clinical baseline.

Every site scores only a model it can verify (:mod:`ehr_fed.evaluation.provenance`): the model file carries
the signed transcript of its federated training, which the site replays, or its digest is in the site's
``approved_models``. With differential privacy (``dp=``, or the federation's ``dp``) only rounds 2 and 5 are
made, as private releases with every site's noise inside the secure sum (:mod:`ehr_fed.evaluation.private`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

import ehr_fed.evaluation.tasks  # noqa: F401  (registers the evaluation.* site tasks)
from ehr_fed.evaluation.metrics import LOGIT_BOUND, auc_from_histograms, calibration_fit, summarize
from ehr_fed.evaluation.modeljson import model_digest, model_kind, model_to_json
from ehr_fed.evaluation.result import EvaluationResult

#: per-site metric columns, in report order
SITE_COLUMNS = ["released", "n", "positives", "auc", "auprc", "brier", "calibration_in_the_large",
                "calibration_intercept", "calibration_slope", "note"]


class EvaluationError(ValueError):
    """A federated evaluation cannot be computed (too few rows or events, bad parameters)."""


def evaluate(fed: Any, model: Any, *, n_bins: int | None = None, n_cal_bins: int = 10, per_site: bool = True,
             lace: bool = True, calibration_rounds: int = 10, tol: float = 1e-8,
             dp: Any = None) -> EvaluationResult:
    """Evaluate ``model`` on every site of ``fed`` without pooling patient-level scores.

    Parameters
    ----------
    fed : ehr_fed.federation.Federation
    model : fitted ehr-fed model, or path of a model file
        Sent to the sites as its model-file JSON text; each site scores its own table.
    n_bins : int, optional
        Equal-width score bins on [0, 1] for AUC / AUPRC / ROC (default 10,000; 20 with differential
        privacy). The AUC is exact for the scores rounded to this grid; ``overall["auc_tie_bound"]`` bounds
        its distance to the unbinned AUC.
    n_cal_bins : int
        Equal-width bins of the calibration curve before small cells are merged.
    per_site : bool
        Also ask each site for its own metrics (``result.per_site``).
    lace : bool
        Also compute the AUC of the LACE index (``result.lace``) when the sites' tables have ``lace``.
    calibration_rounds : int
        Most Newton rounds for the calibration slope.
    tol : float
        Newton convergence: largest step of (intercept, slope).
    dp : mapping, float, False or None
        Differential privacy of the evaluation (``{"epsilon": 1, "delta": 1e-6}`` or an epsilon; ``None``:
        the federation's ``dp``; ``False``: off): the score (and LACE) histograms are private releases with
        every site's noise inside the secure sum, charged to each site's budget, and every other figure is
        computed from them (:mod:`ehr_fed.evaluation.private`); per-site metrics are not requested.
        ``result.dp`` is the epsilon and delta spent. Without DP the results are unchanged.

    Returns
    -------
    EvaluationResult
    """
    from ehr_fed.evaluation.private import resolve

    private = resolve(fed, dp)
    if n_bins is None:
        from ehr_fed.evaluation.private import DEFAULT_DP_BINS

        n_bins = 10_000 if private is None else DEFAULT_DP_BINS
    if int(n_bins) < 2 or int(n_cal_bins) < 1:
        raise EvaluationError(f"n_bins must be >= 2 and n_cal_bins >= 1, got n_bins={n_bins}, "
                              f"n_cal_bins={n_cal_bins}")
    text = model_to_json(model)
    if private is not None:
        return _evaluate_private(fed, text, private, int(n_bins), int(n_cal_bins), lace)
    n_sites = len(fed.site_ids)
    n_total, n_pos = pooled_counts(fed)
    if not (0 < n_pos < n_total):
        raise EvaluationError(f"the pooled label has {int(n_pos)} positive of {int(n_total)} index events: "
                              "discrimination needs both outcomes; evaluate on a cohort with events")
    bound = (max(n_total, 1.0), n_sites)
    params = {"model": text, "n_bins": int(n_bins)}
    layout = {"pos": bound, "neg": bound, "n": bound, "sums": bound}
    out = fed.secure_sum("evaluation.score_histograms", params, layout)
    pos = MergedHistogram(out["pos"], out.suppressed.get("pos", []))
    neg = MergedHistogram(out["neg"], out.suppressed.get("neg", []))
    overall = summarize(_summary_sums(pos, neg, out, int(n_cal_bins)), fed.policy.min_cell_count)
    overall["auc"], overall["auc_tie_bound"] = merged_auc(pos, neg)
    curve = overall.pop("calibration_curve")
    a, b = federated_calibration(fed, text, n_total, calibration_rounds, tol)
    overall.update({"calibration_intercept": a, "calibration_slope": b})
    return EvaluationResult(
        overall=overall, calibration_curve=curve, pos=pos.spread, neg=neg.spread,
        per_site=site_table(fed, text) if per_site else None,
        lace=lace_baseline(fed) if lace else None,
        sites=list(fed.site_ids), n_bins=int(n_bins), encrypted=bool(fed.encrypted),
        model_kind=model_kind(text), model_sha256=model_digest(text),
        min_cell_count=int(fed.policy.min_cell_count),
    )


def _evaluate_private(fed: Any, text: str, cfg: Any, n_bins: int, n_cal_bins: int, lace: bool) -> EvaluationResult:
    """The private evaluation (:mod:`ehr_fed.evaluation.private`): one noisy release per histogram."""
    from ehr_fed.evaluation.private import LACE_TASK, SCORE_TASK, PrivateEvaluation, histogram_calibration

    session = PrivateEvaluation(fed, cfg, [SCORE_TASK, *([LACE_TASK] if lace else [])])
    out = session.histograms(SCORE_TASK, {"model": text, "n_bins": n_bins}, n_bins)
    pos, neg = _released(out, "pos"), _released(out, "neg")
    if np.isnan(pos.counts).any() or np.isnan(neg.counts).any():
        raise EvaluationError(
            f"the decrypting site hid the noisy score histograms (fewer index events than its minimum cell count, "
            f"min_cell_count={fed.policy.min_cell_count}): evaluate on a larger cohort")
    n_total, n_pos = float(pos.spread.sum() + neg.spread.sum()), float(pos.spread.sum())
    if not (0 < n_pos < n_total):
        raise EvaluationError("the noisy score histograms hold only one outcome: discrimination needs both; "
                              "evaluate on a larger cohort or with a larger epsilon")
    centre = (np.arange(n_bins) + 0.5) / n_bins
    sums = np.array([float((centre * (pos.spread + neg.spread)).sum()),
                     float((pos.spread * (1 - centre) ** 2 + neg.spread * centre ** 2).sum())])
    released = {"n": [n_total, n_pos], "sums": sums}  # read from the histograms: no further release
    overall = summarize(_summary_sums(pos, neg, released, n_cal_bins), fed.policy.min_cell_count)
    overall["auc"], overall["auc_tie_bound"] = merged_auc(pos, neg)
    curve = overall.pop("calibration_curve")
    a, b = histogram_calibration(pos.spread, neg.spread)
    overall.update({"calibration_intercept": a, "calibration_slope": b})
    lace_result = _private_lace(session) if lace else None
    return EvaluationResult(
        overall=overall, calibration_curve=curve, pos=pos.spread, neg=neg.spread, per_site=None, lace=lace_result,
        sites=list(fed.site_ids), n_bins=n_bins, encrypted=bool(fed.encrypted), model_kind=model_kind(text),
        model_sha256=model_digest(text), min_cell_count=int(fed.policy.min_cell_count),
        dp=session.record(n_bins=n_bins),
    )


def _released(out: Any, name: str) -> MergedHistogram:
    from ehr_fed.evaluation.private import released_counts

    return MergedHistogram(released_counts(out[name]), out.suppressed.get(name, []))


def _private_lace(session: Any) -> dict[str, Any]:
    """The LACE baseline from its private release (the same summaries as :func:`lace_baseline`)."""
    from ehr_fed.evaluation.private import LACE_TASK
    from ehr_fed.evaluation.tasks import LACE_MAX

    s = session.histograms(LACE_TASK, {}, LACE_MAX + 1)
    pos, neg = _released(s, "pos"), _released(s, "neg")
    return _lace_summary(pos, neg, private=True)


def pooled_counts(fed: Any) -> tuple[float, float]:
    """Pooled index events and positives (one secure sum)."""
    from ehr_fed.models.logreg import ROW_BOUND

    n = np.asarray(fed.secure_sum("evaluation.row_count", {}, {"n": (ROW_BOUND, len(fed.site_ids))})["n"])
    if np.isnan(n).any():
        raise EvaluationError(
            f"the decrypting site suppressed the pooled index events or positives (fewer than its minimum cell "
            f"count, min_cell_count={fed.policy.min_cell_count}): evaluate on a larger cohort")
    return float(n[0]), float(n[1])


def federated_calibration(fed: Any, text: str, n_total: float, max_iter: int = 10,
                          tol: float = 1e-8) -> tuple[float, float]:
    """Calibration intercept and slope, y ~ a + b logit(p), by Newton rounds over secure sums."""
    bound = (max(n_total, 1.0) * (1.0 + LOGIT_BOUND) ** 2, len(fed.site_ids))

    def step(coef: np.ndarray) -> dict[str, np.ndarray]:
        return fed.secure_sum("evaluation.calibration_step", {"model": text, "coef": np.asarray(coef)},
                              {"grad": bound, "info": bound})

    return calibration_fit(step, max_iter=max_iter, tol=tol)


def site_table(fed: Any, text: str) -> pd.DataFrame:
    """Each site's own metrics (``evaluation.site_metrics``); suppressed sites say why."""
    replies = fed.query("evaluation.site_metrics", {"model": text})
    rows = {}
    for sid in fed.site_ids:
        if sid not in replies:
            why = replies.missing.get(sid, "no reply")
            rows[sid] = {"released": False, "note": f"no metrics: {why}"}
            continue
        r = dict(replies[sid])
        rows[sid] = {k: r.get(k) for k in SITE_COLUMNS if k not in ("note",)}
        rows[sid]["released"] = bool(r.get("released"))
        rows[sid]["note"] = r.get("reason") or ""
    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=SITE_COLUMNS)
    df.index.name = "site_id"
    for c in SITE_COLUMNS[1:-1]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["released"] = df["released"].fillna(False).astype(bool)
    df["note"] = df["note"].fillna("").astype(str)
    return df


def lace_baseline(fed: Any) -> dict[str, Any]:
    """AUC of the LACE index as a risk score, from secure-summed histograms of its values.

    Returns ``{"available": bool, "auc": float, "n": int, "reason": str}``; not available when no
    site's table has LACE values.
    """
    from ehr_fed.models.logreg import ROW_BOUND

    bound = (ROW_BOUND, len(fed.site_ids))
    s = fed.secure_sum("evaluation.lace_histograms", {}, {"pos": bound, "neg": bound})
    pos = MergedHistogram(s["pos"], s.suppressed.get("pos", []))
    neg = MergedHistogram(s["neg"], s.suppressed.get("neg", []))
    return _lace_summary(pos, neg)


def _lace_summary(pos: MergedHistogram, neg: MergedHistogram, private: bool = False) -> dict[str, Any]:
    from ehr_fed.evaluation.tasks import LACE_MAX

    if np.isnan(pos.counts).any() or np.isnan(neg.counts).any():
        return {"available": False, "auc": None, "n": None,
                "reason": "fewer index events with a LACE value than the sites' minimum cell count"}
    n = float(pos.counts.sum() + neg.counts.sum())
    if n == 0:
        return {"available": False, "auc": None, "n": 0,
                "reason": "the study has no LACE index values at any site (column 'lace' absent or empty)"}
    if pos.counts.sum() == 0 or neg.counts.sum() == 0:
        return {"available": False, "auc": None, "n": int(n),
                "reason": "the index events with a LACE value have only one outcome"}
    auc, auc_bound = merged_auc(pos, neg)
    exact = not pos.merged and not neg.merged and not private
    return {"available": True, "auc": auc, "n": int(round(n)), "reason": "", "auc_bound": auc_bound,
            "values": f"0..{LACE_MAX} (each value one bin: ties counted 1/2"
                      + (", exact)" if exact else "; values with few events merged at the sites, AUC within "
                         "auc_bound" + (" of the noisy histograms)" if private else ")"))}


class MergedHistogram:
    """A released histogram whose small bins the decrypting site merged.

    ``counts``: the released counts (a merged group's count in its first bin); ``groups``: every
    non-empty group as ``(first_bin, last_bin, count)``; ``spread``: the counts spread evenly over each
    group's bins (the estimate used for metrics); ``merged``: whether any bins were merged.
    """

    def __init__(self, counts: Any, merged: list[list[int]]):
        self.counts = np.asarray(counts, dtype=np.float64).ravel()
        ends = {int(g[1]): int(g[-1]) for g in merged or []}  # entries are [row, bin, bin, ...]
        self.merged = bool(ends)
        c = np.nan_to_num(self.counts)
        self.groups = [(int(i), ends.get(int(i), int(i)), float(c[i])) for i in np.flatnonzero(c > 0)]
        self.spread = np.zeros_like(c)
        for a, b, n in self.groups:
            self.spread[a:b + 1] = n / (b - a + 1)


def merged_auc(pos: MergedHistogram, neg: MergedHistogram) -> tuple[float, float]:
    """AUC estimate from merged histograms and a bound on its distance to the unbinned AUC.

    The estimate spreads each merged group evenly over its bins (ties within a bin count 1/2). The bound
    is certain: a positive in group ``[a_p, b_p]`` certainly outranks a negative in ``[a_q, b_q]`` when
    ``a_p > b_q`` and may outrank or tie it when ``b_p >= a_q``; the true AUC lies between the two sums.
    """
    est, _ = auc_from_histograms(pos.spread, neg.spread)
    n_pos, n_neg = sum(g[2] for g in pos.groups), sum(g[2] for g in neg.groups)
    if not n_pos or not n_neg:
        return float("nan"), float("nan")
    n_bins = max(pos.counts.size, neg.counts.size)
    neg_hi = np.zeros(n_bins + 1)  # negatives whose group ends at bin b
    neg_lo = np.zeros(n_bins + 1)  # negatives whose group starts at bin a
    for a, b, n in neg.groups:
        neg_hi[b] += n
        neg_lo[a] += n
    ends_below = np.concatenate([[0.0], np.cumsum(neg_hi)])  # [k]: negatives ending at bins < k
    starts_upto = np.cumsum(neg_lo)  # [k]: negatives starting at bins <= k
    lo = sum(n * ends_below[a] for a, _, n in pos.groups) / (n_pos * n_neg)
    hi = sum(n * starts_upto[b] for _, b, n in pos.groups) / (n_pos * n_neg)
    return float(est), float(max(est - lo, hi - est, 0.0))


def _summary_sums(pos: MergedHistogram, neg: MergedHistogram, out: Any, n_cal_bins: int) -> dict[str, np.ndarray]:
    """The sums :func:`summarize` reads, from the released (merged) histograms and totals.

    Calibration bins are read off the spread fine histograms (mean predicted risk at the fine bins'
    centres, within half a fine bin of the exact mean), so the curve releases nothing beyond them.
    """
    n_bins = pos.spread.size
    centre = (np.arange(n_bins) + 0.5) / n_bins
    cal = np.minimum((centre * n_cal_bins).astype(np.int64), n_cal_bins - 1)
    rows = pos.spread + neg.spread
    counts = np.asarray(out["n"], dtype=np.float64)
    return {
        "pos": pos.spread, "neg": neg.spread,
        "cal_n": np.bincount(cal, weights=rows, minlength=n_cal_bins),
        "cal_p": np.bincount(cal, weights=rows * centre, minlength=n_cal_bins),
        "cal_y": np.bincount(cal, weights=pos.spread, minlength=n_cal_bins),
        "totals": np.concatenate([counts, np.asarray(out["sums"], dtype=np.float64)]),
    }
