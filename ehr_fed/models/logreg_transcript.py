"""Federated logistic regression as a function of its signed transcript: the coordinator and the sites
run this same code.

A fit releases, in this order, ``models.row_count``, ``models.preprocess_sums`` and one ``logreg.newton``
sum per round, and the decrypting site signs every release (:mod:`ehr_fed.federation.releases`). Each Newton
request (:func:`newton_params`) carries, beside the design state ``preprocess`` and the coefficients ``beta``:

``setup``        the parameters of the two setup releases (features, label; DP clipping for a private fit);
``rule``         the estimator's settings that decide every step (:func:`rule_settings`);
``transcript``   the signed records of the setup releases and of every earlier Newton round, in order;
``beta_path``    the coefficients every earlier round was computed at.

Before it computes anything, a site (:func:`check_newton_request`)

1. verifies every record: signed by a member of its key ceremony (the key the site pinned, never one the
   request carries), for this study and session, of the expected task, in round order, over the request's
   participant set;
2. checks the chain: each record's parameter digest must be the digest of the request that produced it,
   rebuilt here from the same setup, rule and transcript prefix, so a dropped, reordered, inserted or
   foreign record, or other settings, break it;
3. replays the fit: the design terms and centre / scale from the released preprocessing sums
   (:func:`derive_design`, the function the coordinator uses), beta_0 from the released counts, then every
   next beta from the released gradient, information and log-likelihood by the estimator's rule
   (:class:`ExactNewton`: Newton steps with halving; :class:`PrivateNewton`: the fixed private plan), and
   refuses a request whose design state or coefficients differ, or that comes after the rule has stopped.

Each step is replayed from the coefficients the round was actually computed at (``beta_path``), so
rounding never accumulates. Floating point compares with a relative tolerance of :data:`RTOL` (1e-9 of
the largest entry): sites on other machines may use another BLAS, whose sums round differently in the last
bits; a change that could steer an aggregate is many orders of magnitude larger.

Refusals are :class:`~ehr_fed.privacy.DisclosureError` with ``rule="transcript"`` and a reason code
``transcript_<reason>`` (:data:`REASONS`); they name the round and what differs, never a value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import verify_release
from ehr_fed.models.base import MISSING_STRATEGIES, FeaturePreprocessor, design_state
from ehr_fed.models.logreg_newton import (
    newton_step,
    penalized_objective,
    penalty_diagonal,
    separation_evidence,
)
from ehr_fed.privacy import DisclosureError

ROW_TASK, PREP_TASK, NEWTON_TASK = "models.row_count", "models.preprocess_sums", "logreg.newton"
#: relative tolerance of a recomputed coefficient or design value (see the module docstring)
RTOL = 1e-9
#: largest number of step halvings in one Newton round before giving up
MAX_HALVINGS = 30
#: why a site refuses a Newton request (the reason code is ``transcript_<reason>``)
REASONS = {
    "malformed": "the request's transcript fields are missing or malformed",
    "signature": "a release record is not signed by a member of the federation, or was altered",
    "session": "a release record is from another study or session",
    "task": "a release record is of another task than the protocol releases at its place",
    "order": "the release records are not in round order, or not before this request",
    "participants": "a release record was computed over another participant set",
    "chain": "a release record was not produced by the request the transcript implies (a round is missing, "
             "reordered, inserted, or the settings differ)",
    "rule": "the estimator's settings are invalid",
    "design": "the design (terms, imputation means, centre, scale) does not follow from the released sums",
    "beta": "the coefficients do not follow from the released aggregates",
    "finished": "the fit has ended (converged, separated, or its rounds are used up): no further round follows",
}
_BASE_KEYS = ("preprocess", "fit_intercept", "label", "rule", "setup", "dp", "dp_clip")
_PRIVATE_KEYS = ("rounds", "ridge_factor", "hessian_window")


class TranscriptError(DisclosureError):
    """A Newton request that does not follow from the signed transcript."""

    def __init__(self, reason: str, detail: str, site_id: str | None = None):
        who = f"site {site_id} refuses" if site_id else "refused:"
        super().__init__(f"{who} 'logreg.newton': {REASONS[reason]}: {detail} (rule transcript)",
                         rule="transcript", site_id=site_id, code=f"transcript_{reason}")
        self.reason = reason


# ------------------------------------------------------------------------------------------ requests
def rule_settings(model: Any, strategy: str, private: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of ``model`` (a FederatedLogisticRegression) that decide each Newton step.

    ``private``: the ``dp`` options of a private fit (rounds, ridge_factor, hessian_window).
    """
    rule = {"penalty": str(model.penalty), "C": float(model.C), "missing_values": str(strategy)}
    if private is None:
        rule.update(max_iter=int(model.max_iter), tol=float(model.tol))
    else:
        from ehr_fed.models.logreg_private import DEFAULT_RIDGE_FACTOR, DEFAULT_ROUNDS

        rule.update(rounds=int(private.get("rounds", DEFAULT_ROUNDS)),
                    ridge_factor=float(private.get("ridge_factor", DEFAULT_RIDGE_FACTOR)),
                    hessian_window=int(private.get("hessian_window", 1)))
    return rule


