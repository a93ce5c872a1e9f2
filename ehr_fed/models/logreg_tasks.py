"""Site tasks of federated logistic regression (they run at each site, on the site's own feature table).

``models.schema`` (plaintext query)
    The feature columns of the site's table (names only), so the coordinator can check that the sites agree.
``models.row_count`` (secure sum, kind ``count``)
    The number of rows (index events): the public size from which every later bound is derived.
``models.preprocess_sums`` (secure sum, kind ``moments``)
    :func:`ehr_fed.models.base.site_preprocessing_sums` of the site's features and labels; the decrypting
    site suppresses pooled counts below its ``min_cell_count`` (and the sums that depend on them).
``logreg.newton`` (secure sum, kind ``gradient``)
    :func:`ehr_fed.models.logreg_newton.site_newton_statistics` at the coordinator's coefficients: the
    gradient, the upper triangle of ``Z'WZ`` and the log-likelihood, after the site checked its policy's
    ``max_params_fraction`` against the number of coefficients and replayed the fit from the signed
    releases the request carries (:mod:`ehr_fed.models.logreg_transcript`): a design or coefficients that do
    not follow from them are refused.

Parameters travel as plain data (lists, str, float), so every transport can carry them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.federation.tasks import SiteContext, site_task
from ehr_fed.models.base import (
    design_with_intercept,
    feature_columns,
    site_preprocessing_sums,
    validate_feature_table,
)
from ehr_fed.models.logreg_dp import private_newton, private_preprocess_sums, private_row_count
from ehr_fed.models.logreg_newton import site_newton_statistics
from ehr_fed.models.logreg_transcript import check_newton_request
from ehr_fed.privacy.budget import patient_weights
from ehr_fed.privacy.dp import active_release

#: largest absolute feature value a site accepts in ``models.preprocess_sums``; the public bound from which the
#: secure-sum encoding of raw sums is sized (clinical quantities in canonical units are far below it)
VALUE_BOUND = 1.0e5


#: designs built for recent (table, preprocessing) pairs: the Newton rounds of one fit reuse the site's design
_DESIGNS: OrderedDict[tuple, tuple[weakref.ref, np.ndarray, np.ndarray]] = OrderedDict()
_DESIGNS_LOCK = threading.Lock()
_MAX_DESIGNS = 8


def clear_design_cache() -> None:
    """Forget the cached designs (the coordinator's fit calls this when it ends, for in-process sites)."""
    with _DESIGNS_LOCK:
        _DESIGNS.clear()


def site_design(table: pd.DataFrame, state: dict, fit_intercept: bool, label: str,
                site_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The site's design ``Z`` (with the intercept column) and labels, cached across Newton rounds.

    The cache is keyed by the table object (held weakly, so a new or collected table never matches) and a
    digest of the preprocessing state; it holds at most a few designs.
    """
    digest = hashlib.sha256(json.dumps([state, fit_intercept, label], sort_keys=True).encode()).hexdigest()
    key = (id(table), len(table), digest)
    with _DESIGNS_LOCK:
        hit = _DESIGNS.get(key)
        if hit is not None and hit[0]() is table:
            _DESIGNS.move_to_end(key)
            return hit[1], hit[2]
    X = validate_feature_table(table, state["feature_names"], f"site {site_id}")
    Z = design_with_intercept(X, state, fit_intercept)
    y = _labels(table, label)
    try:
        ref = weakref.ref(table)
    except TypeError:  # not weak-referenceable: do not cache
        return Z, y
    with _DESIGNS_LOCK:
        _DESIGNS[key] = (ref, Z, y)
        while len(_DESIGNS) > _MAX_DESIGNS:
            _DESIGNS.popitem(last=False)
    return Z, y


def _labels(table: pd.DataFrame, label: str) -> np.ndarray:
    if label not in table.columns:
        raise ValueError(f"the feature table has no label column {label!r}; columns: {list(table.columns)}")
    y = pd.to_numeric(table[label], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"label column {label!r} must hold 0/1 for every row; {int(bad.sum())} row(s) hold something else"
        )
    return y


@site_task("models.schema", kind="other", params=())
def schema_task(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, Any]:
    """The site's feature column names (no values)."""
    return {"features": feature_columns(table)}


@site_task("models.row_count", kind="count", counts={"n": ()}, params=("dp", "dp_index"))
def row_count_task(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """The number of rows of the site's feature table."""
    rel = active_release()
    if rel is not None:  # differentially private form (ehr_fed.models.logreg_dp)
        return private_row_count(len(table), rel)
    return {"n": np.array([float(len(table))])}


@site_task(
    "models.preprocess_sums", kind="moments",
    counts={"n_obs": ("sum", "sumsq", "n_nonbinary"), "n_one": (), "n_one_pos": (), "n_obs_pos": (),
            "n_miss_pos": (), "n_pos": ()},
    params=("features", "label", "dp", "dp_clip", "dp_index"),
)
def preprocess_sums_task(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """Counts, sums and label cross-counts of every feature (see ``site_preprocessing_sums``)."""
    names = list(params["features"])
    X = validate_feature_table(table, names, f"site {ctx.site_id}")
    big = np.nanmax(np.abs(X), axis=0, initial=0.0) > VALUE_BOUND if X.size else np.zeros(len(names), bool)
    if np.any(big):
        raise ValueError(
            f"site {ctx.site_id}: features {[n for n, b in zip(names, big, strict=True) if b]} hold values "
            f"beyond +/-{VALUE_BOUND:g}, the bound federated preprocessing encodes; check their units"
        )
    rel = active_release()
    if rel is not None:  # differentially private form (ehr_fed.models.logreg_dp)
        return private_preprocess_sums(X, _labels(table, params.get("label", "label")), params, rel)
    return site_preprocessing_sums(X, _labels(table, params.get("label", "label")))


#: the parameters of a Newton round (:func:`ehr_fed.models.logreg_transcript.newton_params`)
NEWTON_PARAMS = ("preprocess", "fit_intercept", "label", "rule", "setup", "dp", "dp_clip", "beta", "beta_path",
                 "dp_index", "transcript")


@site_task("logreg.newton", kind="gradient", params=NEWTON_PARAMS)
def newton_task(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict[str, np.ndarray]:
    """Gradient, Hessian upper triangle and log-likelihood of the site's rows at ``params['beta']``."""
    beta = np.asarray(params["beta"], dtype=float)
    ctx.policy.check_params(int(beta.size), int(len(table)), "logreg.newton", ctx.site_id)
    check_newton_request(params, ctx)  # the parameters must follow from the signed releases of this fit
    Z, y = site_design(table, params["preprocess"], bool(params["fit_intercept"]), params.get("label", "label"),
                       ctx.site_id)
    if Z.shape[1] != beta.size:
        raise ValueError(f"site {ctx.site_id}: design has {Z.shape[1]} columns but beta has {beta.size}")
    rel = active_release()
    if rel is not None:  # differentially private form (ehr_fed.models.logreg_dp)
        # up to the plan's weighted_events rows per patient, weighted so a patient weighs events_per_patient
        return private_newton(Z, y, beta, params, rel, patient_weights(table, rel.plan.events_per_patient))
    return site_newton_statistics(Z, y, beta)
