"""The mathematics of federated logistic regression by Newton-Raphson (IRLS), as pure functions.

A site holds a design ``Z`` (n x d, standardized, with a leading column of ones when there is an intercept)
and labels ``y``. At coefficients ``beta`` it computes::

    gradient  g = Z' (y - p)                   p = expit(Z beta)
    hessian   H = Z' W Z,  W = diag(p (1 - p))  (only the upper triangle is sent: d (d + 1) / 2 values)
    loglik    l = sum y eta - log(1 + exp(eta))

Sums over sites are the pooled quantities, so the coordinator's step::

    beta <- beta + (H + Lambda)^-1 (g - Lambda beta)

is exactly the pooled Newton step. ``Lambda`` is the ridge penalty written in the standardized space:
scikit-learn's ``0.5 ||w||^2 + C sum(logloss)`` on original-scale coefficients ``w_j = beta_j / s_j`` gives
``Lambda_jj = 1 / (C s_j^2)`` (0 for the intercept).

Secure-sum bounds (public, from the pooled row count ``N`` only). Every standardized column (ddof=0) has
``sum z^2 = N`` over the pooled rows, so by Samuelson's inequality ``|z| <= sqrt(N)`` and by Cauchy-Schwarz
any site's ``|sum z_j r| <= sum |z_j| <= N`` for ``|r| <= 1``; the same bound holds for the Hessian entries
(``w <= 1/4``, ``sum |z_j z_k| <= N``) and for the intercept column. A site's log-likelihood is bounded by
``N (log 2 + |beta_0| + sqrt(N) sum_j |beta_j|)``. The fixed-point encoding of the crypto layer is sized
from these bounds and the number of sites.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

#: a standardized coefficient beyond this (an odds ratio of e^15 per standard deviation) means separation
SEPARATION_BOUND = 15.0


class PerfectSeparationError(ValueError):
    """The maximum-likelihood estimate does not exist: some term(s) predict the label perfectly."""

    def __init__(self, message: str, terms: Sequence[str]):
        super().__init__(message)
        self.terms = list(terms)


class SingularInformationError(ValueError):
    """The information matrix is singular: the design has collinear terms."""

    def __init__(self, message: str, terms: Sequence[str]):
        super().__init__(message)
        self.terms = list(terms)


def with_intercept(Z: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """Prepend a column of ones when ``fit_intercept``."""
    return np.column_stack([np.ones(Z.shape[0]), Z]) if fit_intercept else Z


def triangle_size(d: int) -> int:
    return d * (d + 1) // 2


def pack_upper(H: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric (d, d) matrix, row by row: shape (d (d + 1) / 2,)."""
    return H[np.triu_indices(H.shape[0])]


def unpack_upper(tri: np.ndarray, d: int) -> np.ndarray:
    """The symmetric (d, d) matrix whose upper triangle is ``tri`` (inverse of :func:`pack_upper`)."""
    tri = np.asarray(tri, dtype=float).ravel()
    if tri.size != triangle_size(d):
        raise ValueError(f"expected {triangle_size(d)} upper-triangle values for d={d}, got {tri.size}")
    H = np.zeros((d, d))
    H[np.triu_indices(d)] = tri
    return H + np.triu(H, 1).T