def newton_params(base: Mapping[str, Any], beta: Any, path: list, transcript: list) -> dict[str, Any]:
    """The parameters of the Newton round computed at ``beta`` after the rounds at ``path``.

    ``base`` holds the keys of every round (:data:`_BASE_KEYS`: the design state, fit_intercept, label, rule,
    setup and, for a private fit, dp and dp_clip); ``transcript`` the signed records released so far. The
    coordinator builds its requests here and a site rebuilds the earlier ones here (same keys, same order,
    so the same digest).
    """
    out = {k: base[k] for k in _BASE_KEYS if k in base}
    out["beta"] = [float(v) for v in beta]
    out["beta_path"] = [[float(v) for v in b] for b in path]
    if "dp" in base:
        out["dp_index"] = len(path)
    out["transcript"] = list(transcript)
    return out


# ------------------------------------------------------------------------------------------ the design
@dataclass
class Design:
    """What the setup releases fix: the preprocessing, the pooled counts and the model's terms."""

    prep: FeaturePreprocessor
    sums: dict[str, Any]
    names: list[str]
    n_total: float
    n_pos: float
    terms: list[str]


def derive_design(rows: Mapping[str, Any], sums: Mapping[str, Any], setup: Mapping[str, Any],
                  rule: Mapping[str, Any], fit_intercept: bool) -> Design:
    """The design fixed by the released row count ``rows`` and preprocessing sums ``sums``.

    For a private fit (``"dp"`` in the preprocessing parameters) the noisy integer sums are decoded first
    (:func:`ehr_fed.models.logreg_dp.decode_preprocess`), and the pooled counts are the decoded ones.
    """
    prep_params = setup[PREP_TASK]
    names = [str(n) for n in prep_params["features"]]
    if "dp" in prep_params:
        from ehr_fed.models.logreg_dp import _preprocess_sens, decode_preprocess
        from ehr_fed.privacy.dp import ReleasePlan, calibrate

        plan = ReleasePlan.model_validate(prep_params["dp"])
        sums = decode_preprocess(dict(sums), prep_params, calibrate(plan, "preprocess",
                                                                   _preprocess_sens(prep_params)))
        n_total = float(sums["n"][0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = FeaturePreprocessor.from_sums(sums, names, missing_values=str(rule["missing_values"]),
                                                 center=bool(fit_intercept))
    else:
        n_total = float(np.asarray(rows["n"], dtype=float).ravel()[0])
        prep = FeaturePreprocessor.from_sums(sums, names, missing_values=str(rule["missing_values"]),
                                             center=bool(fit_intercept))
    n_pos = float(np.asarray(sums["n_pos"], dtype=float).ravel()[0])
    terms = (["intercept"] if fit_intercept else []) + list(prep.terms_)
    return Design(prep=prep, sums=dict(sums), names=names, n_total=n_total, n_pos=n_pos, terms=terms)


def initial_beta(design: Design, fit_intercept: bool) -> np.ndarray:
    """beta_0: zeros, and the log-odds of the pooled prevalence for the intercept."""
    beta = np.zeros(len(design.terms))
    if fit_intercept:
        beta[0] = math.log(design.n_pos / (design.n_total - design.n_pos))
    return beta


# ------------------------------------------------------------------------------------------ the rules
class ExactNewton:
    """The exact fit's rule: Newton-Raphson with step halving, stopping at ``tol``, ``max_iter`` or separation.

    ``update(stats, beta)`` takes the released statistics of the round computed at ``beta`` and sets
    :attr:`beta` to the coefficients of the next round.
    """

    def __init__(self, design: Design, rule: Mapping[str, Any], fit_intercept: bool):
        self.design, self.fit_intercept = design, bool(fit_intercept)
        self.penalty, self.tol, self.max_iter = rule["penalty"], float(rule["tol"]), int(rule["max_iter"])
        self.lam = penalty_diagonal(design.prep.scale_, float(rule["C"]) if self.penalty == "l2" else None,
                                    self.fit_intercept)
        self.beta = initial_beta(design, fit_intercept)
        self.rounds, self.halvings, self.converged = 0, 0, False
        self.prev_beta: np.ndarray | None = None
        self.prev_obj, self.step, self.info, self.loglik = -np.inf, None, None, float("nan")
        self.separation: tuple[list[str], str] | None = None

    @property
    def finished(self) -> bool:
        return self.converged or self.separation is not None or self.rounds >= self.max_iter

    def update(self, stats: Mapping[str, Any], beta: np.ndarray) -> dict[str, Any]:
        beta = np.asarray(beta, dtype=float)
        self.rounds += 1
        loglik = float(np.asarray(stats["loglik"], dtype=float).ravel()[0])
        obj = penalized_objective(loglik, beta, self.lam)
        entry: dict[str, Any] = {"round": self.rounds, "loglik": loglik, "objective": obj}
        # the full step overshot: go back half way (damped Newton). The comparison is of released values and
        # of the coefficients as sent, so every site takes the same branch as the coordinator.
        if (self.prev_beta is not None and obj < self.prev_obj - 1e-12 * abs(self.prev_obj)
                and self.halvings < MAX_HALVINGS):
            self.halvings += 1
            self.step = self.step / 2.0
            self.beta = self.prev_beta + self.step
            entry.update(step=float(np.abs(self.step).max()), halving=self.halvings, converged=False)
            return entry
        self.halvings = 0
        self.step, self.info = newton_step(stats["gradient"], stats["hessian"], beta, self.lam, self.design.terms)
        self.prev_beta, self.prev_obj, self.loglik = beta, obj, loglik
        self.beta = beta + self.step
        size = float(np.abs(self.step).max())
        self.converged = size < self.tol
        entry.update(step=size, converged=self.converged)
        if not self.converged and self.penalty == "none":
            self.separation = separation_evidence(self.beta, self.design.terms, loglik, self.design.n_total,
                                                  self.fit_intercept)
        return entry


class PrivateNewton:
    """The private fit's rule: a fixed number of Newton steps on the decoded noisy sums
    (:mod:`ehr_fed.models.logreg_private`): a ridge scaled to the information matrix's noise from round 1,
    the mean of the last ``hessian_window`` information matrices, floored eigenvalues."""

    def __init__(self, design: Design, rule: Mapping[str, Any], fit_intercept: bool, plan: Mapping[str, Any],
                 clip: Mapping[str, Any]):
        from ehr_fed.privacy.dp import ReleasePlan

        self.design, self.fit_intercept = design, bool(fit_intercept)
        self.plan, self.clip = ReleasePlan.model_validate(plan), dict(clip)
        self.n_rounds, self.window = int(rule["rounds"]), int(rule["hessian_window"])
        self.ridge_factor = float(rule["ridge_factor"])
        self.lam = penalty_diagonal(design.prep.scale_, float(rule["C"]) if rule["penalty"] == "l2" else None,
                                    self.fit_intercept)
        self.beta = initial_beta(design, fit_intercept)
        self.rounds, self.hessians, self.sigmas, self.iterates = 0, [], [], []
        self.info, self.loglik = None, float("nan")

    @property
    def finished(self) -> bool:
        return self.rounds >= self.n_rounds

    def noise(self, beta: Any) -> dict:
        """The noise of this round's outputs (the calibration every site applies)."""
        from ehr_fed.models.logreg_dp import _newton_sens
        from ehr_fed.privacy.dp import calibrate

        return calibrate(self.plan, "model", _newton_sens({"dp_clip": self.clip, "beta": list(beta),
                                                           "dp_index": self.rounds}), NEWTON_TASK, self.rounds)

    def update(self, stats: Mapping[str, Any], beta: np.ndarray) -> dict[str, Any]:
        from ehr_fed.models.logreg_dp import decode_newton, smoothed_information

        beta = np.asarray(beta, dtype=float)
        d = beta.size
        noise = self.noise(beta)
        if self.rounds == 0:  # a ridge in the standardized space, scaled to the information matrix's noise
            if "hessian" not in noise:
                raise ValueError("the first private Newton round must release the information matrix")
            tau = self.ridge_factor * noise["hessian"].sigma / self.clip["scale_h"] * math.sqrt(d)
            self.lam = self.lam + np.where(np.arange(d) < (1 if self.fit_intercept else 0), 0.0, tau)
        g, H, self.loglik = decode_newton(stats, self.clip, d)
        if "hessian" in noise:  # the rule, not the record, says whether this round released the information
            if H is None:
                raise ValueError(f"private Newton round {self.rounds} released no information matrix")
            self.hessians.append(H)
            self.sigmas.append(noise["hessian"].sigma)
        info_upper = smoothed_information(self.hessians[-self.window:], self.clip, self.sigmas[-self.window:])
        step, self.info = newton_step(g, info_upper, beta, self.lam, self.design.terms)
        self.beta = beta + step
        self.iterates.append(self.beta)
        self.rounds += 1
        return {"round": self.rounds, "loglik": self.loglik, "objective": self.loglik,
                "step": float(np.abs(step).max()), "converged": False, "private": True}


def make_rule(design: Design, params: Mapping[str, Any]) -> ExactNewton | PrivateNewton:
    """The rule a Newton request's ``rule`` (and, when private, ``dp`` / ``dp_clip``) declares."""
    if "dp" in params:
        return PrivateNewton(design, params["rule"], params["fit_intercept"], params["dp"], params["dp_clip"])
    return ExactNewton(design, params["rule"], params["fit_intercept"])


# ------------------------------------------------------------------------------------------ the site
def check_newton_request(params: Mapping[str, Any], ctx: Any) -> None:
    """Refuse (:class:`TranscriptError`) a Newton request that does not follow from its signed transcript.

    ``ctx`` is the task's :class:`~ehr_fed.federation.tasks.SiteContext` (site id, study, session, the
    pinned ``peers`` and the request's ``participants``). See the module docstring for what is checked.
    """
    sid = ctx.site_id
    transcript, path, setup = _fields(params, sid)
    values = _verified(transcript, ctx)
    if transcript[0]["params_digest"] != params_digest(setup[ROW_TASK]) or \
            transcript[1]["params_digest"] != params_digest(setup[PREP_TASK]):
        raise TranscriptError("chain", "the setup releases were computed with other parameters than the "
                                       "request's setup", sid)
    try:
        design = derive_design(values[0], values[1], setup, params["rule"], bool(params["fit_intercept"]))
        rule = make_rule(design, params)
    except (KeyError, TypeError, ValueError) as exc:
        raise TranscriptError("design", f"the released sums give no design ({type(exc).__name__})", sid) from None
    _check_design(params["preprocess"], design_state(design.prep), sid)
    base = {k: params[k] for k in _BASE_KEYS if k in params}
    sent = [*path, params["beta"]]
    for j, record in enumerate(transcript[2:], start=1):  # the chain first: every record from its request
        if record["params_digest"] != params_digest(newton_params(base, sent[j - 1], path[:j - 1],
                                                                  transcript[:j + 1])):
            raise TranscriptError("chain", f"the record of Newton round {j} is not the release of the request "
                                           "this transcript implies", sid)
    _check_beta(rule.beta, sent[0], 1, sid)
    for j in range(1, len(transcript) - 1):  # then the replay: each step from the released aggregates
        if rule.finished:
            raise TranscriptError("finished", f"the transcript continues after round {j - 1}", sid)
        try:
            rule.update(values[j + 1], np.asarray(sent[j - 1], dtype=float))
        except (KeyError, ValueError) as exc:  # a singular information matrix: the coordinator stopped there
            raise TranscriptError("finished", f"Newton round {j} has no step ({type(exc).__name__})", sid) from None
        _check_beta(rule.beta, sent[j], j + 1, sid)
    if rule.finished:
        raise TranscriptError("finished", f"no round follows round {len(path)}", sid)


def _fields(params: Mapping[str, Any], sid: str) -> tuple[list, list, dict]:
    transcript, path, setup = params.get("transcript"), params.get("beta_path"), params.get("setup")
    ok = (isinstance(transcript, list) and len(transcript) >= 2 and all(isinstance(r, dict) for r in transcript)
          and isinstance(path, list) and len(path) == len(transcript) - 2 and isinstance(setup, dict)
          and isinstance(setup.get(ROW_TASK), dict) and isinstance(setup.get(PREP_TASK), dict)
          and isinstance(params.get("rule"), dict) and isinstance(params.get("preprocess"), dict)
          and "fit_intercept" in params)
    if not ok:
        raise TranscriptError("malformed", "a Newton request carries its setup, rule, transcript (the two setup "
                                           "releases and one record per earlier round) and beta_path", sid)
    d = len(params.get("beta") or [])
    if not all(isinstance(b, list) and len(b) == d for b in path):
        raise TranscriptError("malformed", "every entry of beta_path has as many coefficients as beta", sid)
    if "dp" in params and params.get("dp_index") != len(path):
        raise TranscriptError("malformed", "a private round's dp_index is the number of earlier rounds", sid)
    if setup[PREP_TASK].get("label", "label") != params.get("label", "label"):
        raise TranscriptError("malformed", "the setup and the request name different labels", sid)
    _check_rule(params, sid)
    return transcript, path, setup


def _check_rule(params: Mapping[str, Any], sid: str) -> None:
    rule, problems = params["rule"], []
    try:
        if rule["penalty"] not in ("none", "l2"):
            problems.append("penalty")
        if not (isinstance(rule["C"], int | float) and math.isfinite(rule["C"]) and rule["C"] > 0):
            problems.append("C")
        if rule["missing_values"] not in MISSING_STRATEGIES:
            problems.append("missing_values")
        if "dp" in params:
            if not all(isinstance(rule[k], int | float) for k in _PRIVATE_KEYS) or rule["rounds"] < 1 \
                    or rule["hessian_window"] < 1 or rule["ridge_factor"] < 0:
                problems.append("rounds / hessian_window / ridge_factor")
            if params["setup"][ROW_TASK].get("dp") != params["dp"] or \
                    params["setup"][PREP_TASK].get("dp") != params["dp"]:
                problems.append("one release plan for the whole fit")
        else:
            if not (isinstance(rule["max_iter"], int) and rule["max_iter"] >= 1):
                problems.append("max_iter")
            if not (isinstance(rule["tol"], int | float) and rule["tol"] > 0):
                problems.append("tol")
            if "dp" in params["setup"][ROW_TASK] or "dp" in params["setup"][PREP_TASK]:
                problems.append("a private setup for an exact fit")
    except KeyError as exc:
        problems.append(f"{exc.args[0]} missing")
    if problems:
        raise TranscriptError("rule", ", ".join(problems), sid)


def _verified(transcript: list[dict], ctx: Any) -> list[dict[str, np.ndarray]]:
    """The values of every record, after checking signer, study, session, task, order and participants."""
    sid = ctx.site_id
    want_parts = sorted(str(p) for p in (ctx.participants or ()))
    values, last = [], None
    for i, record in enumerate(transcript):
        task = ROW_TASK if i == 0 else PREP_TASK if i == 1 else NEWTON_TASK
        if record.get("study") != ctx.study or record.get("session") != ctx.session:
            raise TranscriptError("session", f"record {i} is not from this study's session", sid)
        if record.get("task") != task:
            raise TranscriptError("task", f"record {i} should be a release of {task!r}", sid)
        try:
            values.append(verify_release(ctx.peers, record, study=ctx.study, session=ctx.session, task=task,
                                         decryptors=getattr(ctx.state, "decryptors", None)))
        except ProtocolError:
            raise TranscriptError("signature", f"record {i} (of {task!r}) does not verify against the pinned "
                                               "keys", sid) from None
        rnd = int(record["round"])
        if (last is not None and rnd <= last) or rnd >= int(ctx.round):
            raise TranscriptError("order", f"record {i} is of round {rnd}, after round {last} and before this "
                                           f"request's round {ctx.round}", sid)
        last = rnd
        if not want_parts or sorted(record["participants"]) != want_parts:
            raise TranscriptError("participants", f"record {i} was released over another participant set than "
                                                  "this request's", sid)
    return values


def _close(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    # relative to the largest entry: BLAS on another machine may round the last bits of sums differently
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), 1.0)
    return bool(np.abs(a - b).max(initial=0.0) <= RTOL * scale)


def _check_beta(derived: np.ndarray, sent: Any, rnd: int, sid: str) -> None:
    if not _close(derived, sent):
        raise TranscriptError("beta", f"the coefficients of Newton round {rnd} are not the step the rule takes "
                                      "from the released aggregates", sid)


def _check_design(sent: Mapping[str, Any], derived: Mapping[str, Any], sid: str) -> None:
    if set(sent) != set(derived):
        raise TranscriptError("design", f"the design state has the fields {sorted(sent)}, expected "
                                        f"{sorted(derived)}", sid)
    for key, want in derived.items():
        got = sent[key]
        if key in ("mean", "center", "scale"):
            same = isinstance(got, list) and _close(got, want)
        else:
            same = got == want
        if not same:
            raise TranscriptError("design", f"its {key!r} differs from the one derived from the released "
                                            "preprocessing sums", sid)
