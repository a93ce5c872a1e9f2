"""A site's privacy budget per study: a persistent ledger of private releases, and the check before each one.

The ledger is a JSON file next to the site's audit log (``audit.jsonl`` -> ``audit.dp_budget.json``),
rewritten atomically (temporary file + ``os.replace``) under a lock file, so it survives restarts and is
shared by the processes of one site. Each study holds its charges, one per release: session, task, round
and the release's ``(rho, xi)`` zCDP cost. The spent epsilon at the budget's delta is the composition of
all of them (dp-accounting, :func:`ehr_fed.privacy.dp.epsilon_spent`).

:func:`open_release` is what a site runs before computing a task: it decides whether the request is a
private release, derives the noise from the declared plan and the task's sensitivities, and refuses
(:class:`~ehr_fed.privacy.DisclosureError`, rule ``dp_budget``) a release whose cost would exceed the
remaining budget, saying what remains. :func:`charge_release` records the release once computed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.privacy.dp import (
    DPConfig,
    DPError,
    Release,
    ReleasePlan,
    calibrate,
    dp_task_spec,
    epsilon_spent,
    rho_for_epsilon,
)
from ehr_fed.privacy.errors import DisclosureError

__all__ = ["BudgetLedger", "ledger_path", "open_release", "charge_release", "cap_events"]

_LOCK = threading.Lock()


def ledger_path(audit_path: str | Path | None) -> Path | None:
    """Where a site keeps its budget ledger: beside its audit log (``None`` for an in-memory log)."""
    if audit_path is None:
        return None
    p = Path(audit_path)
    return p.with_name(p.stem + ".dp_budget.json")


class BudgetLedger:
    """Charges of private releases per study (in memory when ``path`` is None)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, Any] = {"studies": {}}

    # -- storage ----------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"studies": {}}
        except json.JSONDecodeError as exc:
            raise DisclosureError(f"the privacy budget ledger {self.path} is not valid JSON ({exc}); the site "
                                  "refuses private releases until it is restored", rule="dp_budget") from None
        return data if isinstance(data, dict) and "studies" in data else {"studies": {}}

    def _write(self, data: dict[str, Any]) -> None:
        if self.path is None:
            self._memory = data
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self):
        with _LOCK:
            if self.path is None:
                yield
                return
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lk, fcntl.LOCK_UN)

    # -- queries ----------------------------------------------------------------------------------
    def charges(self, study: str) -> list[dict[str, Any]]:
        return list(self._read()["studies"].get(study or "", {}).get("charges", []))

    def spent(self, study: str, delta: float) -> float:
        """Epsilon spent so far on ``study`` at ``delta``."""
        return epsilon_spent([(c["rho"], c["xi"]) for c in self.charges(study)], delta)

    def check(self, study: str, release: Release, budget: DPConfig, site_id: str) -> float:
        """Raise DisclosureError when ``release`` would exceed ``budget``; returns the epsilon after it.

        The first release of a plan (``plan_id``) is checked against the whole declared plan (its epsilon as one
        zCDP cost), so a session that cannot finish is refused at its start, not half-way; every release
        is also checked on its own cost.
        """
        charges = self.charges(study)
        events = [(c["rho"], c["xi"]) for c in charges]
        before = epsilon_spent(events, budget.delta)
        after = epsilon_spent([*events, (release.rho, release.xi)], budget.delta)
        what = "this release"
        if not any(c.get("plan_id") == release.plan.plan_id for c in charges):
            plan = release.plan
            planned = epsilon_spent([*events, (rho_for_epsilon(plan.epsilon, plan.delta), 0.0)], budget.delta)
            if planned > after:
                after, what = planned, f"this session's release plan (epsilon {plan.epsilon:g})"
        if after > budget.epsilon * (1 + 1e-9):
            raise DisclosureError(
                f"site {site_id} refuses {release.task!r}: {what} would bring study {study or '-'!r} to "
                f"epsilon {after:.4g} (delta {budget.delta:g}), over its budget epsilon={budget.epsilon:g}; "
                f"remaining budget: epsilon {max(0.0, budget.epsilon - before):.4g} of {budget.epsilon:g} "
                f"({len(events)} release(s) charged so far). Plan a session with a smaller epsilon, or ask "
                "the site to raise its dp budget",
                rule="dp_budget", site_id=site_id,
            )
        return after

    def charge(self, study: str, release: Release, *, session: str, round: int, budget: DPConfig | None
               ) -> float:
        """Record ``release`` (checked again under the lock); returns the study's epsilon after it."""
        with self._locked():
            data = self._read()
            entry = data["studies"].setdefault(study or "", {"charges": []})
            delta = budget.delta if budget is not None else release.plan.delta
            if budget is not None:
                entry.update(epsilon_budget=budget.epsilon, delta=budget.delta)
            events = [(c["rho"], c["xi"]) for c in entry["charges"]]
            after = epsilon_spent([*events, (release.rho, release.xi)], delta)
            if budget is not None and after > budget.epsilon * (1 + 1e-9):
                raise DisclosureError(
                    f"privacy budget of study {study or '-'!r} exhausted by a concurrent release (epsilon "
                    f"{after:.4g} > {budget.epsilon:g}); nothing was released", rule="dp_budget")
            entry["charges"].append({
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "session": session,
                "task": release.task, "round": int(round), "group": release.group,
                "rho": release.rho, "xi": release.xi, "session_epsilon": release.plan.epsilon,
                "plan_id": release.plan.plan_id,
            })
            entry["epsilon_spent"] = after
            self._write(data)
        return after


