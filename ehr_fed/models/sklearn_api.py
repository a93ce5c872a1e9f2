"""The scikit-learn side of the federated estimators: local fits, input checks and label encoding.

Local fits
    ``fit(X, y)`` on a DataFrame or an array trains on the caller's own table through exactly the code a
    federation runs: the table becomes the one site of an in-process :class:`~ehr_fed.federation.Federation`,
    the coordinator sends the same tasks, the site computes the same statistics and returns them through the
    same secure-sum protocol. Two things differ, both because nothing leaves the process:

    * the sums travel in plaintext (Paillier protects one site's numbers from the coordinator; here the
      coordinator is the data's owner), which keeps a local fit as fast as scikit-learn's checks need;
    * the site runs under :func:`local_policy`, which allows a single site (``min_sites=1``) and applies no
      small-cell suppression (``min_cell_count=1``): a model fitted on one's own rows is not a release.

    The local policy is built only inside :func:`local_federation`, whose only site is the table given to
    that same ``fit`` call and which is closed when the fit ends. No estimator parameter lowers a policy,
    so ``fit(federation)`` always runs under the sites' own policies (``min_sites`` 3 by default): a
    federation cannot reach the local policy.

Input checks
    :func:`local_training_table` validates ``X`` and ``y`` as scikit-learn does (``validate_data``: empty,
    1-D, sparse, complex and infinite input are refused with scikit-learn's messages; ``y`` of shape
    ``(n, 1)`` is raveled with a ``DataConversionWarning``) and encodes any two labels as 0/1 by
    ``classes_``. :func:`check_predict_X` does the same for the tables a fitted model scores.

Feature tables
    A DataFrame is read as a feature table: the meta columns (``site_id``, ``person_key``, ``index_time``,
    ``label``) are never features, and columns the model does not use are ignored, but the model's features
    must all be present and in the order of fit (scikit-learn's rule), else the error lists what is unseen,
    missing or out of order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ehr_fed.models.base import META_COLUMNS, column_diff

#: the site id of the one site of a local fit
LOCAL_SITE = "local"


def is_federation(X: Any) -> bool:
    """Whether ``fit`` was given a federation (anything with ``secure_sum``) rather than a table."""
    return hasattr(X, "secure_sum") and hasattr(X, "site_ids")


def local_policy():
    """The policy of the single site of a local fit: one site, no small-cell suppression.

    Used only by :func:`local_federation` (see the module docstring).
    """
    from ehr_fed.privacy import PrivacyPolicy

    # max_params_fraction=1: at most one coefficient per row (the largest value a policy allows)
    return PrivacyPolicy(min_cell_count=1, min_sites=1, max_params_fraction=1.0)


@contextmanager
def local_federation(table: pd.DataFrame) -> Iterator[Any]:
    """A plaintext in-process federation whose one site holds ``table``, closed on exit."""
    from ehr_fed.federation import Federation

    fed = Federation.in_process({LOCAL_SITE: table}, policy=local_policy(), encrypted=False)
    try:
        yield fed
    finally:
        fed.close()


def _non_meta(X: pd.DataFrame) -> pd.DataFrame:
    return X[[c for c in X.columns if c not in META_COLUMNS]]


def split_X_y(estimator: Any, X: Any, y: Any) -> tuple[Any, Any]:
    """Separate features and labels: ``(X, y)``, or a feature table with a ``label`` column and ``y=None``."""
    name = type(estimator).__name__
    if y is None:
        if isinstance(X, pd.DataFrame) and "label" in X.columns:
            return _non_meta(X), X["label"].to_numpy()
        raise ValueError(
            f"{name} requires y to be passed, but the target y is None. Pass the labels as y, a feature "
            "table (DataFrame) with a 'label' column, or a Federation."
        )
    if isinstance(X, pd.DataFrame):
        if "label" in X.columns:
            raise ValueError(
                f"{name}.fit got y and a feature table with a 'label' column: pass the labels once, either "
                "as y or as the table's 'label' column (with y=None)."
            )
        return _non_meta(X), y
    return X, y


def validate_X(estimator: Any, X: Any, *, reset: bool, allow_nan: bool) -> np.ndarray:
    """scikit-learn's ``validate_data`` for the features: float64, dense, finite (NaN if allowed)."""
    return validate_data(estimator, X, reset=reset, dtype=np.float64, accept_sparse=False,
                         ensure_all_finite="allow-nan" if allow_nan else True)


