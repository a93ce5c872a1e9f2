"""Federated logistic regression: Newton-Raphson on Paillier-encrypted sums, equal to the pooled fit.

Protocol (every arrow is one ``Federation.secure_sum``; the coordinator never sees one site's numbers)::

    1. models.preprocess_sums   n, n_pos, per feature: n observed, sum, sum of squares, binary cell counts
                                -> pooled imputation means, missing indicators, standardization
    2. logreg.newton (x rounds) X'(y - p), upper triangle of X'WX, log-likelihood at the current beta
                                -> pooled Newton step, until the step is below ``tol``

Every Newton request carries the signed releases of the fit so far and the coefficients of the earlier
rounds; each site replays the fit from them with the same code (:mod:`ehr_fed.models.logreg_transcript`)
and refuses a design or coefficients that do not follow. The design, the penalty and the secure-sum bounds
are documented in :mod:`ehr_fed.models.base` and :mod:`ehr_fed.models.logreg_newton`. Standard errors
come from the pooled information matrix, so :meth:`FederatedLogisticRegression.summary` equals
statsmodels' ``Logit`` on the concatenated tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from ehr_fed.federation.coordinator import FederationError
from ehr_fed.models.base import (
    DEFAULT_MISSING,
    MISSING_STRATEGIES,
    FeaturePreprocessor,
    check_is_fitted,
    column_diff,
    design_matrix,
    design_state,
)
from ehr_fed.models.logreg_newton import (
    PerfectSeparationError,
    loglik_bound,
    original_scale,
    separated_binary_terms,
)
from ehr_fed.models.logreg_transcript import (
    NEWTON_TASK,
    PREP_TASK,
    ROW_TASK,
    Design,
    ExactNewton,
    derive_design,
    newton_params,
    rule_settings,
)
from ehr_fed.models.preflight import check_model_size

#: public per-site bound on a row count, used to size the encoding of the first (preprocessing) sum
ROW_BOUND = 1.0e9

ProgressCallback = Callable[[dict[str, Any]], None]


class FederatedLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression trained across sites by Newton-Raphson on (encrypted) pooled sums.

    Parameters
    ----------
    penalty : {"none", "l2"}
        ``"l2"`` minimizes ``0.5 ||w||^2 + C sum(logloss)`` over the original-scale coefficients ``w``
        (scikit-learn's ``LogisticRegression(C=C)``; the intercept is not penalized).
    C : float
        Inverse regularization strength (``penalty="l2"`` only).
    fit_intercept : bool
    max_iter : int
        Maximum number of Newton rounds.
    tol : float
        Convergence when the largest Newton step (standardized coefficients) is below ``tol``.
    encrypted : bool
        Require Paillier-encrypted secure sums; ``False`` runs the same protocol in plaintext (the
        federation must then allow it). Applies to ``fit(federation)``: a local ``fit(X, y)`` keeps every
        sum inside this process and runs in plaintext.
    missing_values : {"mean_impute_with_indicator", "mean_impute", "native"} or None
        ``None`` (default) takes the study spec's ``missing_values`` (``mean_impute_with_indicator`` if the
        federation has no study).
    features : list of str or None
        The feature columns to model, a subset of the study's features (``None``: all of them).
    dp : dict, float or None
        Differential privacy (``{"epsilon": 2, "delta": 1e-6, ...}`` or just epsilon): every site noises its
        own clipped contribution inside the secure sum (:mod:`ehr_fed.models.logreg_private`). ``None``
        takes the federation's ``dp`` (off when it has none); results without DP are unchanged.

    Attributes
    ----------
    feature_names_in_ : ndarray of str          the features of the training tables, in study order
    n_features_in_ : int
    terms_ : ndarray of str                      the model's terms (kept features, then missing indicators)
    coef_ : ndarray, shape (1, n_terms)          on the original scale of the (imputed) features
    intercept_ : ndarray, shape (1,)
    classes_ : ndarray [0, 1]
    n_iter_ : int                                Newton rounds used
    converged_ : bool
    loglik_ : float                              pooled log-likelihood at the solution
    n_samples_, n_positives_, n_sites_ : int
    covariance_ : ndarray                        covariance of ``[intercept, coef]`` on the original scale
    preprocessor_ : FeaturePreprocessor          imputation, indicators and standardization (pooled)
    dropped_terms_ : list of str                 constant columns left out of the model
    history_ : list of dict                      one entry per round: round, loglik, objective, step
    study_id_ : str or None
    """

    def __init__(
        self,
        penalty: str = "none",
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 25,
        tol: float = 1e-8,
        encrypted: bool = True,
        missing_values: str | None = None,
        features: list[str] | None = None,
        dp: dict | float | None = None,
    ):
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.encrypted = encrypted
        self.missing_values = missing_values
        self.features = features
        self.dp = dp

    # ------------------------------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        problems = []
        if self.penalty not in ("none", "l2"):
            problems.append(f"penalty must be 'none' or 'l2', got {self.penalty!r}")
        if not (isinstance(self.C, int | float) and np.isfinite(self.C) and self.C > 0):
            problems.append(f"C must be a positive finite number, got {self.C!r}")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            problems.append(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, int | float) and self.tol > 0):
            problems.append(f"tol must be a positive number, got {self.tol!r}")
        if self.missing_values is not None and self.missing_values not in MISSING_STRATEGIES:
            problems.append(f"missing_values must be None or one of {list(MISSING_STRATEGIES)}, got "
                            f"{self.missing_values!r}")
        if self.features is not None and (
            isinstance(self.features, str) or not all(isinstance(f, str) for f in self.features)
            or len(set(self.features)) != len(self.features) or not len(self.features)
        ):
            problems.append(f"features must be None or a non-empty list of distinct column names, got "
                            f"{self.features!r}")
        if problems:
            raise ValueError("Invalid parameters for FederatedLogisticRegression: " + "; ".join(problems))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # binary only
        tags.input_tags.allow_nan = self._allow_nan()
        return tags

    def _allow_nan(self) -> bool:
        # NaN is imputed (mean_impute*), except with missing_values="native"; None takes the study's
        # strategy, mean imputation for a local table
        return self.missing_values != "native"

    def fit(self, X: Any, y: Any = None, *, callback: ProgressCallback | None = None):
        """Train on every site of a federation, or on one local table.

        Parameters
        ----------
        X : ehr_fed.federation.Federation, DataFrame or array-like of shape (n_rows, n_features)
            A federation: the federated fit (``y`` must be None; the labels stay at the sites). A table:
            a local fit on these rows through the same protocol, as the one site of an in-process,
            plaintext federation (see :mod:`ehr_fed.models.sklearn_api`); a feature table may carry its
            labels in a ``label`` column.
        y : array-like of shape (n_rows,), optional
            Labels of a local table: any two values (``classes_``; ``classes_[1]`` is the positive class).
        callback : callable, optional
            Called after every round with a dict (``round``, ``loglik``, ``objective``, ``step``,
            ``converged``): progress reporting for notebooks and the CLI.
        """
        import ehr_fed.models.logreg_tasks  # noqa: F401  (registers the site tasks)
        from ehr_fed.models.sklearn_api import is_federation, local_federation, local_training_table

        if is_federation(X):
            if y is not None:
                raise ValueError("FederatedLogisticRegression.fit(federation) takes no y: the labels stay at "
                                 "the sites (their 'label' column)")
            self._check_params()
            self._check_encryption(X)
            return self._fit_limited(X, callback, np.array([0, 1]), named=True)
        self._check_params()
        table, classes, named = local_training_table(self, X, y, allow_nan=self._allow_nan())
        with local_federation(table) as fed:
            return self._fit_limited(fed, callback, classes, named=named)

    def _fit_limited(self, federation: Any, callback: ProgressCallback | None, classes: np.ndarray,
                     named: bool):
        # In-process sites are threads of this process, computing at the same time: one BLAS thread each
        # avoids oversubscribing the cores (sites in other processes are not affected).
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(federation, callback)
        self.classes_ = classes
        if not named:  # fitted on an array: like scikit-learn, no feature_names_in_
            del self.feature_names_in_
        return self

    def _fit(self, federation: Any, callback: ProgressCallback | None):
        study = _study_spec(federation)
        names = self._feature_names(federation, study)
        strategy = self.missing_values or getattr(study, "missing_values", None) or DEFAULT_MISSING
        private = _private_session(self, federation)
        if private is not None:  # differentially private fit: its own fixed release plan
            from ehr_fed.models.logreg_private import fit_private

            fit_private(self, federation, study, names, strategy, *private, callback=callback)
            self.study_id_ = _study_id(federation, study)
            self.study_spec_ = study if hasattr(study, "model_dump") else None
            self._set_coefficients()
            return self
        n_sites = len(federation.site_ids)
        rows = federation.secure_sum(ROW_TASK, {}, {"n": (ROW_BOUND, n_sites)})
        n_total = float(np.asarray(rows["n"]).ravel()[0])
        self._members = sorted(getattr(rows, "contributors", None) or federation.site_ids)
        if not n_total > 0:  # NaN: suppressed by the decrypting site
            raise ValueError("the federation holds too few rows to fit a model (the pooled row count was "
                             "suppressed or is 0)")
        setup = {ROW_TASK: {}, PREP_TASK: {"features": names, "label": "label"}}
        sums = federation.secure_sum(PREP_TASK, setup[PREP_TASK], _preprocess_layout(n_total, n_sites))
        rule = rule_settings(self, str(strategy))
        design = derive_design(rows, sums, setup, rule, bool(self.fit_intercept))  # as every site derives it
        prep, n_pos = design.prep, design.n_pos
        if prep.dropped_terms_:
            warnings.warn(
                f"terms left out of the model: {prep.dropped_terms_} (constant or never observed in the pooled "
                "data, or their counts were suppressed by the sites' min_cell_count)",
                UserWarning, stacklevel=2,
            )
        if not np.isfinite(n_pos):
            raise ValueError("the pooled number of positive labels was suppressed (fewer than the sites' "
                             "min_cell_count): too few events to fit a model")
        if not (0 < n_pos < n_total):
            raise ValueError(
                f"the pooled label has only one class ({int(n_total)} rows, {int(n_pos)} positive); "
                "logistic regression needs both 0 and 1"
            )
        check_model_size(federation, len(design.terms), model="logistic regression")  # every site, before round 1
        if self.penalty == "none":
            sep = separated_binary_terms(sums, names, list(prep.terms_))
            if sep:
                raise PerfectSeparationError(_separation_message(sep, "an empty cell in its table with "
                                                                       "the label"), sep)
        base = {"preprocess": design_state(prep), "fit_intercept": bool(self.fit_intercept), "label": "label",
                "rule": rule, "setup": setup}
        try:
            self._newton(federation, design, base, [signed_release(rows), signed_release(sums)], n_sites,
                         callback)
        finally:
            from ehr_fed.models.logreg_tasks import clear_design_cache

            clear_design_cache()
        self._record_fit(prep, names, n_total, n_pos, n_sites)
        self.study_id_ = _study_id(federation, study)
        self.study_spec_ = study if hasattr(study, "model_dump") else None
        self._set_coefficients()
        return self

    def _record_fit(self, prep: FeaturePreprocessor, names: list[str], n_total: float, n_pos: float,
                    n_sites: int) -> None:
        """The fitted attributes every fit (exact or private) sets from its preprocessing and counts."""
        self.preprocessor_ = prep
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self.terms_ = prep.terms_.copy()
        self.dropped_terms_ = list(prep.dropped_terms_)
        self.classes_ = np.array([0, 1])
        self.n_samples_, self.n_positives_, self.n_sites_ = int(round(n_total)), int(round(n_pos)), n_sites

    def _check_encryption(self, federation: Any) -> None:
        fed_encrypted = getattr(federation, "encrypted", None)
        if self.encrypted and fed_encrypted is False:
            raise ValueError(
                "FederatedLogisticRegression(encrypted=True) needs an encrypting federation, but this one was "
                "created with encrypted=False; create it with encrypted=True or pass encrypted=False"
            )

    def _feature_names(self, federation: Any, study: Any) -> list[str]:
        replies = federation.query("models.schema", {})
        per_site = {s: list(r["features"]) for s, r in replies.items()}
        expected = _study_features(study)
        if expected is None:
            expected = next(iter(per_site.values()))
        bad = {s: cols for s, cols in per_site.items() if cols != expected}
        if bad:
            diffs = "\n".join(f"site {s}:\n{column_diff(expected, cols)}" for s, cols in bad.items())
            raise ValueError(
                f"{len(bad)} site(s) have feature columns that differ from the expected schema "
                f"({len(expected)} features):\n{diffs}\nHarmonize every site with the same study spec."
            )
        if self.features is None:
            return expected
        unknown = [f for f in self.features if f not in expected]
        if unknown:
            raise ValueError(f"features {unknown} are not feature columns of the sites' tables; valid "
                             f"features: {expected}")
        return list(self.features)

    def _newton(self, fed: Any, design: Design, base: dict[str, Any], transcript: list[dict[str, Any]],
                n_sites: int, callback: ProgressCallback | None) -> None:
        """Newton rounds by the rule every site replays (:class:`~ehr_fed.models.logreg_transcript.ExactNewton`):
        each request carries the signed releases so far and the coefficients of the earlier rounds."""
        rule = ExactNewton(design, base["rule"], self.fit_intercept)
        history: list[dict[str, Any]] = []
        path: list[np.ndarray] = []
        while not rule.finished:
            beta = rule.beta
            stats = fed.secure_sum(NEWTON_TASK, newton_params(base, beta, path, transcript),
                                   _newton_layout(design.n_total, n_sites, beta, self.fit_intercept))
            _check_same_sites(stats, getattr(self, "_members", None), rule.rounds + 1)
            transcript.append(signed_release(stats))
            path.append(beta)
            entry = rule.update(stats, beta)
            history.append(entry)
            if callback:
                callback(entry)
            if rule.separation is not None:
                terms, evidence = rule.separation
                raise PerfectSeparationError(_separation_message(terms, evidence), terms)
        if rule.info is None:
            raise RuntimeError("no Newton round completed")
        if not rule.converged:
            warnings.warn(
                f"FederatedLogisticRegression did not converge in {self.max_iter} rounds (last step "
                f"{history[-1]['step']:.3g} > tol={self.tol:g}); increase max_iter", ConvergenceWarning,
                stacklevel=3,
            )
        self.beta_, self.information_, self.loglik_ = rule.beta, rule.info, rule.loglik
        self.n_iter_, self.converged_, self.history_ = len(history), rule.converged, history
        # the signed releases the coefficients follow from: the model file carries them, so a site can check
        # a model it is asked to evaluate against the training it took part in (ehr_fed.evaluation.provenance)
        self.transcript_ = {"kind": "logreg", "base": base, "beta_path": [[float(v) for v in b] for b in path],
                            "transcript": list(transcript)}

    def _set_coefficients(self) -> None:
        prep = self.preprocessor_
        coef, intercept, T = original_scale(self.beta_, prep.center_, prep.scale_, self.fit_intercept)
        self.coef_ = coef[None, :]
        self.intercept_ = np.array([intercept])
        info = self.information_
        cov_std = np.linalg.inv(info)
        self.covariance_ = T @ cov_std @ T.T

    # ------------------------------------------------------------------------------------- predict
    def _design(self, X: Any) -> np.ndarray:
        from ehr_fed.models.sklearn_api import check_predict_X

        check_is_fitted(self, "coef_")
        arr = check_predict_X(self, X, allow_nan=self._allow_nan())
        return design_matrix(arr, self.preprocessor_.get_state())

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of label 1 for each row of the feature table ``X``, shape (n_rows,)."""
        Z = self._design(X)
        if self.fit_intercept:
            return self.beta_[0] + Z @ self.beta_[1:]
        return Z @ self.beta_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of label 0 and 1, shape (n_rows, 2)."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted label (``classes_[1]`` when its probability > 0.5), shape (n_rows,)."""
        positive = self.decision_function(X) > 0  # checks that the model is fitted
        return self.classes_[positive.astype(int)]

    # ----------------------------------------------------------------------------- inference / export
    def summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """Coefficient table: coef, std err, z, p-value, confidence interval, odds ratio and its interval.

        See :func:`ehr_fed.models.logreg_inference.summary_table`.
        """
        from ehr_fed.models.logreg_inference import summary_table

        check_is_fitted(self, "coef_")
        return summary_table(self, alpha)

    def to_sklearn(self):
        """A fitted scikit-learn ``Pipeline`` (preprocessing + ``LogisticRegression``) with the same output."""
        from ehr_fed.models.logreg_export import to_sklearn_pipeline

        check_is_fitted(self, "coef_")
        pipe = to_sklearn_pipeline(self)
        pipe.steps[-1][1].classes_ = self.classes_.copy()  # the labels of fit (0/1 for a federation)
        if not hasattr(self, "feature_names_in_"):  # fitted on an array: the pipeline takes arrays too
            del pipe.steps[0][1].feature_names_in_
        return pipe

    def save(self, path: Any) -> None:
        """Write the model as versioned JSON (see :mod:`ehr_fed.models.persistence`)."""
        from ehr_fed.models.logreg_export import save_logreg
        from ehr_fed.models.sklearn_api import check_savable

        check_is_fitted(self, "coef_")
        check_savable(self)
        save_logreg(self, path)
        if getattr(self, "dp_", None) is not None:  # the privacy spent travels with the model
            from ehr_fed.models.logreg_private import attach_dp_record

            attach_dp_record(path, self.dp_)


