"""Fixtures of the gradient boosting tests: a hand-made non-linear data set split over four sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

FEATURES = [f"x{j}" for j in range(8)]


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-linear risk with interactions, a threshold effect and informative missingness."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    Z = np.nan_to_num(X)
    logit = (1.5 * np.sin(2 * Z[:, 0]) + Z[:, 1] * Z[:, 2] + 1.2 * (Z[:, 3] > 0.5) - 0.8 * np.abs(Z[:, 4])
             + 0.8 * np.isnan(X[:, 5]) - 1.5)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def feature_table(X: np.ndarray, y: np.ndarray, site: str) -> pd.DataFrame:
    """A feature table in the common layout (internals section 3)."""
    df = pd.DataFrame({
        "site_id": site,
        "person_key": [f"{site}-{i:06d}" for i in range(len(y))],
        "index_time": pd.Timestamp("2024-01-01"),
        "label": y.astype("int8"),
    })
    for j, name in enumerate(FEATURES):
        df[name] = X[:, j]
    return df


def split_sites(X: np.ndarray, y: np.ndarray, n_sites: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Unequal sites (different sizes)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(y)), n_sites - 1, replace=False))
    return {f"site_{k}": feature_table(X[idx], y[idx], f"site_{k}")
            for k, idx in enumerate(np.split(np.arange(len(y)), cuts))}


@pytest.fixture(scope="session")
def small_data():
    """3,000 training rows over 4 sites and 2,000 test rows."""
    X, y = make_data(3000, 0)
    Xt, yt = make_data(2000, 1)
    return {"X": X, "y": y, "Xt": Xt, "yt": yt, "tables": split_sites(X, y, 4)}


@pytest.fixture(scope="session")
def plain_fed(small_data):
    from ehr_fed.federation import Federation

    fed = Federation.in_process(small_data["tables"], encrypted=False)
    yield fed
    fed.close()


@pytest.fixture(scope="session")
def encrypted_fed(small_data):
    from ehr_fed.federation import Federation

    fed = Federation.in_process(small_data["tables"], encrypted=True, key_bits=1024, allow_insecure=True)
    yield fed
    fed.close()
