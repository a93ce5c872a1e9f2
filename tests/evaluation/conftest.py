"""Fixtures of the evaluation tests: small plaintext federations with signal, a LACE column and a fitted
logistic regression (fitted once per session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import Federation

FEATURES = ["age", "sex_female", "los_days", "charlson", "lab_creatinine"]
POLICY = {"min_cell_count": 10, "min_sites": 3, "max_params_fraction": 0.5}


def site_table(site: str, n: int, seed: int, shift: float = 0.0, base: float = -4.0) -> pd.DataFrame:
    """A feature table with a true risk, missing creatinine and a LACE index that tracks the risk."""
    rng = np.random.default_rng(seed)
    age = rng.normal(65 + shift, 12, n)
    sex = (rng.random(n) < 0.5).astype(float)
    los = rng.exponential(4, n)
    charlson = rng.integers(0, 8, n).astype(float)
    creat = rng.lognormal(0, 0.3, n)
    eta = base + 0.03 * age + 0.3 * sex + 0.1 * los + 0.2 * charlson + 0.8 * creat
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype("int8")
    creat[rng.random(n) < 0.2] = np.nan
    lace = np.clip(np.round(np.minimum(los, 7) + 0.8 * charlson + rng.normal(0, 2, n)), 0, 19)
    lace[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "site_id": site, "person_key": [f"{seed:04x}{i:012x}" for i in range(n)],
        "index_time": pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "label": label, "age": age, "sex_female": sex, "los_days": los, "charlson": charlson,
        "lab_creatinine": creat, "lace": lace,
    })


def make_sites(sizes=(300, 400, 350), seed: int = 21) -> dict[str, pd.DataFrame]:
    return {f"site_{'abcdefg'[i]}": site_table(f"site_{'abcdefg'[i]}", n, seed + i, shift=2.0 * i)
            for i, n in enumerate(sizes)}


def pooled(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(tables.values(), ignore_index=True)


@pytest.fixture(scope="session")
def tables() -> dict[str, pd.DataFrame]:
    return make_sites()


@pytest.fixture(scope="session")
def plain_fed(tables):
    fed = Federation.in_process(tables, policy=POLICY, encrypted=False)
    yield fed
    fed.close()


@pytest.fixture(scope="session")
def logreg(plain_fed):
    from ehr_fed.models import FederatedLogisticRegression

    return FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(plain_fed)


@pytest.fixture(scope="session")
def result(plain_fed, logreg):
    from ehr_fed.evaluation import evaluate

    return evaluate(plain_fed, logreg)
