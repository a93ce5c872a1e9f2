"""Differentially private federated evaluation: noisy score and LACE histograms inside the secure sum.

With differential privacy requested (``evaluate(fed, model, dp={"epsilon": 1})``, the federation's
``privacy: dp:``, or ``ehr-fed evaluate --epsilon``), an evaluation makes one private release per histogram,
group ``evaluation`` of :mod:`ehr_fed.privacy.dp`:

``evaluation.score_histograms``  positives and negatives per score bin (``n_bins``, default 20 with DP)
``evaluation.lace_histograms``   positives and negatives per LACE value 0..19 (with ``lace=True``)

Each site counts its rows (capped to ``events_per_patient`` per patient) into exact integer bins and adds its
Skellam share of the noise of each output before masking and encryption: one patient moves one bin of one of
the two histograms by at most ``events_per_patient``, so each output has L1 = L2 sensitivity 1 per event (both
outputs are noised as if the patient moved each: conservative by composition). The site derives its noise
from the declared plan and charges the release to its budget ledger like every other release
(:mod:`ehr_fed.privacy.budget`). The decrypting site merges bins of the noisy sums below ``min_cell_count``
as for any histogram.

Everything else is post-processing of the two released histograms at the coordinator (no privacy cost):
negative noisy bins are set to 0; the totals, Brier score, observed and expected rates and the calibration
intercept and slope are computed from the histograms at the bins' centres (within half a bin of the exact
scores), not from separate sums. The per-site metrics (a plaintext query) have no private form and are not
requested; neither are the row-count round and the calibration Newton rounds of an exact evaluation.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from scipy.special import expit

from ehr_fed.privacy.dp import (
    OutputSensitivity,
    Release,
    ReleasePlan,
    calibrate,
    dp_task,
    field_width,
    noise_room,
    requested_dp,
    spent_record,
)

SCORE_TASK, LACE_TASK = "evaluation.score_histograms", "evaluation.lace_histograms"
#: score bins of a private evaluation (every bin carries noise: fewer, wider bins than the exact 10,000)
DEFAULT_DP_BINS = 20
#: public per-bin bound of a pooled count, from which the integer fields are sized
COUNT_BOUND = 1e9
#: outputs of ``evaluation.score_histograms`` that a private release leaves at 0 (read from the histograms)
ZERO_OUTPUTS = {SCORE_TASK: {"n": 2, "sums": 2}, LACE_TASK: {}}


def _hist_sens(params: dict) -> list[OutputSensitivity]:
    return [OutputSensitivity("pos", 1.0, 1.0), OutputSensitivity("neg", 1.0, 1.0)]


dp_task(SCORE_TASK, "evaluation", _hist_sens)
dp_task(LACE_TASK, "evaluation", _hist_sens)


# ----------------------------------------------------------------------------------- site side
def noisy_histograms(pos: np.ndarray, neg: np.ndarray, task: str, rel: Release) -> dict[str, np.ndarray]:
    """A site's exact integer histograms plus its noise shares (and the zero outputs of ``task``)."""
    p = np.rint(np.asarray(pos, dtype=np.float64)).astype(np.int64)
    n = np.rint(np.asarray(neg, dtype=np.float64)).astype(np.int64)
    out = {"pos": p + rel.noise("pos", p.size), "neg": n + rel.noise("neg", n.size)}
    for name, size in ZERO_OUTPUTS[task].items():
        out[name] = np.zeros(size, dtype=np.int64)
    return out


# ----------------------------------------------------------------------------------- coordinator side
class _Holder:
    def __init__(self, dp: Any):
        self.dp = dp


def resolve(fed: Any, dp: Any) -> Any:
    """The evaluation's DPConfig: ``dp`` (a mapping, a number = epsilon, ``False`` = off), else the
    federation's ``dp``; None when off. (Not the evaluated model's own ``dp``: that is its training's.)"""
    if dp is False:
        return None
    found = requested_dp(_Holder(dp), fed, ())
    return None if found is None else found[0]


class PrivateEvaluation:
    """The release plan of one private evaluation and the record of what it spent."""

    def __init__(self, fed: Any, cfg: Any, tasks: list[str]):
        self.fed, self.tasks = fed, list(tasks)
        self.plan = ReleasePlan(**cfg.model_dump(), releases={"evaluation": len(self.tasks)},
                                plan_id=uuid.uuid4().hex)
        self.records: list[dict[str, Any]] = []

    def noise(self, task: str) -> dict:
        return calibrate(self.plan, "evaluation", _hist_sens({}), task)

    def histograms(self, task: str, params: dict, n_bins: int) -> Any:
        """One private release of ``task``: the secure sum of every site's noisy histograms."""
        noise = self.noise(task)
        n_sites = len(self.fed.site_ids)
        layout = {name: {"widths": [[int(n_bins), [field_width(COUNT_BOUND + noise_room(noise[name]))]]],
                         "max_terms": n_sites} for name in ("pos", "neg")}
        for name, size in ZERO_OUTPUTS[task].items():
            layout[name] = {"widths": [[size, [2]]], "max_terms": n_sites}
        out = self.fed.secure_sum(task, {**params, "dp": self.plan.to_params()}, layout)
        self.records.append({"task": task, "group": "evaluation", "rho": sum(o.rho for o in noise.values()),
                             "xi": sum(o.xi for o in noise.values()),
                             "noise": {k: {"sigma": o.sigma, "l2": o.l2} for k, o in noise.items()}})
        return out

    def record(self, **extra: Any) -> dict[str, Any]:
        """The evaluation's ``dp`` record: epsilon and delta spent, and the noise of every release."""
        return spent_record(self.plan, self.records, noise={r["task"]: r["noise"] for r in self.records},
                            note="every released histogram bin carries noise; metrics are computed from the noisy "
                                 "histograms (post-processing) and the calibration from the bins' centres", **extra)


def released_counts(values: Any) -> np.ndarray:
    """A noisy released histogram as counts: negative bins set to 0 (NaN: hidden by the decrypting site)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    return np.where(np.isnan(a), np.nan, np.maximum(a, 0.0))


def histogram_calibration(pos: np.ndarray, neg: np.ndarray, max_iter: int = 25, tol: float = 1e-10
                          ) -> tuple[float, float]:
    """Calibration intercept and slope, y ~ a + b logit(p), with every row at its bin's centre."""
    from ehr_fed.evaluation.metrics import calibration_fit, logit

    n_bins = pos.size
    lp = logit((np.arange(n_bins) + 0.5) / n_bins)
    x = np.column_stack([np.ones(n_bins), lp])

    def step(coef: np.ndarray) -> dict[str, np.ndarray]:
        p = expit(x @ coef)
        w = (pos + neg) * p * (1.0 - p)
        return {"grad": x.T @ (pos - (pos + neg) * p), "info": (x * w[:, None]).T @ x}

    return calibration_fit(step, max_iter=max_iter, tol=tol)
