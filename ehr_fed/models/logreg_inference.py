"""Inference for federated logistic regression: the coefficient table a clinical researcher reads.

Standard errors are the square roots of the diagonal of the inverse pooled information matrix
``(Z'WZ + Lambda)^-1``, mapped from the standardized to the original scale by the linear map ``T`` of
:func:`ehr_fed.models.logreg_newton.original_scale` (``Cov = T Cov_std T'``; maximum likelihood is
invariant to this reparametrization). Without a penalty this is exactly what statsmodels' ``Logit`` reports
on the pooled rows. With ``penalty="l2"`` the same formula gives the usual approximate (penalized
information) standard errors, flagged in ``attrs["note"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = ("coef", "std err", "z", "P>|z|", "ci_lower", "ci_upper", "odds_ratio", "or_ci_lower",
           "or_ci_upper")


class CoefficientTable(pd.DataFrame):
    """A DataFrame of coefficients that shows its fit statistics above the table in notebooks."""

    @property
    def _constructor(self):
        return CoefficientTable

    def _repr_html_(self) -> str | None:
        if {"n_samples", "loglik", "note", "alpha"} <= set(self.attrs) and list(self.columns) == list(COLUMNS):
            return summary_html(self)
        return super()._repr_html_()


def summary_table(model: Any, alpha: float = 0.05) -> pd.DataFrame:
    """Coefficient table of a fitted :class:`~ehr_fed.models.FederatedLogisticRegression`.

    Returns
    -------
    DataFrame indexed by term (``intercept`` first when fitted) with the columns of :data:`COLUMNS`;
    ``ci_*`` is the ``1 - alpha`` Wald interval of the coefficient and ``or_*`` the odds ratio
    ``exp(coef)`` with its interval ``exp(ci)``. ``attrs`` holds the fit: ``n_samples``, ``n_sites``,
    ``loglik``, ``null_loglik``, ``pseudo_r2`` (McFadden), ``n_iter``, ``converged``, ``penalty``,
    ``alpha``, ``dropped_terms`` and ``note``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    coef = model.coef_.ravel()
    names = list(model.terms_)
    if model.fit_intercept:
        coef = np.concatenate([model.intercept_, coef])
        names = ["intercept"] + names
    se = np.sqrt(np.diag(model.covariance_))
    z = coef / se
    p = 2.0 * stats.norm.sf(np.abs(z))
    q = stats.norm.ppf(1.0 - alpha / 2.0)
    lo, hi = coef - q * se, coef + q * se
    with np.errstate(over="ignore"):
        table = CoefficientTable(
            {"coef": coef, "std err": se, "z": z, "P>|z|": p, "ci_lower": lo, "ci_upper": hi,
             "odds_ratio": np.exp(coef), "or_ci_lower": np.exp(lo), "or_ci_upper": np.exp(hi)},
            index=pd.Index(names, name="term"),
        )
    n, pos = model.n_samples_, model.n_positives_
    null_ll = pos * np.log(pos / n) + (n - pos) * np.log(1 - pos / n) if model.fit_intercept else n * np.log(0.5)
    table.attrs.update(
        model="FederatedLogisticRegression", n_samples=n, n_positives=pos, n_sites=model.n_sites_,
        loglik=model.loglik_, null_loglik=float(null_ll), pseudo_r2=float(1.0 - model.loglik_ / null_ll),
        n_iter=model.n_iter_, converged=bool(model.converged_), penalty=model.penalty, C=model.C,
        alpha=alpha, dropped_terms=list(model.dropped_terms_), study_id=model.study_id_,
        note=("standard errors from the penalized information matrix (approximate)" if model.penalty == "l2"
              else "Wald statistics from the pooled observed information matrix"),
    )
    return table


def summary_html(table: pd.DataFrame) -> str:
    """An HTML rendering of :func:`summary_table` with its fit statistics (for notebooks and reports)."""
    a = table.attrs
    head = (
        f"<p><b>Federated logistic regression</b> ({a.get('study_id') or 'no study'}): "
        f"{a['n_samples']} rows ({a['n_positives']} positive) at {a['n_sites']} sites; "
        f"log-likelihood {a['loglik']:.4f} (null {a['null_loglik']:.4f}, McFadden R&sup2; "
        f"{a['pseudo_r2']:.4f}); {a['n_iter']} Newton rounds, "
        f"{'converged' if a['converged'] else '<b>not converged</b>'}; penalty {a['penalty']}.</p>"
    )
    fmt = {c: "{:.4g}" for c in table.columns}
    fmt["P>|z|"] = "{:.3g}"
    body = pd.DataFrame(table).to_html(formatters={c: f.format for c, f in fmt.items()}, border=0)
    tail = f"<p><small>{a['note']}; {int(100 * (1 - a['alpha']))}% Wald intervals.</small></p>"
    return head + body + tail
