"""A differentially private Table 1 reports each figure with the noise it carries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.privacy.table_one import private_table_one

COLS = ["age", "los_days", "cond_cancer"]
BOUNDS = {"age": [0, 110], "los_days": [0, 60], "cond_cancer": [0, 1]}


def _tables() -> dict[str, pd.DataFrame]:
    out = {}
    for i in range(3):
        rng = np.random.default_rng(100 + i)
        n = 2000
        out[f"s{i}"] = pd.DataFrame({
            "site_id": f"s{i}", "person_key": [f"s{i}-{j}" for j in range(n)],
            "index_time": pd.Timestamp("2022-01-01"), "label": (rng.random(n) < 0.3).astype("int8"),
            "age": rng.normal(65, 12, n), "los_days": rng.exponential(4, n),
            "cond_cancer": (rng.random(n) < 0.15).astype(float)})
    return out


def test_private_table_one_is_close_and_states_its_noise():
    tables = _tables()
    policy = PrivacyPolicy(dp={"epsilon": 2.0})
    with Federation.in_process(tables, policy=policy, encrypted=False) as fed:
        df = private_table_one(fed, COLS, {"epsilon": 1.0}, feature_bounds=BOUNDS)
        # the same site policy refuses the non-private statistics
        with pytest.raises(Exception, match="requires differential privacy"):
            fed.secure_sum("stats.moments", {"columns": COLS, "by": "label"}, {"n": [1e9, 3]})
    pooled = pd.concat(tables.values())
    truth = pooled.groupby("label")[COLS].mean()
    for g in (0, 1):
        for c in COLS:
            row = df.loc[(c, f"label={g}")]
            assert row["mean_noise_sd"] > 0 and row["mean_noise_ci95"] == pytest.approx(1.96 * row["mean_noise_sd"])
            assert abs(row["mean"] - truth.loc[g, c]) < 6 * row["mean_noise_sd"] + 1e-9
            assert row["n_noise_sd"] > 0
    assert 0.9 < df.attrs["dp"]["epsilon"] <= 1.0 and df.attrs["dp"]["delta"] == 1e-6
    # the noise scale matches the spread of repeated releases (fixed data, fresh noise)
    with Federation.in_process(tables, encrypted=False) as fed:
        means = [private_table_one(fed, ["age"], 1.0, feature_bounds=BOUNDS, by=None).iloc[0] for _ in range(12)]
    spread = np.std([m["mean"] for m in means], ddof=1)
    assert 0.4 < spread / means[0]["mean_noise_sd"] < 2.0
