"""Helpers shared by the federated models.

* :func:`check_is_fitted` and :func:`validate_feature_table`: the scikit-learn contract for fitted state and
  for the feature table a model is asked to score (a table whose columns disagree with the training schema
  fails with a :mod:`difflib` diff of the columns).
* Federated preprocessing. Every site returns, through one secure sum, per feature ``j``::

      n            rows                          n_obs[j]     rows where x_j is observed
      sum[j]       sum of observed x_j           sumsq[j]     sum of observed x_j ** 2
      n_nonbinary  observed x_j not in {0, 1}    sum_xy[j]    sum of y over rows where x_j == 1 ... (see below)

  From these pooled sums :meth:`FeaturePreprocessor.from_sums` derives, exactly as a pooled computation
  would, the design the models use (the study spec's ``missing_values`` chooses it):

  ``mean_impute_with_indicator``
      a missing ``x_j`` is replaced by the pooled mean of its observed values, and a 0/1 indicator column
      ``missing_<name>`` is added for every feature with at least one (but not only) missing values;
  ``mean_impute``
      the same imputation without the indicators;
  ``native``
      no imputation: the model must handle NaN itself (logistic regression refuses NaN).

  A feature whose pooled count of observed values was suppressed by the decrypting site (fewer than its
  ``min_cell_count``) is dropped like a feature that is never observed. Binary features take their sums
  from the exact counts.

  Every design column is then standardized with the pooled mean and the pooled (ddof=0) standard deviation
  of the imputed column. Columns that are constant in the pooled data (a feature never observed, a feature
  with one value, an indicator that is always 0 or always 1) carry no information and are dropped; they are
  listed in ``dropped_terms_``.

:class:`FeaturePreprocessor` is a genuine scikit-learn transformer (``fit`` computes the same sums locally),
so exported pipelines use the toolkit's own preprocessing code.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError  # noqa: F401  (re-exported: the error models raise)
from sklearn.utils.validation import check_is_fitted as _sk_check_is_fitted

#: columns of the common feature table that are not features (docs/internals.md, section 3)
META_COLUMNS = ("site_id", "person_key", "index_time", "label")
MISSING_STRATEGIES = ("mean_impute_with_indicator", "mean_impute", "native")
DEFAULT_MISSING = "mean_impute_with_indicator"
INDICATOR_PREFIX = "missing_"
#: names of the per-feature sums returned by :func:`site_preprocessing_sums`
PER_FEATURE_SUMS = ("n_obs", "sum", "sumsq", "n_nonbinary", "n_one", "n_one_pos", "n_obs_pos", "n_miss_pos")
#: a column whose pooled variance is below this fraction of its mean square is constant (the raw sums are
#: fixed-point encoded with a quantum of about ``1e-16 * bound``, so exact zeros cannot be relied on)
_CONSTANT_RTOL = 1e-9


def check_is_fitted(estimator: Any, attribute: str = "coef_") -> None:
    """Raise scikit-learn's :class:`~sklearn.exceptions.NotFittedError` unless ``estimator`` has ``attribute``."""
    _sk_check_is_fitted(estimator, attributes=attribute)


