"""Distributed differential privacy inside the secure sum: Skellam noise shares, calibration, accounting.

Mechanism
---------
A release is one secure sum (a Newton round, a boosting level, a statistics query). Every output of a
release is a vector of exact integers (the engine's integer fields). Each of the ``n`` participating sites
adds to its own contribution, *before* masking and encryption, an independent Skellam share of variance
``v / n`` per coordinate (``Pois(v / 2n) - Pois(v / 2n)``). A sum of independent Skellam variables is
Skellam, so the decrypted sum carries exactly ``Sk(v)`` noise: no party, the decrypting sites included,
ever sees a noise-free aggregate (Agarwal, Kairouz, Liu, NeurIPS 2021).

Accounting
----------
For integer vectors whose L1 / L2 sensitivities (one patient added or removed) are ``d1`` / ``d2``, Skellam
noise of variance ``v`` satisfies (Agarwal et al., Theorem 3.5, with ``v = 2 mu``)::

    eps(alpha) <= alpha d2^2 / (2 v) + ((2 alpha - 1) d2^2 + 6 d1) / (4 v^2)

i.e. ``(xi, rho)``-zCDP with ``rho = d2^2 / (2 v) + d2^2 / (2 v^2)`` and ``xi = max(0, (6 d1 - d2^2) /
(4 v^2))``. Releases are composed, and converted to ``(epsilon, delta)``, by Google's ``dp-accounting``
(:class:`dp_accounting.rdp.RdpAccountant` with :class:`dp_accounting.ZCDpEvent`), never by hand-written
formulas.

Calibration
-----------
A :class:`ReleasePlan` is the study's declared session: its ``(epsilon, delta)`` and how many releases of
each group it will make (``preprocess``, ``model``, ``stats``, ``evaluation``). The total zCDP ``rho``
that reaches ``epsilon`` at ``delta`` is split over the groups (:data:`DEFAULT_SPLIT`, overridable) and
evenly over a group's releases; within a release over its outputs by their weights. Each output's variance
is the smallest ``v`` with ``rho(v) + xi(v) <= rho_output``, so the whole session composes to at most
``epsilon``. The site computes this itself from the plan and the sensitivities its own clipping guarantees;
the coordinator runs the same computation only to size the integer fields.
"""

from __future__ import annotations

import contextvars
import math
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DEFAULT_SPLIT",
    "GROUPS",
    "DPConfig",
    "DPError",
    "NoisedOutput",
    "OutputSensitivity",
    "Release",
    "ReleasePlan",
    "active_release",
    "calibrate",
    "dp_task",
    "dp_task_spec",
    "epsilon_spent",
    "granted",
    "rho_for_epsilon",
    "sample_skellam",
    "skellam_variance",
    "skellam_zcdp",
]

#: release groups of a session, and the default share of the session's zCDP budget each one gets
GROUPS = ("preprocess", "model", "stats", "evaluation")
DEFAULT_SPLIT = {"preprocess": 0.1, "model": 0.7, "stats": 0.1, "evaluation": 0.1}
#: default delta of a study budget
DEFAULT_DELTA = 1e-6
#: half-width of the integer field room kept for noise, in standard deviations of the summed noise
NOISE_TAIL_SIGMAS = 40.0


class DPError(ValueError):
    """A differential-privacy setting or release plan is invalid."""


def _check_split(split: Mapping[str, float] | None) -> Mapping[str, float] | None:
    if split is None:
        return None
    bad = sorted(set(split) - set(GROUPS))
    if bad:
        raise ValueError(f"split names unknown groups {bad}; valid groups: {list(GROUPS)}")
    if any(not (v >= 0 and math.isfinite(v)) for v in split.values()) or not sum(split.values()) > 0:
        raise ValueError(f"split fractions must be finite, >= 0 and not all 0, got {dict(split)}")
    return dict(split)