def local_training_table(estimator: Any, X: Any, y: Any, *, allow_nan: bool,
                         prefix: str = "x") -> tuple[pd.DataFrame, np.ndarray, bool]:
    """Validate ``X, y`` and build the feature table of the one site of a local fit.

    Sets ``n_features_in_`` and, when ``X`` has string column names, ``feature_names_in_`` (scikit-learn's
    ``validate_data``).

    Returns
    -------
    table : DataFrame
        The features (columns named by ``feature_names_in_``, else ``<prefix>0``, ``<prefix>1`` ...) and
        the ``label`` column holding the encoded labels 0/1.
    classes : ndarray of shape (2,)
        The sorted labels; label ``classes[1]`` is encoded as 1.
    named : bool
        Whether ``X`` had feature names.
    """
    name = type(estimator).__name__
    X, y = split_X_y(estimator, X, y)
    Xa, y = validate_data(estimator, X, y, reset=True, dtype=np.float64, accept_sparse=False,
                          ensure_all_finite="allow-nan" if allow_nan else True)
    check_classification_targets(y)
    classes, encoded = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"{name} needs samples of 2 classes, but the data contains only one class: {classes.tolist()[0]!r}."
        )
    if len(classes) > 2:
        shown = ", ".join(repr(c) for c in classes.tolist()[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"Only binary classification is supported. {name} got y with {len(classes)} classes ({shown}); "
            "pass a label with exactly two values."
        )
    named = hasattr(estimator, "feature_names_in_")
    names = ([str(n) for n in estimator.feature_names_in_] if named
             else [f"{prefix}{j}" for j in range(Xa.shape[1])])
    table = pd.DataFrame(Xa, columns=names, copy=True)
    table["label"] = encoded.astype(np.int8)
    return table, classes, named


def _name_list(names: Sequence[str]) -> str:
    shown = [f"- {n}\n" for n in names[:5]]
    return "".join(shown) + ("- ...\n" if len(names) > 5 else "")


def select_features(X: pd.DataFrame, names: Sequence[str], estimator_name: str) -> pd.DataFrame:
    """The model's feature columns of a feature table, or scikit-learn's feature-name error.

    Meta columns and columns the model does not use are ignored; the model's features must all be
    present, in the order of fit.
    """
    names = [str(n) for n in names]
    by_str = {str(c): c for c in X.columns if c not in META_COLUMNS}
    got = list(by_str)
    wanted = set(names)
    if [c for c in got if c in wanted] == names:
        return X[[by_str[n] for n in names]]
    missing = sorted(wanted - set(got))
    msg = ""
    if len(got) != len(names):
        msg += f"X has {len(got)} features, but {estimator_name} is expecting {len(names)} features as input. "
    msg += "The feature names should match those that were passed during fit.\n"
    if missing:
        unseen = sorted(set(got) - wanted)
        if unseen:
            msg += "Feature names unseen at fit time:\n" + _name_list(unseen)
        msg += "Feature names seen at fit time, yet now missing:\n" + _name_list(missing)
    else:
        msg += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(
        f"{msg}Column diff (- expected, + got):\n{column_diff(names, got)}\n"
        "Pass a table holding the model's features in this order (X[model.feature_names_in_])."
    )


def check_predict_X(estimator: Any, X: Any, *, allow_nan: bool) -> np.ndarray:
    """The features a fitted model scores, as float64 in fit order (after ``check_is_fitted``)."""
    check_is_fitted(estimator)
    names = getattr(estimator, "feature_names_in_", None)
    if not (isinstance(X, pd.DataFrame) and names is not None):
        if isinstance(X, pd.DataFrame):
            X = _non_meta(X)
        return validate_X(estimator, X, reset=False, allow_nan=allow_nan)
    frame = select_features(X, names, type(estimator).__name__)
    try:
        return check_array(frame, dtype=np.float64, accept_sparse=False, estimator=estimator, input_name="X",
                           ensure_all_finite="allow-nan" if allow_nan else True)
    except (TypeError, ValueError) as exc:
        bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise ValueError(f"feature columns must be numeric (float64, NaN = missing); not numeric: {bad}") from exc
        raise


def check_savable(model: Any) -> None:
    """A model file records the feature schema by name and the labels as 0/1."""
    name = type(model).__name__
    if not hasattr(model, "feature_names_in_"):
        raise ValueError(f"this {name} was fitted on an array without feature names, but a model file records "
                         "its features by name: fit it on a DataFrame with named feature columns")
    if not np.array_equal(model.classes_, [0, 1]):
        raise ValueError(f"this {name} was fitted with labels {model.classes_.tolist()}, but a model file holds a "
                         "0/1 label (like a study's 'label' column): fit it with y encoded as 0/1")
