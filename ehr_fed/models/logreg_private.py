"""Differentially private federated logistic regression: the coordinator's side.

``FederatedLogisticRegression(dp={"epsilon": 2})`` (or ``dp:`` in the federation) declares a session of
``2 + rounds`` private releases: the row count and the preprocessing sums (group ``preprocess``) and
``rounds`` Newton rounds (group ``model``, default 5, no early stop: the plan is fixed in advance; by default
only the first round releases the information matrix, the later ones the gradient only). Every
site adds its noise share to its own clipped, quantised contribution (:mod:`ehr_fed.models.logreg_dp`);
the coordinator only sizes the integer fields from the same public calibration and post-processes the
noisy sums (counts clipped, Hessian eigenvalues floored). The fitted model carries ``dp_``: the
``(epsilon, delta)`` spent, the clipping bound, the quantisation scales and the noise of every release.

The Newton rounds keep up to ``weighted_events`` (a :class:`~ehr_fed.privacy.dp.DPConfig` field, default
:data:`DEFAULT_WEIGHTED_EVENTS` = 3) index events per patient, weighted so that a patient's rows count as
``events_per_patient`` rows (same noise); the row count and the preprocessing sums keep ``events_per_patient``.

Options in ``dp`` beyond :class:`~ehr_fed.privacy.dp.DPConfig`: ``rounds`` (5), ``clip_norm`` (L2 bound of a
standardized design row, default ``1.5 sqrt(d)``), ``feature_bounds`` ({name: [lo, hi]} clipping ranges of the
raw features for the preprocessing sums; defaults from the study spec's feature kinds),
``information_rounds`` (how many of the first rounds release the information matrix, 1; the later rounds
release the gradient and log-likelihood only and step with the mean of the released matrices),
``information_weight`` (budget of a round that releases the information matrix relative to one that does not,
1), ``weight_gradient`` (share of such a round's budget on the gradient rather than the information matrix,
0.8), ``information_clip`` (row clip norm of the information matrix in units of ``sqrt(d)``; default: the
row clip norm), ``last_round_weight`` (budget of the last round relative to each other round, 1), and the
post-processing of the noisy sums: ``ridge_factor`` (0.1: a ridge of 0.1 x the spectral scale of the first
round's information matrix noise, in the standardized space, not on the intercept), ``hessian_window``
(default ``rounds``: each step uses the mean of every information matrix released so far; k: the last k) and
``average_last``
(default: the mean of the last 3 iterates, of at most ``rounds - 2``; 1: the last one).

Why average the last iterates: near the solution a noisy Newton step lands at ``beta* + H^-1 noise_r``, the
error of that round's noise alone (earlier errors are stepped away), so the last ``k`` iterates carry
independent noise and their mean has ``1 / sqrt(k)`` of it. With 5 rounds on an equal split, averaging the
last 3 leaves ``sqrt(5 / 3)`` of one round's full-budget noise instead of ``sqrt(5)``. On the benchmark
federation (:mod:`benchmarks.dp_utility`, 3 data seeds, 7 fits each at epsilon 2) its effect on the test AUC
was within the spread of the medians (about 0.004); the row clip norm mattered more (see
:func:`ehr_fed.models.logreg_dp.newton_clip`). Post-processing: no privacy cost.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np

from ehr_fed.models.base import design_state
from ehr_fed.models.logreg_dp import (
    PREPROCESS_QUANTUM,
    _newton_sens,
    _preprocess_sens,
    _row_count_sens,
    default_feature_bounds,
    newton_clip,
    newton_layout,
    preprocess_layout,
    row_count_layout,
)
from ehr_fed.models.logreg_transcript import (
    NEWTON_TASK,
    PREP_TASK,
    ROW_TASK,
    PrivateNewton,
    derive_design,
    newton_params,
    rule_settings,
)
from ehr_fed.privacy.dp import DPConfig, DPError, ReleasePlan, calibrate, requested_dp, spent_record

#: keys of a model's ``dp`` option that are not part of the budget itself
OPTION_KEYS = ("rounds", "clip_norm", "feature_bounds", "weight_gradient", "hessian_window", "average_last",
               "ridge_factor", "last_round_weight", "information_rounds", "information_weight",
               "information_clip")
DEFAULT_ROUNDS = 5
#: ridge in units of the spectral scale of one round's information-matrix noise (with the clip norm 2 sqrt(d)
#: of logreg_dp.newton_clip). The eigenvalue floor already keeps every step defined; the ridge moves the fixed
#: point towards 0: 0.5 and 0.25 over-shrank (calibration slopes 1.2 to 1.5 at epsilon 2 on the benchmark),
#: 0.1 with the information averaged over the rounds gives slopes about 1
DEFAULT_RIDGE_FACTOR = 0.1
#: share of the budget of a round that releases the information matrix on its gradient (the information
#: matrix of the one such round by default, DEFAULT_INFORMATION_ROUNDS). The information matrix acts through
#: its eigenvalue floor (logreg_dp.smoothed_information): its noise decides how far each step goes, the
#: gradient's noise where the fit ends, so the gradient gets most of the round
DEFAULT_WEIGHT_GRADIENT = 0.8
#: relative budgets of the two setup releases (row count, preprocessing sums). The row count only sizes the
#: integer fields (a public upper bound of the pooled rows) and checks that there are enough rows; the sums
#: fix the standardization every Newton round works in, and their noise cost test AUC on the benchmark
#: federation (module docstring), so they get 9/10 of the group
PREPROCESS_WEIGHTS = (0.1, 0.9)
#: Newton rounds that release the information matrix (None: every round) and their budget relative to a
#: round that releases the gradient only. Only the first: near the solution the information changes little,
#: and the later rounds spend their whole budget on the gradient, whose noise is where the fit ends. On the
#: benchmark federation (benchmarks.dp_utility, 5 data seeds, 8 fits each, one noise stream, with the clip
#: norm 1.5 sqrt(d)) the median AUC gap was 0.0073 / 0.0081 (two noise streams) at epsilon 2 against 0.0079 /
#: 0.0078 with an information matrix in every round, and 0.018 against 0.022 at epsilon 0.5, 0.011 against
#: 0.015 at epsilon 1; a first round with twice the budget of the others was not better
DEFAULT_INFORMATION_ROUNDS = 1
DEFAULT_INFORMATION_WEIGHT = 1.0
#: row clip norm of the information matrix in units of sqrt(d) (None: the row clip norm). A tighter clip
#: makes the information matrix much less noisy, but its eigenvalue floor then falls below the gradient's
#: noise in the weak directions and the fit follows the noise there: at 1.0 and 0.7 sqrt(d) the calibration
#: slope fell to 0.65 and 0.15 and the AUC gap at epsilon 2 grew to 0.04 and 0.11 on the benchmark federation
DEFAULT_INFORMATION_CLIP = None
#: index events per patient the Newton rounds keep (``weighted_events`` of the plan), each row weighted
#: ``min(1, events_per_patient / m)`` (m: the patient's kept rows; logreg_dp.private_newton), so a patient's rows
#: weigh what ``events_per_patient`` rows do and the noise is unchanged. The row count and the preprocessing
#: sums keep ``events_per_patient`` rows. One event per patient fits a sample that under-represents frequent
#: admitters: on the benchmark federation (benchmarks.dp_utility, 5 data seeds) at epsilon 1000 the median test
#: AUC gap was 0.0048 with one event, 0.0013 with up to 3 weighted, 0.0012 with 5, 0.0015 with 20
DEFAULT_WEIGHTED_EVENTS = 3
#: iterates averaged into the private estimate (module docstring)
DEFAULT_AVERAGE_LAST = 3


def resolve_dp(model: Any, federation: Any) -> tuple[DPConfig, dict[str, Any]] | None:
    """The session's DP budget and options: the model's ``dp``, else the federation's (``privacy: dp:`` of
    the federation YAML); None = off."""
    requested = requested_dp(model, federation, OPTION_KEYS)
    if requested is None:
        return None
    cfg, opts = requested
    rounds = opts.get("rounds", DEFAULT_ROUNDS)
    if not (isinstance(rounds, int) and 1 <= rounds <= 50):
        raise DPError(f"dp rounds must be an integer in 1..50, got {rounds!r}")
    k = opts.get("information_rounds", DEFAULT_INFORMATION_ROUNDS or rounds)
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k):
        raise DPError(f"dp information_rounds must be an integer >= 1 (the first round releases the information "
                      f"matrix), got {k!r}")
    w = opts.get("information_weight", DEFAULT_INFORMATION_WEIGHT)
    if not (isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < 1e6):
        raise DPError(f"dp information_weight must be a positive number, got {w!r}")
    f = opts.get("information_clip", DEFAULT_INFORMATION_CLIP)
    if f is not None and not (isinstance(f, int | float) and not isinstance(f, bool) and 0 < f < 1e6):
        raise DPError(f"dp information_clip must be a positive number (units of sqrt(number of terms)), "
                      f"got {f!r}")
    return cfg, opts


def fit_private(model: Any, fed: Any, study: Any, names: list[str], strategy: str, cfg: DPConfig,
                opts: dict[str, Any], callback: Any = None) -> Any:
    """Fit ``model`` (a FederatedLogisticRegression) under the release plan of ``cfg``; sets its attributes."""
    from ehr_fed.models.logreg import ROW_BOUND, signed_release

    rounds = int(opts.get("rounds", DEFAULT_ROUNDS))
    last = float(opts.get("last_round_weight", 1.0))  # the last round decides the model: it may get more
    k_info = int(opts.get("information_rounds", DEFAULT_INFORMATION_ROUNDS or rounds))
    w_info = float(opts.get("information_weight", DEFAULT_INFORMATION_WEIGHT))
    weights = [w_info if i < k_info else 1.0 for i in range(rounds)]
    weights[-1] *= last
    plan = ReleasePlan(**{**cfg.model_dump(), "weighted_events": cfg.weighted_events or DEFAULT_WEIGHTED_EVENTS},
                       releases={"preprocess": 2, "model": rounds},
                       weights={"preprocess": list(PREPROCESS_WEIGHTS), "model": weights},
                       plan_id=uuid.uuid4().hex)
    p = plan.to_params()
    n_sites = len(fed.site_ids)
    records = []
    setup = {ROW_TASK: {"dp": p}}
    raw = fed.secure_sum(ROW_TASK, setup[ROW_TASK], row_count_layout(plan, n_sites, ROW_BOUND))
    transcript = [signed_release(raw)]
    records.append(_record(ROW_TASK, plan, "preprocess", _row_count_sens({})))
    n_noisy = float(np.asarray(raw["n"], dtype=float).ravel()[0])
    sigma_n = records[-1]["noise"]["n"]["sigma"]
    # 5 sd: the row count only sizes the fields (it gets 1/10 of the setup budget, PREPROCESS_WEIGHTS)
    if not n_noisy > 5 * sigma_n:
        raise ValueError(f"the federation holds too few rows for a private fit at epsilon={cfg.epsilon:g} "
                         f"(noisy pooled row count {n_noisy:.0f}, noise sd {sigma_n:.1f})")
    n_bound = n_noisy + 12 * sigma_n  # public upper bound of the pooled row count (noise beyond 12 sd: never)
    bounds = default_feature_bounds(study, names, opts.get("feature_bounds"))
    setup[PREP_TASK] = prep_params = {"features": names, "label": "label", "dp": p, "dp_index": 1,
                                      "dp_clip": {"feature_bounds": bounds, "quantum": PREPROCESS_QUANTUM}}
    raw_sums = fed.secure_sum(PREP_TASK, prep_params, preprocess_layout(plan, prep_params, n_bound, n_sites))
    transcript.append(signed_release(raw_sums))
    records.append(_record(PREP_TASK, plan, "preprocess", _preprocess_sens(prep_params), 1))
    rule = rule_settings(model, strategy, {"hessian_window": rounds, **opts})  # default: every round so far
    design = derive_design(raw, raw_sums, setup, rule, bool(model.fit_intercept))  # as every site derives it
    prep, n_total, n_pos = design.prep, design.n_total, design.n_pos
    d = len(design.terms)
    clip = newton_clip(d, opts.get("clip_norm"), float(opts.get("weight_gradient", DEFAULT_WEIGHT_GRADIENT)),
                       None if k_info >= rounds else k_info, _information_clip(opts, d))
    base = {"preprocess": design_state(prep), "fit_intercept": bool(model.fit_intercept), "label": "label",
            "rule": rule, "setup": setup, "dp": p, "dp_clip": clip}
    step_rule = PrivateNewton(design, rule, model.fit_intercept, p, clip)
    history, path = [], []
    while not step_rule.finished:
        beta = step_rule.beta
        params = newton_params(base, beta, path, transcript)
        layout, _ = newton_layout(plan, params, n_bound, n_sites)
        stats = fed.secure_sum(NEWTON_TASK, params, layout)
        transcript.append(signed_release(stats))
        path.append(beta)
        records.append(_record(NEWTON_TASK, plan, "model", _newton_sens(params), len(path) - 1))
        entry = step_rule.update(stats, beta)
        history.append(entry)
        if callback:
            callback(entry)
    # by default the last 3 iterates, never the first two rounds (still on their way from the start)
    average = int(opts.get("average_last", max(1, min(DEFAULT_AVERAGE_LAST, rounds - 2))))
    beta = np.mean(step_rule.iterates[-average:], axis=0)
    model.beta_, model.information_, model.loglik_ = beta, step_rule.info, step_rule.loglik
    model.n_iter_, model.converged_, model.history_ = rounds, True, history
    model.transcript_ = {"kind": "logreg", "base": base, "beta_path": [[float(v) for v in b] for b in path],
                         "transcript": list(transcript), "average_last": average}
    model._record_fit(prep, names, n_total, n_pos, n_sites)
    model.dp_ = spent_record(
        plan, records, clip_norm=clip["clip_norm"],
        quantisation={"gradient_scale": clip["scale_g"], "hessian_scale": clip["scale_h"],
                      "loglik_scale": clip["scale_l"], "preprocess_quantum": PREPROCESS_QUANTUM},
        feature_bounds=dict(zip(names, bounds, strict=True)), rounds=rounds, average_last=average,
        noise={**{r["task"]: r["noise"] for r in records[:2]},
               "logreg.newton": [r["noise"] for r in records[2:]]},  # one entry per round
        note="counts, sums and standard errors are computed from noisy aggregates; standard errors do not "
             "include the privacy noise",
    )
    return model


def _information_clip(opts: dict[str, Any], d: int) -> float | None:
    """Row clip norm of the information matrix: ``information_clip`` x sqrt(d) (None: the row clip norm)."""
    f = opts.get("information_clip", DEFAULT_INFORMATION_CLIP)
    return None if f is None else float(f) * math.sqrt(d)


def _record(task: str, plan: ReleasePlan, group: str, sens: Any, index: int = 0) -> dict[str, Any]:
    outs = calibrate(plan, group, sens, task, index)
    return {"task": task, "group": group, "rho": sum(o.rho for o in outs.values()),
            "xi": sum(o.xi for o in outs.values()),
            "noise": {k: {"sigma": o.sigma, "l2": o.l2} for k, o in outs.items()}}


def attach_dp_record(path: Any, record: dict[str, Any]) -> None:
    """Add the ``dp`` record (epsilon and delta spent, bounds, scales, noise) to a written model file."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from ehr_fed.models.persistence import _strict, seal_model_document

    path = Path(path)
    doc = json.loads(path.read_text())
    doc["dp"] = _strict(json.loads(json.dumps(record)))
    doc = seal_model_document(doc)  # the checksum covers the dp record too
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_dp_record(path: Any) -> dict[str, Any] | None:
    """The ``dp`` record of a model file (None: trained without differential privacy)."""
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text()).get("dp")