# ------------------------------------------------------------------------------------- site hooks
def _ledger(site: Any) -> BudgetLedger:
    led = getattr(site, "_dp_ledger", None)
    if led is None:
        led = BudgetLedger(ledger_path(getattr(site.audit, "path", None)))
        site._dp_ledger = led
    return led


def cap_events(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """At most ``k`` rows per patient (``person_key``); order kept.

    Which rows stay is decided by a hash of each row's ``person_key`` and ``index_time``: the same rows in
    every release (the noise is sized for them), and a sample of a patient's events that is neither the
    earliest nor the latest, so the kept rows look like all index events (the first admissions alone have
    systematically fewer prior visits).
    """
    if "person_key" not in table.columns or len(table) == 0:
        return table
    when = table["index_time"].astype(str) if "index_time" in table.columns else pd.Series(range(len(table)))
    keys = table["person_key"].astype(str).to_numpy() + "|" + when.to_numpy().astype(str)
    order = pd.util.hash_array(keys.astype(object), hash_key="ehr-fed-dp-cap12")
    keyed = pd.DataFrame({"p": table["person_key"].to_numpy(), "o": order})
    rank = keyed.groupby("p", sort=False)["o"].rank(method="first")
    keep = (rank <= k).to_numpy()
    return table if keep.all() else table[keep]


def patient_weights(table: pd.DataFrame, k: int) -> np.ndarray:
    """Row weights ``min(1, k / m)``, ``m`` the number of rows of the row's patient (``person_key``) in ``table``.

    A patient's rows weigh ``min(m, k) <= k`` together, each at most 1, so any sum of per-row terms bounded by
    ``B`` changes by at most ``k B`` when a patient is added or removed: the bound of ``k`` unweighted rows,
    whatever ``m``. Without a ``person_key`` column every row counts as its own patient (weight 1).
    """
    if "person_key" not in table.columns or len(table) == 0:
        return np.ones(len(table))
    keys = table["person_key"]
    m = keys.groupby(keys, sort=False, dropna=False).transform("size").to_numpy(dtype=float)
    return np.minimum(1.0, float(k) / m)


_CAPPED: dict[tuple[int, int, int], tuple[Any, pd.DataFrame]] = {}


def _capped(table: pd.DataFrame, k: int) -> pd.DataFrame:
    key = (id(table), len(table), k)
    hit = _CAPPED.get(key)
    if hit is not None and hit[0] is table:
        return hit[1]
    out = cap_events(table, k)
    if len(_CAPPED) > 16:
        _CAPPED.clear()
    _CAPPED[key] = (table, out)
    return out


def _n_shares(msg: Any) -> int:
    """How many sites add a noise share: the declared participants, else the layout's number of terms."""
    parts = msg.payload.get("participants")
    if isinstance(parts, list | tuple) and parts:
        return len(parts)
    counts = []
    for spec in (msg.payload.get("layout") or {}).values():
        t = spec.get("max_terms") if isinstance(spec, dict) else (spec[1] if len(spec) > 1 else None)
        if t is not None:
            counts.append(int(t))
    return max(1, min(counts)) if counts else 1


def open_release(site: Any, task: Any, msg: Any, params: dict) -> Release | None:
    """The private release a request asks of ``site`` (or ``None``), after checking the site's budget.

    Runs before the task computes anything. Refuses (DisclosureError) when the site's policy requires
    differential privacy and the request has none, when the task has no private form, or when the
    release's cost exceeds the remaining budget.
    """
    budget = getattr(site.policy, "dp", None)
    budget = budget if budget is not None and budget.enabled else None
    spec = dp_task_spec(task.name)
    requested = params.get("dp")
    if requested is None:
        if budget is not None and task.kind != "other":
            hint = "" if spec is not None else " (this task has no differentially private form)"
            raise DisclosureError(
                f"site {site.site_id} requires differential privacy for study {msg.study or '-'!r} (its policy "
                f"sets dp: epsilon={budget.epsilon:g}, delta={budget.delta:g}) but {task.name!r} was requested "
                f"without a release plan{hint}; train or query with --epsilon (or dp: in the federation)",
                rule="dp_required", site_id=site.site_id)
        return None
    if spec is None:
        raise DisclosureError(f"site {site.site_id}: task {task.name!r} has no differentially private form; "
                              "request it without dp", rule="dp_unsupported", site_id=site.site_id)
    if msg.action != "secure_sum":
        raise DisclosureError(f"site {site.site_id}: a private release of {task.name!r} must be a secure sum "
                              f"(noise shares only hide inside one), not {msg.action!r}", rule="dp_required",
                              site_id=site.site_id)
    try:
        plan = ReleasePlan.model_validate(requested)
        if budget is not None and plan.events_per_patient < budget.events_per_patient:
            plan = plan.model_copy(update={"events_per_patient": budget.events_per_patient})
        outputs = calibrate(plan, spec.group, spec.sensitivities(params), task.name,
                            int(params.get("dp_index", 0)))
    except (DPError, ValueError, KeyError, TypeError) as exc:
        raise DisclosureError(f"site {site.site_id}: invalid release plan for {task.name!r}: {exc}",
                              rule="dp_plan", site_id=site.site_id) from None
    release = Release(task=task.name, group=spec.group, plan=plan, outputs=outputs, n_shares=_n_shares(msg),
                      table=_capped(site.table, plan.kept_events(spec.row_weights)), fn=spec.fn)
    if budget is not None:
        _ledger(site).check(msg.study, release, budget, site.site_id)
    return release


def charge_release(site: Any, release: Release, msg: Any) -> float:
    """Charge a computed release to the site's ledger and write it to the audit log."""
    budget = getattr(site.policy, "dp", None)
    budget = budget if budget is not None and budget.enabled else None
    after = _ledger(site).charge(msg.study, release, session=msg.session, round=msg.round, budget=budget)
    delta = budget.delta if budget is not None else release.plan.delta
    site.audit.record(site_id=site.site_id, task=release.task, action="dp_charge", round=msg.round, kind="dp",
                      payload={}, nbytes=0, dp={"rho": release.rho, "xi": release.xi, "group": release.group,
                                                 "epsilon_spent": after, "delta": delta,
                                                 "epsilon_budget": budget.epsilon if budget else None,
                                                 "noise_sigma": {k: o.sigma for k, o in release.outputs.items()}})
    return after
