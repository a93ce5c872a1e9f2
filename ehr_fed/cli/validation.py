"""Out-of-sample validation for ``ehr-fed evaluate``: a held-out split by person, or leave-one-site-out.

``split`` (the default)
    Every site splits its rows by person: a person whose ``sha256(person_key)`` falls below
    ``test_fraction`` is held out (all of that person's index events together, so no patient is on both
    sides; the same rule as :func:`ehr_fed.demo.split_tables`). The model file's specification (its kind
    and parameters, :func:`sklearn.base.clone`) is refit on the other persons and evaluated on the held-out
    ones: the metrics describe data the evaluated model never saw.
``loso``
    Leave-one-site-out (:func:`ehr_fed.evaluation.external.leave_one_site_out`): refit without each site,
    validate on it; the per-site table holds those external validations.
``in-sample``
    The model file itself on all rows - the data it was (most likely) trained on. Optimistic; the report
    says so.

The split needs the sites' tables in this process (an ``in_process`` federation, as ``ehr-fed synth``
writes); over Flower the sites would have to split their own rows, so ``split`` refuses with a message.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SCHEMES = ("split", "loso", "in-sample")
#: share of each site's persons the split holds out unless ``--test-fraction`` says otherwise
DEFAULT_TEST_FRACTION = 0.3
#: the smallest share the default split lowers itself to when a site's training part is too small at 30 %
MIN_TEST_FRACTION = 0.1


@dataclass
class Validation:
    """What an evaluation was computed on (shown in the report and on stderr)."""

    scheme: str
    description: str
    evaluated_rows: int
    train_rows: int | None = None
    test_fraction: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "description": self.description, "evaluated_rows": self.evaluated_rows,
                "train_rows": self.train_rows, "test_fraction": self.test_fraction, **self.details}


def person_hash(table: pd.DataFrame) -> np.ndarray:
    """Each row's person as a number in [0, 1): the first 32 bits of ``sha256(person_key)``."""
    if "person_key" not in table.columns:
        raise ValueError("the feature table has no person_key column, so it cannot be split by person")
    u = table["person_key"].astype(str).map(
        lambda k: int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 2**32)
    return u.to_numpy(dtype=np.float64)


def held_out(table: pd.DataFrame, test_fraction: float) -> np.ndarray:
    """Boolean mask of the rows whose person is held out (a hash of ``person_key`` below the fraction)."""
    return person_hash(table) < test_fraction


@dataclass
class SplitPlan:
    """The share of each site's persons the split holds out, and why it is not the default (``note``)."""

    test_fraction: float
    note: str = ""


def refit_parameters(model: Any) -> int | None:
    """Parameters of the refit that the sites' ``max_params_fraction`` rule counts (None: no such rule).

    A logistic regression has its terms and its intercept; gradient boosting sends gradient histograms,
    not a gradient of its parameters, and the rule does not apply to it.
    """
    terms = getattr(model, "terms_", None)
    if terms is None:
        return None
    return len(terms) + int(bool(getattr(model, "fit_intercept", True)))


def rows_needed(n_params: int, max_params_fraction: float) -> int:
    """The fewest rows a site needs to accept ``n_params`` parameters (``n_params <= fraction * rows``)."""
    n = max(1, math.ceil(n_params / max_params_fraction))
    while n > 1 and n_params <= max_params_fraction * (n - 1):
        n -= 1
    while n_params > max_params_fraction * n:
        n += 1
    return n


def plan_split(fed: Any, model: Any, requested: float | None) -> SplitPlan:
    """The held-out share to use, checked up front against every site's parameters-per-row rule.

    The refit trains on ``1 - test_fraction`` of each site's persons, and a site refuses a model with more
    parameters than ``max_params_fraction`` of its rows. With ``requested`` None (no ``--test-fraction``)
    the default 30 % is lowered, down to :data:`MIN_TEST_FRACTION`, to the largest share (in steps of 1 %)
    every site's training part accepts, and ``note`` says so. An explicit ``--test-fraction`` is never
    changed: when a site's training part would be too small, :class:`ValueError` names the site, its rule
    and the largest ``--test-fraction`` that works.
    """
    fraction = DEFAULT_TEST_FRACTION if requested is None else float(requested)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--test-fraction must be between 0 and 1 (exclusive), got {fraction:g}")
    n_params = refit_parameters(model)
    if n_params is None:
        return SplitPlan(fraction)
    tables = site_tables(fed, "--validation split")
    hashes = {sid: np.sort(person_hash(t)) for sid, t in tables.items()}
    need = {sid: rows_needed(n_params, float(_site_policy(fed, sid).max_params_fraction)) for sid in tables}

    def short(f: float) -> list[str]:  # sites whose training part (persons hashed at or above f) is too small
        return [sid for sid, u in hashes.items() if int(len(u) - np.searchsorted(u, f, "left")) < need[sid]]

    blocked = short(fraction)
    if not blocked:
        return SplitPlan(fraction)
    # the largest share that leaves every site need[sid] training rows: the need-th largest hash, at most
    limits = [u[-need[sid]] if len(u) >= need[sid] else 0.0 for sid, u in hashes.items()]
    best = math.floor(min(limits) * 100) / 100
    best = best if best > 0 and not short(best) else None
    what = _shortfall(fed, blocked, need, n_params)
    others = ("use --validation loso (refits on whole sites), train a model with fewer features "
              "(ehr-fed train logreg --features a,b,c), or ask the site(s) to raise privacy.max_params_fraction")
    if requested is None and best is not None and best >= MIN_TEST_FRACTION:
        return SplitPlan(best, f"{best:.0%} of each site's persons held out, not the default "
                               f"{DEFAULT_TEST_FRACTION:.0%}: holding out {DEFAULT_TEST_FRACTION:.0%} would leave "
                               f"{what}")
    if requested is not None:
        fix = (f"The largest share that works here is --test-fraction {best:.2f} (or leave --test-fraction out "
               "to choose it); or " if best is not None else "No held-out share works; ")
        raise ValueError(f"--test-fraction {fraction:g} would leave {what}. {fix}{others}.")
    smaller = (f"--test-fraction {best:.2f} would still work, with few held-out persons; or "
               if best is not None else "")
    raise ValueError(f"the held-out split cannot refit this model: even holding out {MIN_TEST_FRACTION:.0%} of "
                     f"each site's persons would leave {_shortfall(fed, short(MIN_TEST_FRACTION), need, n_params)}"
                     f". {smaller}{others[0].upper()}{others[1:]}.")


