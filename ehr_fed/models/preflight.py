"""Pre-flight policy checks: does every site accept a model's size before the first Newton round?

A site refuses a gradient task whose model has more parameters than ``max_params_fraction`` of its rows
(:meth:`ehr_fed.privacy.PrivacyPolicy.check_params`). Without a pre-flight check that refusal surfaces in
the middle of training, as a quorum failure. :func:`check_model_size` asks every site first, with one
plaintext query (``models.preflight``) whose reply holds only what the site is willing to share:

``accepts``              the site's own verdict for ``n_params`` parameters
``max_params_fraction``  the site's rule (part of its published policy)
``rows``                 its number of rows, suppressed (``None``) below its ``min_cell_count``
``min_cell_count``       the site's suppression threshold (so a suppressed ``rows`` can be explained)

The site task is registered on import of this module. A site that does not know the task (an older
installation) or does not allow it is skipped: its round-1 check still applies.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.federation.coordinator import FederationError
from ehr_fed.federation.tasks import SiteContext, site_task
from ehr_fed.privacy import DisclosureError

log = logging.getLogger(__name__)

TASK = "models.preflight"


class PreflightError(DisclosureError, FederationError):
    """Sites would refuse a model before its first round (a :class:`DisclosureError` of the sites' rule,
    and a :class:`FederationError`: the fit cannot complete)."""


@site_task(TASK, kind="count", counts={"rows": ()}, params=("n_params",))
def preflight_task(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, Any]:
    """The site's verdict on a model of ``params['n_params']`` parameters (see the module docstring)."""
    n_params = int(params["n_params"])
    n_rows = len(table)
    fraction = float(ctx.policy.max_params_fraction)
    return {
        "accepts": bool(n_params <= fraction * n_rows),
        "max_params_fraction": fraction,
        "min_cell_count": int(ctx.policy.min_cell_count),
        "rows": np.array([float(n_rows)]),
    }


def check_model_size(federation: Any, n_params: int, *, model: str = "model", task: str = "logreg.newton",
                     flag: str = "--features") -> dict[str, dict[str, Any]]:
    """Raise :class:`PreflightError` naming every site that would refuse a model of ``n_params`` parameters.

    Parameters
    ----------
    federation : Federation
    n_params : int
        Number of model parameters (coefficients including the intercept).
    model : str
        What is being trained, for the message.
    task : str
        The gradient task the sites would refuse (named as in their round-time refusal).
    flag : str
        The option that selects fewer features, for the message.

    Returns
    -------
    dict of site id to reply
        The sites' replies (empty when the query could not run).
    """
    try:
        replies = dict(federation.query(TASK, {"n_params": int(n_params)}))
    except FederationError as exc:  # too few sites know or allow the task: the round checks still apply
        log.debug("pre-flight check skipped: %s", exc)
        return {}
    refusing = {sid: r for sid, r in replies.items() if not r.get("accepts", True)}
    if refusing:
        lines = [_refusal_line(sid, r, n_params, task) for sid, r in sorted(refusing.items())]
        raise PreflightError(
            f"{len(refusing)} site(s) would refuse this {model} before round 1 (rule max_params_fraction: "
            f"a model may have at most that fraction of a site's rows as parameters; this one has {n_params}):\n  "
            + "\n  ".join(lines)
            + f"\nTo train: model fewer features ({flag} a,b,c), or ask the site(s) to raise "
            "privacy.max_params_fraction (the `privacy:` section of the federation YAML, or the site's own "
            "policy file).",
            rule="max_params_fraction",
            site_id=sorted(refusing)[0],
        )
    return replies


def _refusal_line(site_id: str, reply: dict[str, Any], n_params: int, task: str) -> str:
    fraction = float(reply.get("max_params_fraction") or 0.0)
    rows = reply.get("rows")
    rows = None if rows is None else float(np.asarray(rows, dtype=float).ravel()[0])
    head = f"site {site_id} refuses task {task!r}: {n_params} model parameters exceed max_params_fraction={fraction:g}"
    if rows is None or not math.isfinite(rows):
        return (f"{head} x its rows, fewer than its min_cell_count={reply.get('min_cell_count')} (the exact "
                "count is not released)")
    need = math.ceil(n_params / rows * 100) / 100
    return (f"{head} x {int(rows)} rows = {fraction * rows:g} (it would need max_params_fraction >= "
            f"{need:.2f}, or {math.ceil(n_params / fraction)} rows)")
