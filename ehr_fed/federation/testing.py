"""Helpers for tests and demos: small synthetic feature tables and one cached test-only key ceremony."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandas as pd

from ehr_fed.federation.keys import CoordinatorKeys, SiteKeys, run_ceremony

FEATURES = ["age", "sex_female", "los_days", "charlson", "lab_creatinine"]


def make_table(site_id: str, n: int, seed: int) -> pd.DataFrame:
    """A feature table shaped like internals section 3 (with ~20 % missing creatinine)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "site_id": site_id,
        "person_key": [f"{seed:04x}{i:028x}" for i in range(n)],
        "index_time": pd.Timestamp("2021-03-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "label": (rng.random(n) < 0.3).astype("int8"),
        "age": np.round(rng.normal(65, 12, n), 1),
        "sex_female": (rng.random(n) < 0.5).astype(float),
        "los_days": np.round(rng.exponential(4, n), 2),
        "charlson": rng.integers(0, 8, n).astype(float),
        "lab_creatinine": np.where(rng.random(n) < 0.2, np.nan, np.round(rng.lognormal(0, 0.3, n), 3)),
    })


def make_tables(sizes=(80, 120, 100), seed: int = 7) -> dict[str, pd.DataFrame]:
    """``{"site_a": ..., "site_b": ..., ...}`` with the given row counts."""
    return {f"site_{chr(97 + i)}": make_table(f"site_{chr(97 + i)}", n, seed + i) for i, n in enumerate(sizes)}


@functools.lru_cache(maxsize=8)
def _ceremony(site_ids: tuple[str, ...], scheme: str = "single",
              threshold: int | None = None) -> tuple[dict[str, SiteKeys], CoordinatorKeys]:
    keys = {sid: SiteKeys.generate(sid) for sid in site_ids}
    return keys, run_ceremony(keys, n_length=1024, allow_insecure=True, scheme=scheme, threshold=threshold)


def test_ceremony(site_ids=("site_a", "site_b", "site_c"), scheme: str = "single",
                  threshold: int | None = None) -> tuple[dict[str, SiteKeys], CoordinatorKeys]:
    """Site keys (fresh copies) and coordinator keys of one cached 1024-bit ceremony: TESTS ONLY.

    ``scheme="threshold"`` deals t-of-n shares (``threshold`` default: a majority) instead of one key.
    """
    keys, ckeys = _ceremony(tuple(site_ids), scheme, threshold)
    return copy.deepcopy(keys), ckeys


test_ceremony.__test__ = False  # not a pytest test
