"""The site task registry: plain functions registered by name, shared by every transport.

::

    @site_task("logreg.newton", kind="gradient")
    def newton(table, params, ctx):
        return {"grad": ..., "hess": ...}

``kind`` says what kind of statistic the task releases (written to the audit log) and which checks apply:

``count``       counts; outputs named in ``counts`` are small-cell suppressed
``moments``     sums / sums of squares (with counts)
``histogram``   histograms (with counts)
``gradient``    model gradients / Hessians: ``max_params_fraction`` applies
``metric``      evaluation aggregates
``other``       anything else
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ehr_fed.privacy.policy import PrivacyPolicy

KINDS = ("count", "moments", "histogram", "gradient", "metric", "other")


@dataclass(frozen=True)
class SiteContext:
    """What a task knows about the site it runs at (and, for a task that replays the protocol's signed
    transcript, the request's session, the site's pinned ``peers`` and the request's ``participants``)."""

    site_id: str
    policy: PrivacyPolicy
    study: str = ""
    round: int = 0
    n_rows: int = 0
    #: the session of the request, and the identity bundles this site pinned in the key ceremony (site id ->
    #: public bundle): what a task needs to verify the signed release records a request carries
    session: str = ""
    peers: Mapping[str, Any] = field(default_factory=dict)
    participants: tuple[str, ...] = ()
    #: the site's persistent protocol memory (:class:`ehr_fed.federation.state.SiteState`), None outside a site
    state: Any = None


@dataclass(frozen=True)
class SiteTask:
    """A registered task.

    Attributes
    ----------
    name, kind, fn
    counts : mapping of str to tuple of str
        Output arrays holding counts of rows, each with the outputs that describe the same cells
        (``{"n": ("sum", "sumsq")}``); a site (and the decrypting site, on the sum) suppresses cells
        with ``0 < n < min_cell_count`` in the count and its dependents.
    histograms : tuple of str
        Output arrays of histogram counts (last axis = bins): small bins are merged with their
        neighbours (:func:`ehr_fed.privacy.merge_histogram`) rather than suppressed, so totals survive.
    release : tuple of str
        How the output may leave the site: ``"secure_sum"`` (only as a masked, encrypted contribution to a
        sum over sites) and/or ``"plaintext"`` (as a reply of its own: only for outputs that pass the
        disclosure rules alone, such as schemas and suppressed counts). A request in another mode is
        refused. Default: secure sum only; :data:`PLAINTEXT_TASKS` lists the built-in exceptions.
    cells : callable or None
        ``cells(params)``: keys of what the computation reveals (``"col:age"``). A site records each
        key with the computation's participant set and refuses the key over another set, whatever the task
        or parameters (``describe(["age", "sex"])`` over three sites, then ``describe(["age"])`` over two,
        would give the third site's age cells).
    params : tuple of str or None
        The parameter names the task reads; a request with any other is refused (an unused parameter
        would give the same computation a new name, and a new differencing record). ``"dp"`` (a private
        release plan) is allowed for every task. Every built-in task declares it; ``None``: not declared
        (a task registered outside ehr-fed, whose parameters the site then does not check).
    edges : str or None
        For histograms over requested bin edges: the parameter holding them (``(n_columns, n_bins + 1)``, with
        ``columns`` and ``by`` beside it). The decrypting site then merges bins against every boundary it
        released earlier for the same column (:mod:`ehr_fed.privacy.intervals`), so two releases over
        different edges cannot be subtracted into a small cell.
    post_decrypt : callable or None
        ``fn(arrays, params, ctx) -> dict`` run by the decrypting site on the decrypted sum, before anything
        leaves it: it turns the aggregate into what may be released (e.g. boosting's best splits instead of
        its histograms) and may refuse (``DisclosureError``). ``params`` are the request's parameters (their
        digest checked against the one every contributor signed). None: the decrypted sum itself is released.
    """

    name: str
    kind: str
    fn: Callable[[pd.DataFrame, dict, SiteContext], Any]
    counts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    histograms: tuple[str, ...] = ()
    release: tuple[str, ...] = ("secure_sum",)
    edges: str | None = None
    cells: Callable[[dict], list[str]] | None = None
    params: tuple[str, ...] | None = None
    post_decrypt: Callable[[dict, dict, SiteContext], dict] | None = None

    def cell_keys(self, params: dict) -> list[str]:
        """What this computation reveals, as keys a site records with the participant set: the declared
        ``cells`` (e.g. one per statistics column, shared by every task that releases that column); the task
        itself with a digest of its parameters is always a key too (added by the caller)."""
        if self.cells is None:
            return []
        return [str(c) for c in self.cells(params)]


RELEASE_MODES = ("plaintext", "secure_sum")

#: built-in tasks whose output may also leave a site as a plaintext reply (each passes the disclosure rules
#: on its own: schemas, suppressed counts and moments, a site's own validation metrics); every other task
#: releases only masked, encrypted contributions to secure sums
PLAINTEXT_TASKS = {
    "models.schema": ("plaintext",),
    "gbdt.schema": ("plaintext",),
    "stats.columns": ("plaintext",),
    "models.preflight": ("plaintext",),
    "stats.count": ("plaintext", "secure_sum"),
    "stats.moments": ("plaintext", "secure_sum"),
    "evaluation.site_metrics": ("plaintext",),
    "evaluation.local_cv": ("plaintext",),
}

#: columns of the feature table that are never model features or statistics columns
META_COLUMNS = ("site_id", "person_key", "index_time", "label")

_REGISTRY: dict[str, SiteTask] = {}


class UnknownTaskError(KeyError):
    """No task of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def site_task(name: str, kind: str = "other", *, counts: Mapping[str, Any] | None = None,
              histograms: tuple[str, ...] = (), release: tuple[str, ...] | None = None,
              edges: str | None = None, cells: Callable[[dict], list[str]] | None = None,
              params: tuple[str, ...] | None = None,
              post_decrypt: Callable[[dict, dict, SiteContext], dict] | None = None):
    """Register a site task under ``name`` (decorator). Re-registering a name replaces it.

    ``release``: the modes in which its output may leave the site (default :data:`PLAINTEXT_TASKS` for the
    built-in names, else secure sum only). ``post_decrypt``: the decrypting site's release step
    (:attr:`SiteTask.post_decrypt`).
    """
    if kind not in KINDS:
        raise ValueError(f"site_task {name!r}: kind {kind!r} is not one of {KINDS}")
    norm = {k: tuple(v) for k, v in (counts or {}).items()}
    modes = tuple(release) if release is not None else PLAINTEXT_TASKS.get(name, ("secure_sum",))
    if not modes or any(m not in RELEASE_MODES for m in modes):
        raise ValueError(f"site_task {name!r}: release {modes!r} must name modes of {RELEASE_MODES}")

    def deco(fn):
        _REGISTRY[name] = SiteTask(name=name, kind=kind, fn=fn, counts=norm, histograms=tuple(histograms),
                                   release=modes, edges=edges, cells=cells,
                                   params=None if params is None else tuple(params), post_decrypt=post_decrypt)
        return fn

    return deco


def get_task(name: str) -> SiteTask:
    """The task registered as ``name``; fails with the list of valid names."""
    _load_builtin_tasks()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(
            f"no site task named {name!r}; registered tasks: {sorted(_REGISTRY)}. "
            "Import the module that defines it (with @site_task) at the site"
        ) from None


def registered_tasks() -> list[str]:
    _load_builtin_tasks()
    return sorted(_REGISTRY)


_BUILTINS_LOADED = False


def _load_builtin_tasks() -> None:
    """Import every module whose ``@site_task`` functions ship with ehr-fed: the one explicit table of
    built-in task modules (an import error is an error, never a silently missing task). Once per process:
    every message a site handles looks its task up."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import ehr_fed.evaluation.tasks  # noqa: F401
    import ehr_fed.models.gbdt.tasks  # noqa: F401
    import ehr_fed.models.logreg_tasks  # noqa: F401
    import ehr_fed.models.preflight  # noqa: F401
    import ehr_fed.stats.tasks  # noqa: F401

    _BUILTINS_LOADED = True


#: the modules :func:`_load_builtin_tasks` imports (for documentation and tests)
BUILTIN_TASK_MODULES = (
    "ehr_fed.stats.tasks",
    "ehr_fed.models.logreg_tasks",
    "ehr_fed.models.preflight",
    "ehr_fed.models.gbdt.tasks",
    "ehr_fed.evaluation.tasks",
)