class DPConfig(BaseModel):
    """``dp: {epsilon: ..., delta: ...}``: a study's privacy budget (site policy) or a session's target.

    Parameters
    ----------
    epsilon : float
        Total epsilon; ``inf`` (``.inf`` in YAML) switches differential privacy off.
    delta : float
        Total delta, in (0, 1).
    split : mapping of group -> fraction, optional
        Share of a session's budget per release group (normalised over the groups a session uses).
    events_per_patient : int
        A site keeps at most this many index events (rows) per patient in a private release, so that one
        patient's presence changes every sum by at most this many rows' contributions.
    weighted_events : int, optional
        For tasks whose private form weights its rows (the logistic regression's Newton rounds): a site keeps
        up to this many index events per patient (at least ``events_per_patient``) and weights each kept row
        ``min(1, events_per_patient / m)``, ``m`` the patient's kept rows, so that a patient's rows together
        weigh at most ``events_per_patient`` and the sensitivity stays that of ``events_per_patient`` rows.
        None: the model's default; other tasks ignore it (they keep ``events_per_patient`` rows).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0)
    delta: float = Field(DEFAULT_DELTA, gt=0, lt=1)
    split: dict[str, float] | None = None
    events_per_patient: int = Field(1, ge=1, le=100)
    weighted_events: int | None = Field(None, ge=1, le=100)

    _split = field_validator("split")(lambda cls, v: _check_split(v))

    @property
    def enabled(self) -> bool:
        return math.isfinite(self.epsilon)

    @classmethod
    def parse(cls, data: Any, *, source: str = "dp") -> DPConfig | None:
        """From a mapping (``None`` -> ``None``), a number (epsilon) or a DPConfig; every problem at once."""
        if data is None or isinstance(data, DPConfig):
            return data
        if isinstance(data, int | float) and not isinstance(data, bool):
            data = {"epsilon": float(data)}
        if not isinstance(data, Mapping):
            raise DPError(f"{source}: expected a mapping {{epsilon: ..., delta: ...}} or a number, got "
                          f"{type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = [f"{source}.{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                        for e in exc.errors()]
            raise DPError("invalid differential privacy settings:\n  " + "\n  ".join(problems)
                          + f"\nvalid keys: {', '.join(cls.model_fields)}") from None


class ReleasePlan(DPConfig):
    """A session's declared release plan: its ``(epsilon, delta)`` and the number of releases per group."""

    releases: dict[str, int]
    #: per group, the relative budget of each release (default: equal)
    weights: dict[str, list[float]] | None = None
    #: identifies one planned session (one fit, one evaluation); a site checks the whole plan at its first
    #: release
    plan_id: str = ""

    @field_validator("releases")
    @classmethod
    def _releases(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(GROUPS))
        if bad:
            raise ValueError(f"releases names unknown groups {bad}; valid groups: {list(GROUPS)}")
        if not v or any(int(n) < 1 for n in v.values()):
            raise ValueError(f"releases must give every group used a count >= 1, got {v}")
        return {k: int(n) for k, n in v.items()}

    def fractions(self) -> dict[str, float]:
        """Share of the session's zCDP budget per group of the plan (sums to 1)."""
        base = self.split or DEFAULT_SPLIT
        raw = {g: float(base.get(g, 0.0)) for g in self.releases}
        total = sum(raw.values())
        if not total > 0:
            raise DPError(f"the split {base} gives no budget to the plan's groups {sorted(self.releases)}")
        return {g: f / total for g, f in raw.items()}

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if v is not None and any(not w or any(not (x > 0 and math.isfinite(x)) for x in w) for w in v.values()):
            raise ValueError(f"weights must be non-empty lists of positive numbers, got {v}")
        return v

    def release_rho(self, group: str, index: int = 0) -> float:
        """zCDP budget of release ``index`` (0-based) of ``group``: its weight's share of the group's budget."""
        if group not in self.releases:
            raise DPError(f"the release plan declares no {group!r} releases (it declares "
                          f"{sorted(self.releases)}); the coordinator must declare every release in advance")
        count = self.releases[group]
        w = (self.weights or {}).get(group) or [1.0] * count
        if len(w) != count:
            raise DPError(f"the plan gives {len(w)} weights for its {count} {group!r} releases")
        if not 0 <= int(index) < count:
            raise DPError(f"release index {index} is outside the plan's {count} {group!r} releases")
        return rho_for_epsilon(self.epsilon, self.delta) * self.fractions()[group] * w[int(index)] / sum(w)

    def kept_events(self, row_weights: bool) -> int:
        """Rows per patient a site keeps for a task: ``events_per_patient``, or for a task whose private form
        weights its rows (:class:`DPTaskSpec` ``row_weights``) up to ``weighted_events`` if that is more."""
        k = self.events_per_patient
        return max(k, self.weighted_events or k) if row_weights else k

    def to_params(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# -------------------------------------------------------------------------------- mechanism
def skellam_zcdp(variance: float, l1: float, l2: float) -> tuple[float, float]:
    """``(rho, xi)`` of Skellam noise of ``variance`` on integers of sensitivities ``l1``, ``l2``."""
    v = float(variance)
    if not v > 0:
        raise DPError(f"Skellam variance must be positive, got {variance}")
    rho = l2 * l2 / (2.0 * v) + l2 * l2 / (2.0 * v * v)
    xi = max(0.0, (6.0 * l1 - l2 * l2) / (4.0 * v * v))
    return rho, xi


def skellam_variance(rho: float, l1: float, l2: float) -> float:
    """Smallest variance ``v`` with ``rho(v) + xi(v) <= rho`` (:func:`skellam_zcdp`)."""
    if not rho > 0:
        raise DPError(f"a release needs a positive zCDP budget, got rho={rho}")
    a = l2 * l2 / 2.0 + max(0.0, (6.0 * l1 - l2 * l2) / 4.0)  # coefficient of 1/v^2
    b = l2 * l2 / 2.0  # coefficient of 1/v
    # root of a u^2 + b u = rho in the form without cancellation (b^2 >> 4 a rho for large sensitivities)
    u = 2.0 * rho / (b + math.sqrt(b * b + 4.0 * a * rho))
    v = (1.0 / u) * (1.0 + 1e-9)  # a hair above the root, against rounding in the closed form
    for _ in range(64):
        if sum(skellam_zcdp(v, l1, l2)) <= rho:
            return v
        v *= 1.0 + 1e-6
    raise DPError(f"could not calibrate Skellam noise for rho={rho}, l1={l1}, l2={l2}")


def sample_skellam(variance: float, shape: int | Sequence[int], rng: np.random.Generator | None = None
                   ) -> np.ndarray:
    """Integer Skellam noise ``Pois(v / 2) - Pois(v / 2)`` (variance ``v``), int64 of ``shape``.

    Without ``rng`` a generator seeded from the operating system's secure source is used.
    """
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    lam = float(variance) / 2.0
    return rng.poisson(lam, shape).astype(np.int64) - rng.poisson(lam, shape).astype(np.int64)


# -------------------------------------------------------------------------------- accounting
def epsilon_spent(events: Sequence[tuple[float, float]], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of ``(rho, xi)``-zCDP events (dp-accounting's RDP accountant)."""
    from dp_accounting import ZCDpEvent
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant()
    for rho, xi in events:
        acc.compose(ZCDpEvent(rho=float(rho), xi=float(xi)))
    return float(acc.get_epsilon(float(delta))) if events else 0.0


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """Largest zCDP ``rho`` whose ``(epsilon, delta)`` conversion (dp-accounting) stays within ``epsilon``."""
    return _rho_for_epsilon(float(epsilon), float(delta))


_RHO_CACHE: dict[tuple[float, float], float] = {}


def _rho_for_epsilon(epsilon: float, delta: float) -> float:
    key = (epsilon, delta)
    if key not in _RHO_CACHE:
        # Bun & Steinke's conversion (eps = rho + 2 sqrt(rho log(1/delta))) is usually looser than the
        # accountant's, so its rho is usually a lower end of the bracket; at large epsilon (about 1000) the
        # accountant's finite grid of Renyi orders is the looser one, so the lower end is checked too
        log_d = math.log(1.0 / delta)
        lo = (math.sqrt(log_d + epsilon) - math.sqrt(log_d)) ** 2
        while epsilon_spent([(lo, 0.0)], delta) > epsilon:
            lo /= 2.0
        hi = 2.0 * lo
        while epsilon_spent([(hi, 0.0)], delta) < epsilon:
            lo, hi = hi, 2.0 * hi
        while hi - lo > 1e-7 * hi:
            mid = 0.5 * (lo + hi)
            if epsilon_spent([(mid, 0.0)], delta) <= epsilon:
                lo = mid
            else:
                hi = mid
        _RHO_CACHE[key] = lo
    return _RHO_CACHE[key]


# -------------------------------------------------------------------------------- releases
@dataclass(frozen=True)
class OutputSensitivity:
    """How much one patient can change one integer output of a release (after the site's clipping)."""

    name: str
    l1: float
    l2: float
    weight: float = 1.0


@dataclass(frozen=True)
class NoisedOutput:
    """The Skellam noise of one output's pooled sum."""

    name: str
    variance: float  # of the pooled sum, in integer units
    rho: float
    xi: float
    l1: float
    l2: float

    @property
    def sigma(self) -> float:
        return math.sqrt(self.variance)


@dataclass(frozen=True)
class Release:
    """One private release as a site computes it: its plan, group and the noise of every output."""

    task: str
    group: str
    plan: ReleasePlan
    outputs: dict[str, NoisedOutput]
    n_shares: int = 1
    table: Any = None  # the site's rows capped to plan.kept_events(...) per patient (set by the site)
    fn: Callable[..., Any] | None = field(default=None, compare=False)  # the private form, if not the task
    rng: np.random.Generator | None = field(default=None, compare=False)

    @property
    def rho(self) -> float:
        return sum(o.rho for o in self.outputs.values())

    @property
    def xi(self) -> float:
        return sum(o.xi for o in self.outputs.values())

    def noise(self, name: str, shape: int | Sequence[int]) -> np.ndarray:
        """This site's share of the noise of output ``name``: Skellam of variance ``v / n_shares``."""
        try:
            out = self.outputs[name]
        except KeyError:
            raise DPError(f"release {self.task!r} calibrated no noise for output {name!r} "
                          f"(it has {sorted(self.outputs)})") from None
        return sample_skellam(out.variance / max(1, self.n_shares), shape, self.rng)

    def record(self) -> dict[str, Any]:
        """What the released record says about this release (no data)."""
        return {
            "task": self.task, "group": self.group, "rho": self.rho, "xi": self.xi,
            "noise": {k: {"sigma": o.sigma, "l1": o.l1, "l2": o.l2} for k, o in self.outputs.items()},
        }


def calibrate(plan: ReleasePlan, group: str, sensitivities: Sequence[OutputSensitivity],
              task: str = "", index: int = 0) -> dict[str, NoisedOutput]:
    """Noise of every output of release ``index`` of ``group`` under ``plan`` (see the module docstring)."""
    rho = plan.release_rho(group, index)
    k = plan.events_per_patient
    total_w = sum(s.weight for s in sensitivities)
    if not sensitivities or not total_w > 0:
        raise DPError(f"release {task!r} declares no noised outputs")
    out = {}
    for s in sensitivities:
        l1, l2 = k * float(s.l1), k * float(s.l2)
        v = skellam_variance(rho * s.weight / total_w, l1, l2)
        r, x = skellam_zcdp(v, l1, l2)
        out[s.name] = NoisedOutput(s.name, v, r, x, l1, l2)
    return out


def noise_room(out: NoisedOutput) -> float:
    """Integer room a field must keep for the summed noise (the noise never reaches it in practice)."""
    return NOISE_TAIL_SIGMAS * out.sigma + 1.0


# -------------------------------------------------------------------------------- task registry
SensitivityFn = Callable[[dict], Sequence[OutputSensitivity]]


@dataclass(frozen=True)
class DPTaskSpec:
    """A task with a private form: its release group and its sensitivities (from the request's params)."""

    name: str
    group: str
    sensitivities: SensitivityFn
    fn: Callable[..., Any] | None = None  # (table, params, ctx, release) -> outputs; None: the task itself
    #: the private form weights each row min(1, events_per_patient / m) (m: the patient's rows in its table),
    #: so the site may keep up to the plan's weighted_events rows per patient (ReleasePlan.kept_events)
    row_weights: bool = False


_DP_TASKS: dict[str, DPTaskSpec] = {}


def dp_task(name: str, group: str, sensitivities: SensitivityFn, fn: Callable[..., Any] | None = None,
            row_weights: bool = False) -> None:
    """Declare that site task ``name`` has a private form.

    Either the task itself reads :func:`active_release` (``fn=None``), or ``fn(table, params, ctx, release)``
    computes the private outputs in its place. ``row_weights``: the private form weights every row of its
    table ``min(1, events_per_patient / m)`` (:func:`ehr_fed.privacy.budget.patient_weights`), so a patient's
    rows weigh at most ``events_per_patient`` together however many the site keeps.
    """
    if group not in GROUPS:
        raise ValueError(f"dp_task {name!r}: group {group!r} is not one of {GROUPS}")
    _DP_TASKS[name] = DPTaskSpec(name, group, sensitivities, fn, bool(row_weights))


#: modules that declare private forms of tasks defined elsewhere
PRIVATE_FORM_MODULES = ("ehr_fed.privacy.table_one",)


def dp_task_spec(name: str) -> DPTaskSpec | None:
    import importlib

    from ehr_fed.federation.tasks import registered_tasks

    registered_tasks()  # loads the built-in task modules, which declare their private forms
    for mod in PRIVATE_FORM_MODULES:
        importlib.import_module(mod)
    return _DP_TASKS.get(name)


_ACTIVE: contextvars.ContextVar[Release | None] = contextvars.ContextVar("ehr_fed_dp_release", default=None)


def active_release() -> Release | None:
    """The private release the running site task must noise (``None``: differential privacy is off)."""
    return _ACTIVE.get()


@contextmanager
def granted(release: Release | None) -> Iterator[Release | None]:
    """Run a site task under ``release`` (set by the site after its budget check)."""
    token = _ACTIVE.set(release)
    try:
        yield release
    finally:
        _ACTIVE.reset(token)


def field_width(bound: float) -> int:
    """Bits of a signed integer field holding values of absolute value up to ``bound``."""
    return int(max(2, math.ceil(math.log2(max(bound, 1.0) + 1.0)) + 1))


def requested_dp(model: Any, federation: Any, option_keys: Sequence[str]) -> tuple[DPConfig, dict[str, Any]] | None:
    """The budget a fit asks for and its model-specific options: the model's ``dp``, else the federation's
    (``privacy: dp:`` of the federation YAML); a number is an epsilon. None = off (absent or infinite)."""
    raw = model.dp if getattr(model, "dp", None) is not None else getattr(federation, "dp", None)
    if raw is None:
        raw = getattr(getattr(federation, "policy", None), "dp", None)
    if raw is None:
        return None
    if isinstance(raw, DPConfig):
        raw = raw.model_dump()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = {"epsilon": float(raw)}
    if not isinstance(raw, dict):
        raise ValueError(f"dp must be None, a number (epsilon) or a mapping {{epsilon, delta, ...}}, got {raw!r}")
    opts = {k: raw[k] for k in option_keys if k in raw}
    cfg = DPConfig.parse({k: v for k, v in raw.items() if k not in option_keys})
    if not cfg.enabled:
        return None
    return cfg, opts


def plan_from(dp: Any, releases: Mapping[str, int]) -> ReleasePlan | None:
    """The session plan for a ``dp`` setting (mapping, number, DPConfig or None) and release counts."""
    cfg = DPConfig.parse(dp)
    if cfg is None or not cfg.enabled:
        return None
    return ReleasePlan(**cfg.model_dump(), releases=dict(releases))


def spent_record(plan: ReleasePlan, releases: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The ``dp`` record of a model or report: the budget, what the releases spent, and how."""
    events = [(r["rho"], r["xi"]) for r in releases]
    return {
        "epsilon": epsilon_spent(events, plan.delta), "delta": plan.delta,
        "epsilon_planned": plan.epsilon, "events_per_patient": plan.events_per_patient,
        **({} if plan.weighted_events is None else {"weighted_events": plan.weighted_events}),
        "split": plan.fractions(), "releases": len(releases),
        "mechanism": "distributed Skellam noise added by every site inside the secure sum",
        "accountant": "dp-accounting RDP accountant over (xi, rho)-zCDP events",
        "protects": "the presence of one patient (up to events_per_patient index events) in a site's table",
        **extra,
    }