def column_diff(expected: Sequence[str], got: Sequence[str]) -> str:
    """A unified diff of two column lists (``-`` expected only, ``+`` got only)."""
    lines = difflib.unified_diff(list(expected), list(got), "expected", "got", lineterm="", n=1)
    return "\n".join(lines)


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The feature columns of a feature table: every column that is not a meta column."""
    return [str(c) for c in df.columns if c not in META_COLUMNS]


def validate_feature_table(
    X: Any, feature_names: Sequence[str], estimator_name: str
) -> np.ndarray:
    """Return the features of ``X`` as a float array in training order, or explain the mismatch.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_rows, n_features)
        A feature table (meta columns such as ``site_id`` and ``label`` are ignored, extra columns too), or
        an array whose columns are already in the order of ``feature_names``.
    feature_names : sequence of str
        The features the model was trained with (``feature_names_in_``).
    estimator_name : str
        Used in the error messages.

    Returns
    -------
    ndarray of float64, shape (n_rows, len(feature_names))
    """
    names = list(feature_names)
    if isinstance(X, pd.DataFrame):
        present = set(map(str, X.columns))
        missing = [n for n in names if n not in present]
        if missing:
            got = feature_columns(X)
            raise ValueError(
                f"X has {len(got)} features, but {estimator_name} is expecting {len(names)} features as "
                f"input. Missing feature columns: {missing}. Column diff (- expected, + got):\n"
                f"{column_diff(names, got)}"
            )
        frame = X[names]
        try:
            arr = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            bad = [n for n in names if not pd.api.types.is_numeric_dtype(frame[n])]
            raise ValueError(f"feature columns must be numeric (float64, NaN = missing); not numeric: {bad}") from exc
        return _refuse_inf(arr, names, estimator_name)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"Expected a 2-D feature table, got an array of shape {arr.shape}.")
    if arr.shape[1] != len(names):
        raise ValueError(
            f"X has {arr.shape[1]} features, but {estimator_name} is expecting {len(names)} features as input."
        )
    return _refuse_inf(arr, names, estimator_name)


def _refuse_inf(arr: np.ndarray, names: Sequence[str], estimator_name: str) -> np.ndarray:
    """``arr``, unless a value is infinite (missing values are NaN; inf is an error, never dropped)."""
    inf = np.isinf(arr)
    if inf.any():
        cols = [str(names[j]) for j in np.flatnonzero(inf.any(axis=0))]
        raise ValueError(
            f"{estimator_name}: the feature column(s) {cols} hold {int(inf.sum())} infinite value(s) (inf); "
            "features must be finite (NaN marks a missing value): fix or blank these values upstream"
        )
    return arr


def site_preprocessing_sums(X: np.ndarray, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One site's contribution to the pooled preprocessing sums.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features), NaN = missing
    y : ndarray of shape (n_rows,), 0/1 labels, optional (the label cross-counts are then 0)

    Returns
    -------
    dict of name -> ndarray
        ``n`` (1,), ``n_pos`` (1,) and every name of :data:`PER_FEATURE_SUMS` with shape (n_features,).
        ``n_one`` counts ``x_j == 1``, ``n_one_pos`` those with label 1, ``n_obs_pos`` observed rows with
        label 1 and ``n_miss_pos`` missing rows with label 1: the cells of the label x feature tables that
        reveal separation by a binary feature or a missing indicator.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.zeros(X.shape[0]) if y is None else np.asarray(y, dtype=np.float64)
    names = ("n_obs", "sum", "sumsq", "n_nonbinary", "n_one", "n_one_pos", "n_obs_pos", "n_miss_pos")
    out = {name: np.zeros(X.shape[1]) for name in names}
    pos = y == 1.0
    n_pos = float(y.sum())
    for j in range(X.shape[1]):  # one contiguous column at a time: a few passes over the rows
        col = X[:, j]
        obs = ~np.isnan(col)
        x0 = np.where(obs, col, 0.0)
        one = x0 == 1.0
        out["n_obs"][j] = np.count_nonzero(obs)
        out["sum"][j] = x0.sum()
        out["sumsq"][j] = np.dot(x0, x0)
        out["n_nonbinary"][j] = np.count_nonzero(obs & (x0 != 0.0) & ~one)
        out["n_one"][j] = np.count_nonzero(one)
        out["n_one_pos"][j] = np.count_nonzero(one & pos)
        out["n_obs_pos"][j] = np.count_nonzero(obs & pos)
        out["n_miss_pos"][j] = n_pos - out["n_obs_pos"][j]
    return {"n": np.array([float(X.shape[0])]), "n_pos": np.array([n_pos]), **out}


def add_sums(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Element-wise sum of several sites' sums (what ``Federation.secure_sum`` returns)."""
    return {k: np.sum([np.asarray(p[k], dtype=float) for p in parts], axis=0) for k in parts[0]}


def _constant(var: float, mean_square: float) -> bool:
    return not var > _CONSTANT_RTOL * max(mean_square, 1e-300)


