"""The outcome models of the data-generating process (known, so models can be checked against them).

Both are logistic models on the study features, with non-linear terms and interactions that a
linear logistic regression cannot represent (a gradient boosted model can), plus a
site-specific baseline shift. Missing labs enter as their reference value (a lab that was not
ordered is taken as normal), so the risk is a function of the feature row alone.

Readmission (30 days after an inpatient discharge), ``z`` on the logit scale::

    z = -5.0 + site_shift
        + 0.018 (age - 65) + 0.8 sigmoid((age - 80) / 3)         old-age step
        + 0.35 log1p(min(prior_inpatient_365d, 5)) + 0.25 log1p(prior_ed_180d)
        + 0.10 charlson
        + 0.30 heart_failure + 0.25 copd + 0.20 ckd + 0.40 cancer + 0.10 diabetes
        + 0.30 log(max(los_days, 0.25))
        + 0.70 heart_failure * ckd                               cardiorenal interaction
        + 0.60 [creatinine > 2]
        + 0.05 min((hemoglobin - 13.5)^2, 25)                    U-shaped anaemia effect
        + 0.035 min((sodium - 140)^2, 100)                       U-shaped dysnatraemia
        + 0.60 diabetes * [hba1c >= 9]
        + 0.35 [n_active_meds >= 6]

T2D progression (within the study horizon after the first prediabetes finding). The study's
features look strictly before the index time, and the index is the finding itself, so the
HbA1c level that drives progression is latent: ``latent_hba1c`` in ``truth.parquet``::

    z = -1.20 + site_shift
        + 2.2 (latent_hba1c - 6.0)
        + 0.035 (age - 55) - 0.0012 (age - 55)^2                  inverted U in age
        + 0.45 hypertension + 0.10 charlson - 0.15 sex_female
        + 0.80 [latent_hba1c >= 6.2] * [age < 50]                 interaction
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: reference values of missing labs (canonical units)
LAB_REFERENCE = {
    "creatinine": 1.0, "hemoglobin": 13.5, "sodium": 140.0, "glucose": 100.0, "hba1c": 5.6, "egfr": 90.0,
}

#: the feature columns each model reads
READMISSION_FEATURES = (
    "age", "prior_inpatient_365d", "prior_ed_180d", "charlson", "cond_heart_failure", "cond_copd",
    "cond_ckd", "cond_cancer", "cond_diabetes", "los_days", "lab_creatinine", "lab_hemoglobin",
    "lab_sodium", "lab_hba1c", "n_active_meds",
)
T2D_FEATURES = ("age", "sex_female", "latent_hba1c", "cond_hypertension", "charlson")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _lab(x, name):
    x = np.asarray(x, dtype=float)
    return np.where(np.isnan(x), LAB_REFERENCE[name], x)


def readmission_logit(f: dict, site_shift=0.0):
    """Logit of the 30-day readmission risk; ``f`` maps feature names to scalars or arrays."""
    age = np.asarray(f["age"], dtype=float)
    hf = np.asarray(f["cond_heart_failure"], dtype=float)
    ckd = np.asarray(f["cond_ckd"], dtype=float)
    diab = np.asarray(f["cond_diabetes"], dtype=float)
    creat = _lab(f["lab_creatinine"], "creatinine")
    hgb = _lab(f["lab_hemoglobin"], "hemoglobin")
    na = _lab(f["lab_sodium"], "sodium")
    a1c = _lab(f["lab_hba1c"], "hba1c")
    los = np.maximum(np.asarray(f["los_days"], dtype=float), 0.25)
    return (
        -5.0 + site_shift
        + 0.018 * (age - 65) + 0.8 * _sigmoid((age - 80) / 3)
        + 0.35 * np.log1p(np.minimum(np.asarray(f["prior_inpatient_365d"], dtype=float), 5.0))
        + 0.25 * np.log1p(np.asarray(f["prior_ed_180d"], dtype=float))
        + 0.10 * np.asarray(f["charlson"], dtype=float)
        + 0.30 * hf + 0.25 * np.asarray(f["cond_copd"], dtype=float) + 0.20 * ckd
        + 0.40 * np.asarray(f["cond_cancer"], dtype=float) + 0.10 * diab
        + 0.30 * np.log(los)
        + 0.70 * hf * ckd
        + 0.60 * (creat > 2.0)
        + 0.05 * np.minimum((hgb - 13.5) ** 2, 25.0)
        + 0.035 * np.minimum((na - 140.0) ** 2, 100.0)
        + 0.60 * diab * (a1c >= 9.0)
        + 0.35 * (np.asarray(f["n_active_meds"], dtype=float) >= 6)
    )


def t2d_logit(f: dict, site_shift=0.0):
    """Logit of the risk of progressing to type 2 diabetes within the horizon."""
    age = np.asarray(f["age"], dtype=float)
    a1c = np.asarray(f["latent_hba1c"], dtype=float)
    return (
        -1.20 + site_shift
        + 2.2 * (a1c - 6.0)
        + 0.035 * (age - 55) - 0.0012 * (age - 55) ** 2
        + 0.45 * np.asarray(f["cond_hypertension"], dtype=float)
        + 0.10 * np.asarray(f["charlson"], dtype=float)
        - 0.15 * np.asarray(f["sex_female"], dtype=float)
        + 0.80 * (a1c >= 6.2) * (age < 50)
    )


def readmission_risk(f: dict, site_shift=0.0):
    """True 30-day readmission probability (see the module docstring)."""
    return _sigmoid(readmission_logit(f, site_shift))


def t2d_risk(f: dict, site_shift=0.0):
    """True probability of T2D within the horizon after the first prediabetes finding."""
    return _sigmoid(t2d_logit(f, site_shift))


def true_risk(features: pd.DataFrame, study: str = "readmission_30d", site_shift=0.0) -> np.ndarray:
    """The data-generating model's risk for each row of a feature table.

    Parameters
    ----------
    features : DataFrame, shape (n_events, n_features)
        Columns named as the study features (a harmonized feature table or a ``truth.parquet``).
    study : {"readmission_30d", "t2d_progression"}
    site_shift : float or array of shape (n_events,)
        The site's baseline shift (``describe()["sites"][site_id]``, or the ``site_shift``
        column of ``truth.parquet``).

    Returns
    -------
    ndarray of shape (n_events,)
        Probabilities in (0, 1).
    """
    if study == "readmission_30d":
        cols, fn = READMISSION_FEATURES, readmission_risk
    elif study == "t2d_progression":
        cols, fn = T2D_FEATURES, t2d_risk
    else:
        raise ValueError(f"unknown study {study!r}; expected 'readmission_30d' or 't2d_progression'")
    missing = [c for c in cols if c not in features.columns]
    if missing:
        raise ValueError(f"features lack the columns {missing} that the {study} model reads")
    return np.asarray(fn({c: features[c].to_numpy(dtype=float) for c in cols}, site_shift), dtype=float)