def _private_session(model: Any, federation: Any):
    from ehr_fed.models.logreg_private import resolve_dp

    return resolve_dp(model, federation)


def signed_release(result: Any) -> dict[str, Any]:
    """The signed release record of a secure sum (the transcript entry every later Newton request carries)."""
    record = getattr(result, "release", None)
    if not isinstance(record, dict):
        raise FederationError(
            "the federation returned a secure sum without its signed release record; the sites replay a logistic "
            "regression from these records and refuse Newton rounds without them (use ehr_fed.federation.Federation)")
    return record


def _study_spec(federation: Any) -> Any:
    """The federation's study spec (``study_spec``, or ``study`` when it is not just an id), or None."""
    for attr in ("study_spec", "study"):
        spec = getattr(federation, attr, None)
        if spec is not None and not isinstance(spec, str):
            return spec
    return None


def _study_id(federation: Any, study: Any) -> str | None:
    sid = getattr(study, "study_id", None) or getattr(federation, "study", None)
    return sid if isinstance(sid, str) and sid else None


def _study_features(study: Any) -> list[str] | None:
    feats = getattr(study, "features", None)
    if not feats:
        return None
    return [f if isinstance(f, str) else getattr(f, "name", None) or f["name"] for f in feats]


def _separation_message(terms: list[str], evidence: str) -> str:
    return (
        f"Perfect separation: the term(s) {terms} predict the label (quasi-)perfectly ({evidence}); the "
        "maximum-likelihood estimate does not exist. Remove or merge these terms, or fit with penalty='l2'."
    )