class FeaturePreprocessor(TransformerMixin, BaseEstimator):
    """Mean imputation, missing indicators and standardization of a feature table.

    Parameters
    ----------
    missing_values : {"mean_impute_with_indicator", "mean_impute", "native"}
        How missing values (NaN) are handled (see the module docstring).
    standardize : bool
        Centre and scale every design column (``False`` keeps imputed values on their own scale).
    center : bool
        With ``standardize``: subtract the pooled mean and divide by the standard deviation (``True``, for
        models with an intercept), or only divide by the root mean square (``False``, for models without an
        intercept, where centring would change the model). Both give ``sum z^2 = n`` over the pooled rows.

    Attributes
    ----------
    feature_names_in_ : ndarray of str, shape (n_features,)
    n_features_in_ : int
    mean_ : ndarray, shape (n_features,)
        Pooled mean of the observed values of each feature (the imputation value; 0 if never observed).
    terms_ : ndarray of str, shape (n_terms,)
        Output columns: kept features, then ``missing_<name>`` indicators.
    term_source_ : ndarray of int, shape (n_terms,)
        For each term, the index of its feature.
    term_is_indicator_ : ndarray of bool, shape (n_terms,)
    center_, scale_ : ndarray, shape (n_terms,)
        The output is ``(value - center_) / scale_``.
    dropped_terms_ : list of str
        Columns left out because they are constant in the pooled data.
    sums_ : dict of str -> list of float
        The pooled sums the state was derived from.
    """

    def __init__(self, missing_values: str = DEFAULT_MISSING, standardize: bool = True, center: bool = True):
        self.missing_values = missing_values
        self.standardize = standardize
        self.center = center

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing_values != "native"  # NaN is imputed unless kept natively
        return tags

    def _allow_nan(self) -> bool:
        return self.missing_values != "native"

    def _input_names(self) -> list[str]:
        """``feature_names_in_``, or ``x0, x1, ...`` when fitted on an array without names."""
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{j}" for j in range(self.n_features_in_)]

    # -- fitting -------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> FeaturePreprocessor:
        """Compute the state from a local table (the same sums a federation would add up).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, n_features)
            A feature table (its meta columns are ignored) or a numeric array; NaN = missing, ``inf`` is
            refused.
        y : array-like of shape (n_rows,), optional
            0/1 labels: used only for the label cross-counts kept in ``sums_`` (other values are ignored,
            as scikit-learn transformers ignore ``y``).
        """
        from ehr_fed.models.sklearn_api import validate_X

        if isinstance(X, pd.DataFrame):
            X = X[[c for c in X.columns if c not in META_COLUMNS]]
        arr = validate_X(self, X, reset=True, allow_nan=self._allow_nan())
        names = self._input_names()
        yy = None
        if y is not None:
            yy = np.asarray(y).ravel()
            ok = yy.shape == (arr.shape[0],) and pd.api.types.is_numeric_dtype(yy) and np.isin(yy, (0, 1)).all()
            yy = yy.astype(np.float64) if ok else None
        return self._fit_sums(site_preprocessing_sums(arr, yy), names, named=hasattr(self, "feature_names_in_"))

    @classmethod
    def from_sums(
        cls,
        sums: dict[str, Any],
        feature_names: Sequence[str],
        missing_values: str = DEFAULT_MISSING,
        standardize: bool = True,
        center: bool = True,
    ) -> FeaturePreprocessor:
        """A fitted preprocessor from pooled sums (see :func:`site_preprocessing_sums`)."""
        return cls(missing_values=missing_values, standardize=standardize, center=center)._fit_sums(
            sums, feature_names
        )

    def _fit_sums(self, sums: dict[str, Any], feature_names: Sequence[str],
                  named: bool = True) -> FeaturePreprocessor:
        if self.missing_values not in MISSING_STRATEGIES:
            raise ValueError(
                f"missing_values={self.missing_values!r} is not one of {list(MISSING_STRATEGIES)}."
            )
        s = {k: np.asarray(v, dtype=float).ravel() for k, v in sums.items()}
        names = [str(n) for n in feature_names]
        n = float(s["n"][0])
        if not n > 0:
            raise ValueError("cannot fit preprocessing on an empty feature table (0 rows)")
        n_obs = s["n_obs"]
        # binary features: the sums are counts, exact whatever the encoding precision of the raw sums
        binary = s["n_nonbinary"] == 0
        total = np.where(binary, s["n_one"], s["sum"])
        sumsq = np.where(binary, s["n_one"], s["sumsq"])
        usable = np.isfinite(n_obs) & np.isfinite(total) & np.isfinite(sumsq) & (n_obs > 0)
        mean = np.divide(total, n_obs, out=np.zeros_like(total), where=usable)
        terms, source, indicator, center, scale, dropped = [], [], [], [], [], []

        def add(name: str, j: int, is_ind: bool, m: float, var: float, meansq: float) -> None:
            # m, var, meansq: pooled mean, variance (ddof=0) and mean square of the imputed column
            if self.center:
                if _constant(var, meansq):
                    dropped.append(name)
                    return
                c, sc = m, float(np.sqrt(var))
            else:
                if not meansq > 0.0:
                    dropped.append(name)
                    return
                c, sc = 0.0, float(np.sqrt(meansq))
            terms.append(name)
            source.append(j)
            indicator.append(is_ind)
            center.append(c if self.standardize else 0.0)
            scale.append(sc if self.standardize else 1.0)

        for j, name in enumerate(names):
            if not usable[j]:  # never observed, or suppressed (fewer observed values than a cell may hold)
                dropped.append(name)
                continue
            var = max(sumsq[j] - n_obs[j] * mean[j] ** 2, 0.0) / n
            add(name, j, False, mean[j], var, (sumsq[j] + (n - n_obs[j]) * mean[j] ** 2) / n)
        if self.missing_values == "mean_impute_with_indicator":
            for j, name in enumerate(names):
                p = 1.0 - n_obs[j] / n
                if usable[j] and p > 0.0:
                    add(INDICATOR_PREFIX + name, j, True, p, p * (1.0 - p), p)
        if named:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = len(names)
        self.mean_ = mean
        self.terms_ = np.asarray(terms, dtype=object)
        self.term_source_ = np.asarray(source, dtype=int)
        self.term_is_indicator_ = np.asarray(indicator, dtype=bool)
        self.center_ = np.asarray(center, dtype=float)
        self.scale_ = np.asarray(scale, dtype=float)
        self.dropped_terms_ = dropped
        self.n_missing_ = n - n_obs
        self.sums_ = {k: v.tolist() for k, v in s.items()}
        return self

    # -- transforming --------------------------------------------------------------------------------
    def transform(self, X: Any) -> np.ndarray:
        """The design matrix, shape (n_rows, n_terms).

        ``X`` is a feature table holding the fitted features in the order of fit (meta and unused columns
        are ignored), or an array with ``n_features_in_`` columns; ``inf`` is refused.
        """
        from ehr_fed.models.sklearn_api import check_predict_X

        check_is_fitted(self, "terms_")
        arr = check_predict_X(self, X, allow_nan=self._allow_nan())
        return design_matrix(arr, self.get_state())

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: kept features, then ``missing_<name>`` indicators.

        ``input_features`` (optional) renames the inputs; it must equal ``feature_names_in_`` when the
        preprocessor was fitted with names, and have ``n_features_in_`` entries otherwise.
        """
        check_is_fitted(self, "terms_")
        if input_features is None:
            return self.terms_.copy()
        names = [str(n) for n in input_features]
        if len(names) != self.n_features_in_:
            raise ValueError(f"input_features should have length equal to number of features "
                             f"({self.n_features_in_}), got {len(names)}")
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names != [str(n) for n in fitted]:
            raise ValueError(f"input_features is not equal to feature_names_in_: got {names}, fitted with "
                             f"{list(fitted)}")
        out = [INDICATOR_PREFIX + names[j] if ind else names[j]
               for j, ind in zip(self.term_source_, self.term_is_indicator_, strict=True)]
        return np.asarray(out, dtype=object)

    # -- plain-data state (sent to sites, written to model files) ------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The fitted state as JSON-ready plain data (what sites need to build the design)."""
        check_is_fitted(self, "terms_")
        return {
            "missing_values": self.missing_values,
            "standardize": bool(self.standardize),
            "center_columns": bool(self.center),
            "feature_names": self._input_names(),
            "mean": [float(v) for v in self.mean_],
            "terms": [str(t) for t in self.terms_],
            "term_source": [int(v) for v in self.term_source_],
            "term_is_indicator": [bool(v) for v in self.term_is_indicator_],
            "center": [float(v) for v in self.center_],
            "scale": [float(v) for v in self.scale_],
            "dropped_terms": list(self.dropped_terms_),
            "sums": self.sums_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeaturePreprocessor:
        """Inverse of :meth:`get_state`."""
        self = cls(missing_values=state["missing_values"], standardize=state["standardize"],
                   center=state.get("center_columns", True))
        self.feature_names_in_ = np.asarray(state["feature_names"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.mean_ = np.asarray(state["mean"], dtype=float)
        self.terms_ = np.asarray(state["terms"], dtype=object)
        self.term_source_ = np.asarray(state["term_source"], dtype=int)
        self.term_is_indicator_ = np.asarray(state["term_is_indicator"], dtype=bool)
        self.center_ = np.asarray(state["center"], dtype=float)
        self.scale_ = np.asarray(state["scale"], dtype=float)
        self.dropped_terms_ = list(state.get("dropped_terms", []))
        self.sums_ = state.get("sums", {})
        n = self.sums_.get("n", [np.nan])[0]
        self.n_missing_ = n - np.asarray(self.sums_.get("n_obs", np.full(self.n_features_in_, n)), dtype=float)
        return self


def design_state(prep: FeaturePreprocessor) -> dict[str, Any]:
    """The plain-data state a site builds its design from: :meth:`FeaturePreprocessor.get_state` without the
    pooled sums and the dropped terms (the coordinator sends it; every site derives it again from the released
    sums and refuses one that differs)."""
    return {k: v for k, v in prep.get_state().items() if k not in ("sums", "dropped_terms")}


def design_matrix(X: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    """Build the (standardized) design from a float feature array and a preprocessor state.

    This is the function sites run on their own rows; it uses only the plain-data ``state``.
    """
    return design_with_intercept(X, state, fit_intercept=False)


def design_with_intercept(X: np.ndarray, state: dict[str, Any], fit_intercept: bool) -> np.ndarray:
    """:func:`design_matrix`, with a leading column of ones when ``fit_intercept``.

    Built one column at a time into a column-major array (each step touches one contiguous column of
    ``X`` and of the result), so a site's design costs a few passes over its rows, not one full-size
    temporary per operation. Element by element it computes exactly ``design_matrix``'s values.
    """
    X = np.asarray(X, dtype=np.float64)
    src = np.asarray(state["term_source"], dtype=int)
    ind = np.asarray(state["term_is_indicator"], dtype=bool)
    mean = np.asarray(state["mean"], dtype=float)[src]
    center = np.asarray(state["center"], dtype=float)
    scale = np.asarray(state["scale"], dtype=float)
    native = state["missing_values"] == "native"
    offset = 1 if fit_intercept else 0
    Z = np.empty((X.shape[0], len(src) + offset), dtype=np.float64, order="F")
    if fit_intercept:
        Z[:, 0] = 1.0
    bad: list[str] = []
    for k, j in enumerate(src):
        col = Z[:, k + offset]
        miss = np.isnan(X[:, j])
        if ind[k]:
            np.copyto(col, miss)
        else:
            if native and miss.any():
                bad.append(state["terms"][k])
            np.copyto(col, X[:, j])
            col[miss] = mean[k]
        col -= center[k]
        col /= scale[k]
    if bad:
        raise ValueError(
            f"missing values (NaN) in {sorted(set(bad))}, and missing_values='native' keeps them; this model "
            "cannot use NaN: choose missing_values='mean_impute_with_indicator' or 'mean_impute'."
        )
    return Z