def _site_policy(fed: Any, site_id: str) -> Any:
    node = fed.transport.nodes[site_id]
    return getattr(node, "policy", None) or fed.policy


def _shortfall(fed: Any, sites: list[str], need: dict[str, int], n_params: int) -> str:
    """"the training part of site X (max_params_fraction=f: at least N rows) too small for P parameters"."""
    parts = [f"site {sid} (max_params_fraction={float(_site_policy(fed, sid).max_params_fraction):g}: at least "
             f"{need[sid]} rows)" for sid in sites]
    return (f"the training part of {', '.join(parts)} too small for the refit's {n_params} model parameters "
            "(rule max_params_fraction)")


def site_tables(fed: Any, what: str) -> dict[str, pd.DataFrame]:
    """The in-process sites' feature tables; a clear error for transports whose sites are elsewhere."""
    nodes = getattr(fed.transport, "nodes", None)
    if not isinstance(nodes, dict) or not all(hasattr(n, "table") for n in nodes.values()):
        raise ValueError(
            f"{what} needs the sites' feature tables in this process (an in_process federation); this "
            f"federation's sites run elsewhere ({type(fed.transport).__name__}). Use --validation loso, or "
            "--validation in-sample (labelled as in-sample in the report)")
    return {sid: n.table for sid, n in nodes.items()}


def _rebuild(fed: Any, tables: dict[str, pd.DataFrame], allow_insecure: bool = False) -> Any:
    """An in-process federation of ``tables`` with the sites' own keys and policies."""
    from ehr_fed.federation import Federation

    nodes = fed.transport.nodes
    return Federation.in_process(
        tables, policy=fed.policy, encrypted=fed.encrypted, study=fed.study,
        site_policies={sid: nodes[sid].policy for sid in tables},
        site_keys={sid: nodes[sid].keys for sid in tables},
        allow_insecure=allow_insecure,
        workers=getattr(fed.transport, "workers", "threads"),
    )


def split_federations(fed: Any, test_fraction: float, *, allow_insecure: bool = False
                      ) -> tuple[Any, Any, int, int]:
    """(training federation, held-out federation, training rows, held-out rows) split by person."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    train, test = {}, {}
    for sid, table in site_tables(fed, "--validation split").items():
        mask = held_out(table, test_fraction)
        train[sid] = table[~mask].reset_index(drop=True)
        test[sid] = table[mask].reset_index(drop=True)
    empty = [sid for sid, t in test.items() if len(t) == 0]
    if empty:
        raise ValueError(f"site(s) {empty} hold no held-out person at --test-fraction {test_fraction}; "
                         "raise --test-fraction or use --validation loso")
    return (_rebuild(fed, train, allow_insecure), _rebuild(fed, test, allow_insecure), sum(map(len, train.values())),
            sum(map(len, test.values())))


def refit(model: Any, fed: Any) -> Any:
    """The model's specification (same kind and parameters) fitted on ``fed``."""
    import warnings

    from sklearn.base import clone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI's train command reports them; here only the metrics count
        return clone(model).fit(fed)


#: what the report's first paragraph says the rows are ("Evaluated on <this>: N index events ...")
EVALUATED_ON_LOSO = ("every row of the sites' tables, by the model file: in-sample; the per-site table holds "
                     "the leave-one-site-out validations")
EVALUATED_ON_IN_SAMPLE = ("IN-SAMPLE: every row of the sites' tables, the data the model was trained on "
                          "(optimistic: a calibration slope near 1 is expected by construction)")


def evaluated_on_split(test_fraction: float, n_train: int) -> str:
    return (f"the held-out {test_fraction:.0%} of each site's persons, which the evaluated model never saw (the "
            f"model file's specification refit on the other {n_train} index events; the odds ratios shown are "
            "the model file's)")


def describe_split(test_fraction: float, n_train: int, n_test: int, note: str = "") -> str:
    return (f"held-out split by person: the model's specification was refit on {n_train} index events "
            f"({1 - test_fraction:.0%} of each site's persons) and evaluated on the other {n_test} index "
            f"events ({test_fraction:.0%} of the persons), which it never saw. The coefficient or importance "
            "table shows the model file itself." + (f" Note: {note}." if note else ""))


def describe_loso(table: pd.DataFrame, n_rows: int) -> str:
    ok = int((table["status"] == "ok").sum()) if "status" in table else 0
    return (f"leave-one-site-out: for each site, the model's specification refit on the other sites and "
            f"validated on that site ({ok} of {len(table)} site(s) permitted and released; see 'Per site'). "
            f"The overall metrics are the model file on all {n_rows} index events: in-sample.")


def describe_in_sample(n_rows: int) -> str:
    return (f"IN-SAMPLE: the model file on all {n_rows} index events of the federation, the data it was "
            "trained on unless it was trained elsewhere. These metrics are optimistic (a calibration slope "
            "near 1 is expected by construction); use the default --validation split or --validation loso "
            "for out-of-sample figures.")
