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
    """What a task knows about the site it runs at."""

    site_id: str
    policy: PrivacyPolicy
    study: str = ""
    round: int = 0
    n_rows: int = 0


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
    """

    name: str
    kind: str
    fn: Callable[[pd.DataFrame, dict, SiteContext], Any]
    counts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    histograms: tuple[str, ...] = ()


_REGISTRY: dict[str, SiteTask] = {}


class UnknownTaskError(KeyError):
    """No task of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def site_task(name: str, kind: str = "other", *, counts: Mapping[str, Any] | None = None,
              histograms: tuple[str, ...] = ()):
    """Register a site task under ``name`` (decorator). Re-registering a name replaces it."""
    if kind not in KINDS:
        raise ValueError(f"site_task {name!r}: kind {kind!r} is not one of {KINDS}")
    norm = {k: tuple(v) for k, v in (counts or {}).items()}

    def deco(fn):
        _REGISTRY[name] = SiteTask(name=name, kind=kind, fn=fn, counts=norm, histograms=tuple(histograms))
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


#: modules whose @site_task functions ship with ehr-fed (they register on import); a site loads
#: them all, so a SiteNode in any process (worker, Flower ClientApp) knows every built-in task
BUILTIN_TASK_MODULES = (
    "ehr_fed.stats.tasks",
    "ehr_fed.models.logreg_tasks",
    "ehr_fed.models.gbdt.tasks",
    "ehr_fed.evaluation.tasks",
)


def _load_builtin_tasks() -> None:
    import importlib
    import importlib.util

    for name in BUILTIN_TASK_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
