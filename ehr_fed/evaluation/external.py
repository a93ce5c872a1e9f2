"""External validation and baselines: leave-one-site-out, local-only models.

Leave-one-site-out trains on a *subset view* of the federation (:func:`subset_federation`: the same sites,
keys and policy, reaching only some sites) and validates on the held-out site with that site's own
metrics. A training set of fewer sites than the policy's ``min_sites`` is reported as not permitted; the
policy is never weakened to make it run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ehr_fed.evaluation.federated import SITE_COLUMNS, site_table
from ehr_fed.evaluation.modeljson import model_to_json


class SubsetTransport:
    """A view of another transport that reaches only ``site_ids`` (closing it leaves the parent open)."""

    def __init__(self, parent: Any, site_ids: Sequence[str]):
        known = list(parent.site_ids())
        unknown = [s for s in site_ids if s not in known]
        if unknown:
            raise KeyError(f"no such site(s) {unknown} in the federation; sites: {known}")
        self.parent = parent
        self._ids = [s for s in known if s in set(site_ids)]

    def site_ids(self) -> list[str]:
        return list(self._ids)

    def send(self, messages: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
        outside = sorted(set(messages) - set(self._ids))
        if outside:
            raise KeyError(f"site(s) {outside} are outside this subset view {self._ids}")
        return self.parent.send(messages, timeout)

    def close(self) -> None:
        """Nothing to release: the parent transport belongs to the parent federation."""


def subset_federation(fed: Any, site_ids: Sequence[str]) -> Any:
    """A federation over only ``site_ids`` of ``fed``: same keys, policy, study and encryption.

    Its coordinator starts a new session, so the sites accept its rounds beside the parent's.
    """
    from ehr_fed.federation import Federation

    sub = Federation(SubsetTransport(fed.transport, site_ids), keys=fed.keys, policy=fed.policy,
                     encrypted=fed.encrypted, study=fed.study, timeout=fed.timeout)
    if hasattr(fed, "study_spec"):
        sub.study_spec = fed.study_spec
    return sub


def leave_one_site_out(fed: Any, estimator: Any, *, fit_params: dict | None = None,
                       allow_differencing: bool = False) -> pd.DataFrame:
    """Train on all sites but one, validate on the held-out site, for every site.

    Parameters
    ----------
    fed : Federation
    estimator : unfitted federated estimator
        Cloned (``sklearn.base.clone``) and fitted on each training subset.
    fit_params : dict, optional
        Passed to ``fit``.
    allow_differencing : bool, default False
        Exact leave-one-site-out reveals each left-out site's aggregates by subtraction from the
        aggregates over all sites, and the sites refuse it: by default every split is reported as
        "not permitted". ``True`` sends the splits anyway: the sites then refuse them through their own
        opening record and the splits report "failed" with the sites' reason.

    Returns
    -------
    DataFrame indexed by ``held_out`` site with ``status`` ("ok", "not permitted", "failed",
    "suppressed"), ``train_sites``, the held-out site's metrics (:data:`SITE_COLUMNS`) and ``note``.
    """
    from sklearn.base import clone

    min_sites = int(fed.policy.min_sites)
    rows = []
    for held in fed.site_ids:
        train = [s for s in fed.site_ids if s != held]
        row: dict[str, Any] = {"held_out": held, "train_sites": ", ".join(train)}
        if not allow_differencing:
            # the same exact computation (row counts, preprocessing sums, the first Newton step) over the
            # whole federation and over all-but-one site gives the left-out site's own numbers by
            # subtraction; the sites refuse it (their opening record), so it is not even attempted
            row.update(status="not permitted", released=False, note=(
                f"not permitted by the privacy rules: a model trained without {held} repeats exact "
                "aggregates already released over every site, and their difference would be "
                f"{held}'s own numbers (differencing). Validate out of sample with a held-out split "
                "by person (ehr-fed evaluate --validation split)"))
            rows.append(row)
            continue
        if len(train) < min_sites:
            row.update(status="not permitted", released=False, note=(
                f"not permitted by the privacy policy: training without {held} would combine "
                f"{len(train)} site(s), the policy requires min_sites={min_sites}. Add sites to the "
                "federation; the policy is not weakened for external validation"))
            rows.append(row)
            continue
        try:
            model = clone(estimator).fit(subset_federation(fed, train), **(fit_params or {}))
            metrics = site_table(subset_federation(fed, [held]), model_to_json(model)).iloc[0].to_dict()
        except Exception as exc:  # one failing split is reported, the others still run
            row.update(status="failed", released=False, note=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        row.update(metrics)
        row["status"] = "ok" if metrics["released"] else "suppressed"
        rows.append(row)
    cols = ["status", "train_sites", *SITE_COLUMNS]
    return pd.DataFrame(rows).set_index("held_out").reindex(columns=cols)


def compare_local_only(fed: Any, model: Any, *, k: int = 5, local_model: str | None = None,
                       seed: int = 0, federated: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each site's local-only model (k-fold cross-validated AUC) beside the federated model's AUC there.

    Parameters
    ----------
    fed : Federation
    model : fitted federated model (its features are the local models' features)
    k : int
        Folds of the cross-validation at each site.
    local_model : {"logreg", "gbdt"}, optional
        The local model family; default the federated model's (logistic regression for ``logreg``,
        scikit-learn histogram boosting for ``gbdt``).
    federated : DataFrame, optional
        The federated model's per-site table (:func:`site_table`) when already computed.

    Returns
    -------
    DataFrame indexed by site: ``local_cv_auc``, ``federated_auc``, ``difference`` (federated - local),
    ``note`` (why a value is suppressed).
    """
    text = model_to_json(model)
    import json

    doc = json.loads(text)
    kind = local_model or ("gbdt" if doc.get("kind") == "gbdt" else "logreg")
    features = [f["name"] for f in doc["feature_schema"]]
    replies = fed.query("evaluation.local_cv", {"features": features, "k": int(k), "local_model": kind,
                                                "seed": int(seed)})
    fed_sites = federated if federated is not None else site_table(fed, text)
    rows = {}
    for sid in fed.site_ids:
        r = dict(replies.get(sid) or {})
        note = r.get("reason") or ("" if sid in replies else f"no reply: {replies.missing.get(sid, '?')}")
        fed_auc = fed_sites.loc[sid, "auc"] if sid in fed_sites.index else float("nan")
        local = r.get("cv_auc") if r.get("released") else None
        rows[sid] = {"local_model": kind, "k": int(k), "local_cv_auc": local, "federated_auc": fed_auc,
                     "note": note or str(fed_sites.loc[sid, "note"] if sid in fed_sites.index else "")}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "site_id"
    for c in ("local_cv_auc", "federated_auc"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["difference"] = df["federated_auc"] - df["local_cv_auc"]
    return df[["local_model", "k", "local_cv_auc", "federated_auc", "difference", "note"]]