def _check_same_sites(result: Any, members: list[str] | None, rnd: int) -> None:
    """Every Newton round must combine exactly the sites whose rows the model counts (a site that refused or
    dropped out would leave a model that reports rows it was not fitted on)."""
    got = getattr(result, "contributors", None)
    if members is None or not got or sorted(got) == members:
        return
    missing = getattr(result, "missing", {}) or {}
    lines = "\n  ".join(f"{s}: {why}" for s, why in missing.items())
    raise RuntimeError(
        f"Newton round {rnd} combines sites {sorted(got)}, but the model counts the rows of {members}; logistic "
        f"regression needs the same sites in every round. Missing:\n  {lines}\nFix the failing site and fit again."
    )


def _preprocess_layout(n_total: float, n_sites: int) -> dict[str, tuple[float, int]]:
    """Bounds for ``models.preprocess_sums`` from the pooled row count ``N`` and ``|x| <= VALUE_BOUND``.

    A site has at most ``N`` rows, so its counts are <= N, its sums <= N VALUE_BOUND and its sums of
    squares <= N VALUE_BOUND^2.
    """
    from ehr_fed.models.logreg_tasks import VALUE_BOUND

    counts = (n_total, n_sites)
    layout = {name: counts for name in ("n", "n_pos", "n_obs", "n_nonbinary", "n_one", "n_one_pos",
                                        "n_obs_pos", "n_miss_pos")}
    layout["sum"] = (n_total * VALUE_BOUND, n_sites)
    layout["sumsq"] = (n_total * VALUE_BOUND**2, n_sites)
    return layout


def _newton_layout(n_total: float, n_sites: int, beta: np.ndarray,
                   fit_intercept: bool) -> dict[str, tuple[float, int]]:
    """Bounds for ``logreg.newton`` from public quantities (see :mod:`ehr_fed.models.logreg_newton`)."""
    return {
        "gradient": (2.0 * n_total, n_sites),  # 2x: headroom for rounding in the standardization
        "hessian": (2.0 * n_total, n_sites),
        "loglik": (loglik_bound(n_total, beta, fit_intercept), n_sites),
    }
