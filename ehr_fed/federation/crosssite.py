"""Per-site releases that cannot be subtracted from a pooled one.

A site's own plaintext aggregates (``describe_by_site``: its counts and moments) pass its disclosure rules
alone, small cells suppressed. They do not protect *another* site: if site A hides a cell of 4 patients, the
pooled sum of that cell (a secure sum over all sites) minus the other sites' released per-site values is
A's 4. Suppression must therefore be common to all sites: a cell is released per site only where no site
hides it.

The sites agree on that without showing each other which cells they hide, through one more secure sum:

1. ``stats.flags`` (secure sum only): every site runs the per-site task on its own table, applies its own
   rules (primary and complementary suppression) and contributes 1 for every cell it would hide, 0
   elsewhere. The decrypting site releases, signed, the number of sites hiding each cell
   (:mod:`ehr_fed.federation.releases`).
2. The per-site query carries that signed release. Each site checks the signature against its pinned keys,
   that the flags are for exactly this task and these parameters, and that they sum over *every* member of
   the federation; then it hides, besides its own small cells, every cell some site hides.

The union of masks that are each closed under complementary suppression is closed too (a relation with one
hidden cell in the union would have one hidden cell at the site that hides it), so the common mask needs no
second round. What the flags themselves show: how many sites hide a cell, never which, nor a count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.releases import verify_release
from ehr_fed.privacy import DisclosureError

__all__ = ["FLAGS_TASK", "CROSS_SITE_TASKS", "flag_params", "apply_flags"]

# the flags task itself is a statistics task: ehr_fed.stats.tasks.site_flags

FLAGS_TASK = "stats.flags"
#: per-site plaintext tasks whose count cells are hidden in common, each with the outputs it may still show
#: without the flags (a site's number of index events: what its pre-flight shows anyway); a task with none
#: is refused without flags
CROSS_SITE_TASKS = {"stats.count": ("n",), "stats.moments": ()}


def flag_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters of the flags computation for a per-site ``task`` with ``params``."""
    return {"task": task, "params": {k: v for k, v in params.items() if k != "flags"}}


def apply_flags(site, task_name: str, msg, result: dict[str, Any]) -> dict[str, list[int]]:
    """Check the query's signed flags and hide every cell some member hides; returns, per output, the flat
    indices newly hidden.

    Without flags, only the outputs :data:`CROSS_SITE_TASKS` names are shown (the others hidden); a task
    with none raises :class:`DisclosureError` (rule ``cross_site_suppression``). Raises
    :class:`ProtocolError` when the flags are forged, for other parameters, or do not cover every member.
    """
    params = msg.payload.get("params") or {}
    record = params.get("flags")
    if record is None and CROSS_SITE_TASKS[task_name]:
        hidden = {}
        for name in list(result):
            if name not in CROSS_SITE_TASKS[task_name] and result[name] is not None:
                value = np.asarray(result[name], dtype=float)
                hidden[name] = np.flatnonzero(~np.isnan(value.ravel())).tolist()
                result[name] = np.full_like(value, np.nan) if value.ndim else None
        return hidden
    if record is None:
        raise DisclosureError(
            f"site {site.site_id} releases {task_name!r} per site only with the federation's common suppression "
            "flags (a pooled sum minus the other sites' values would give back a cell it hides); use "
            "ehr_fed.stats.describe_by_site / site_counts, which compute them first (rule cross_site_suppression)",
            rule="cross_site_suppression", site_id=site.site_id)
    flags = verify_release(site.keys.peers, record, study=msg.study, task=FLAGS_TASK)
    members = sorted(site.keys.peers)
    if site.site_id not in members or record.get("participants") != members:
        raise ProtocolError(f"the suppression flags sum over {record.get('participants')}, not over every member "
                            f"of the federation {members}")
    if record.get("params_digest") != params_digest(flag_params(task_name, params)):
        raise ProtocolError("the suppression flags are for another task or other parameters than this query")
    touched: dict[str, list[int]] = {}
    for name, flag in flags.items():
        if name not in result:
            continue
        value = np.asarray(np.nan if result[name] is None else result[name], dtype=float)
        if flag.shape != value.shape:
            raise ProtocolError(f"suppression flags of {name!r} have shape {flag.shape}, the result {value.shape}")
        hide = (flag > 0) & ~np.isnan(value)
        if hide.any():
            value = np.where(hide, np.nan, value)
            result[name] = value if value.ndim else (None if np.isnan(value) else float(value))
            touched[name] = np.flatnonzero(hide.ravel()).tolist()
    return touched
