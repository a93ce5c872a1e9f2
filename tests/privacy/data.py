"""The synthetic site tables of the private-training tests: one generator, the outcome model per test."""

from __future__ import annotations

import numpy as np
import pandas as pd

BOUNDS = {"age": [0, 110], "sex_female": [0, 1], "los_days": [0, 60], "charlson": [0, 24],
          "lab_creatinine": [0, 15], "cond_cancer": [0, 1]}


def site_table(site: str, n: int, seed: int, coef: tuple[float, ...]) -> pd.DataFrame:
    """``n`` index events of ``site``; ``coef``: intercept, then age, sex, length of stay, Charlson,
    creatinine and cancer on the logit scale."""
    b0, b_age, b_sex, b_los, b_charlson, b_creat, b_cancer = coef
    rng = np.random.default_rng(seed)
    age = rng.normal(66, 12, n)
    sex = (rng.random(n) < 0.5).astype(float)
    los = rng.exponential(4, n)
    charlson = rng.integers(0, 8, n).astype(float)
    creat = rng.lognormal(0, 0.3, n)
    cancer = (rng.random(n) < 0.15).astype(float)
    eta = b0 + b_age * age + b_sex * sex + b_los * los + b_charlson * charlson + b_creat * creat + b_cancer * cancer
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype("int8")
    creat[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({"site_id": site, "person_key": [f"{site}-{i}" for i in range(n)],
                         "index_time": pd.Timestamp("2021-01-01"), "label": label, "age": age,
                         "sex_female": sex, "los_days": los, "charlson": charlson, "lab_creatinine": creat,
                         "cond_cancer": cancer})