def site_newton_statistics(Z: np.ndarray, y: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
    """One site's Newton statistics at ``beta``.

    Parameters
    ----------
    Z : ndarray, shape (n, d)  design (intercept column included)
    y : ndarray, shape (n,)    0/1 labels
    beta : ndarray, shape (d,)

    Returns
    -------
    dict with ``gradient`` (d,), ``hessian`` (d (d + 1) / 2,) upper triangle of Z'WZ, ``loglik`` (1,)
    """
    y = np.asarray(y, dtype=float)
    eta = Z @ beta
    p = expit(eta)
    A = Z * np.sqrt(p * (1.0 - p))[:, None]
    H = A.T @ A  # numpy computes X'X products with the symmetric rank-k kernel (half the work of a gemm)
    loglik = float(y @ eta - np.logaddexp(0.0, eta).sum())
    return {"gradient": Z.T @ (y - p), "hessian": pack_upper(H), "loglik": np.array([loglik])}


def penalty_diagonal(scale: np.ndarray, C: float | None, fit_intercept: bool) -> np.ndarray:
    """``Lambda`` of the module docstring: shape (d,), 0 for the intercept; zeros when ``C`` is None."""
    scale = np.asarray(scale, dtype=float)
    lam = np.zeros(scale.size) if C is None else 1.0 / (C * scale**2)
    return np.concatenate([[0.0], lam]) if fit_intercept else lam


def penalized_objective(loglik: float, beta: np.ndarray, lam: np.ndarray) -> float:
    """Log-likelihood minus the ridge penalty: the quantity Newton maximizes."""
    return float(loglik - 0.5 * np.sum(lam * beta**2))


def newton_step(
    gradient: np.ndarray, hessian_upper: np.ndarray, beta: np.ndarray, lam: np.ndarray,
    terms: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The Newton step from the pooled statistics.

    Returns
    -------
    step : ndarray, shape (d,)
    information : ndarray, shape (d, d)   the penalized observed information ``H + Lambda``
    """
    d = beta.size
    info = unpack_upper(hessian_upper, d) + np.diag(lam)
    score = np.asarray(gradient, dtype=float) - lam * beta
    try:
        chol = np.linalg.cholesky(info)
    except np.linalg.LinAlgError:
        raise _singular_error(info, terms) from None
    rcond = np.min(np.diag(chol)) ** 2 / np.max(np.diag(chol)) ** 2
    if not rcond > 1e-14:
        raise _singular_error(info, terms)
    step = np.linalg.solve(chol.T, np.linalg.solve(chol, score))
    return step, info


def _singular_error(info: np.ndarray, terms: Sequence[str]) -> SingularInformationError:
    vals, vecs = np.linalg.eigh(info)
    v = vecs[:, 0]
    idx = np.flatnonzero(np.abs(v) > 0.1 * np.abs(v).max())
    names = [terms[i] if i < len(terms) else f"term {i}" for i in idx]
    return SingularInformationError(
        f"The pooled information matrix is singular (smallest eigenvalue {vals[0]:.3g}): the terms {names} "
        "are collinear, or predict the label perfectly. Remove one of them, or use penalty='l2'.",
        names,
    )


def diverging_terms(beta: np.ndarray, terms: Sequence[str], fit_intercept: bool) -> list[str]:
    """Terms whose standardized coefficient exceeds :data:`SEPARATION_BOUND` in absolute value."""
    off = 1 if fit_intercept else 0
    big = np.flatnonzero(np.abs(beta[off:]) > SEPARATION_BOUND)
    return [terms[off + i] for i in big]


def separation_evidence(beta: np.ndarray, terms: Sequence[str], loglik: float, n_total: float,
                        fit_intercept: bool) -> tuple[list[str], str] | None:
    """Evidence of perfect separation after an unpenalized Newton step (``None`` when there is none).

    ``(terms, evidence)``: the terms whose standardized coefficient exceeds :data:`SEPARATION_BOUND`, or,
    when the pooled log-likelihood has reached 0 (every label predicted perfectly), the three largest.
    The fit stops there; the coordinator raises :class:`PerfectSeparationError` and every site refuses a
    further round (the transcript replay of :mod:`ehr_fed.models.logreg_transcript`).
    """
    big = diverging_terms(beta, terms, fit_intercept)
    if big:
        return big, "a coefficient growing without bound"
    if loglik > -1e-6 * n_total:
        off = 1 if fit_intercept else 0
        top = [terms[off + i] for i in np.argsort(-np.abs(beta[off:]))[:3]]
        return top, ("the pooled log-likelihood reaching 0 (every label predicted perfectly); the largest "
                     "coefficients are on these terms")
    return None


def separated_binary_terms(sums: dict[str, np.ndarray], feature_names: Sequence[str],
                           terms: Sequence[str]) -> list[str]:
    """Binary features and missing indicators with an empty cell in their 2 x 2 table with the label.

    Such a term alone separates the classes (quasi-complete separation), so the unpenalized MLE does not
    exist. Uses only the pooled counts of :func:`ehr_fed.models.base.site_preprocessing_sums`.
    """
    s = {k: np.asarray(v, dtype=float).ravel() for k, v in sums.items()}
    n, n_pos = s["n"][0], s["n_pos"][0]
    out = []
    kept = set(terms)
    for j, name in enumerate(feature_names):
        if name in kept and s["n_nonbinary"][j] == 0:
            ones, ones_pos = s["n_one"][j], s["n_one_pos"][j]
            zeros, zeros_pos = s["n_obs"][j] - ones, s["n_obs_pos"][j] - ones_pos
            cells = [ones_pos, ones - ones_pos, zeros_pos, zeros - zeros_pos]
            if ones > 0 and zeros > 0 and any(c == 0 for c in cells):  # NaN (suppressed) cells are not 0
                out.append(name)
        ind = "missing_" + name
        if ind in kept:
            miss = n - s["n_obs"][j]
            miss_pos = s["n_miss_pos"][j]
            obs_pos = n_pos - miss_pos
            cells = [miss_pos, miss - miss_pos, obs_pos, s["n_obs"][j] - obs_pos]
            if any(c == 0 for c in cells):
                out.append(ind)
    return out


def original_scale(beta: np.ndarray, center: np.ndarray, scale: np.ndarray,
                   fit_intercept: bool) -> tuple[np.ndarray, float, np.ndarray]:
    """Coefficients on the original (imputed, unstandardized) scale and the linear map that gives them.

    Returns
    -------
    coef : ndarray (n_terms,), intercept : float, T : ndarray (d, d) with ``[intercept, coef] = T beta``
    (without an intercept, ``coef = T beta`` and ``intercept`` is 0.0 -- centring then needs an intercept,
    so callers use ``center = 0`` in that case).
    """
    center, scale = np.asarray(center, dtype=float), np.asarray(scale, dtype=float)
    k = center.size
    if fit_intercept:
        T = np.zeros((k + 1, k + 1))
        T[0, 0] = 1.0
        T[0, 1:] = -center / scale
        T[1:, 1:] = np.diag(1.0 / scale)
        full = T @ beta
        return full[1:], float(full[0]), T
    T = np.diag(1.0 / scale)
    return T @ beta, 0.0, T


def loglik_bound(n_total: float, beta: np.ndarray, fit_intercept: bool) -> float:
    """Public bound on one site's ``|log-likelihood|`` (see the module docstring)."""
    b0 = abs(beta[0]) if fit_intercept else 0.0
    rest = np.abs(beta[1:] if fit_intercept else beta).sum()
    return float(n_total * (np.log(2.0) + b0 + np.sqrt(n_total) * rest))
