"""Federated statistics equal pooled ones; small cells are suppressed or merged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed import stats
from ehr_fed.federation import Federation
from ehr_fed.federation.testing import FEATURES, make_table, make_tables, test_ceremony


@pytest.fixture(scope="module")
def tables():
    return make_tables()


@pytest.fixture(scope="module")
def fed(tables):
    keys, _ = test_ceremony()
    return Federation.in_process(tables, encrypted=True, site_keys=keys)


@pytest.fixture(scope="module")
def pooled(tables):
    return pd.concat(tables.values(), ignore_index=True)


def test_standardization_equals_pooled(fed, pooled):
    mean, std = stats.federated_standardization(fed, FEATURES)
    np.testing.assert_allclose(mean, pooled[FEATURES].mean().to_numpy(), rtol=1e-7)  # fixed-point quantum
    np.testing.assert_allclose(std, pooled[FEATURES].std(ddof=0).to_numpy(), rtol=1e-7)


def test_describe_overall_and_by_label(fed, pooled):
    d = stats.describe(fed, FEATURES)
    row = d.loc[("overall", "lab_creatinine")]
    assert row["n"] == pooled["lab_creatinine"].notna().sum()
    assert row["missing"] == pooled["lab_creatinine"].isna().sum()
    assert row["std"] == pytest.approx(pooled["lab_creatinine"].std(), rel=1e-7)
    for q in (0.25, 0.5, 0.75):  # within the fine-grid resolution
        width = (pooled["age"].max() - pooled["age"].min()) / 64
        assert abs(d.loc[("overall", "age"), f"q{q:g}"] - pooled["age"].quantile(q)) < width
    by = stats.describe(fed, ["age"], by="label")
    for lab in (0, 1):
        sub = pooled.loc[pooled["label"] == lab, "age"]
        assert by.loc[(f"label={lab}", "age"), "mean"] == pytest.approx(sub.mean(), rel=1e-9)


def test_by_site_and_table_one(fed, tables):
    s = stats.describe_by_site(fed, ["age"])
    assert s.loc[("site_b", "age"), "mean"] == pytest.approx(tables["site_b"]["age"].mean())
    t1 = stats.table_one(fed, ["age", "sex_female"])
    assert list(t1.columns) == ["Overall", "label=0", "label=1"] and t1.loc["N", "Overall"] == "300"
    n_f = int(sum(t["sex_female"].sum() for t in tables.values()))
    assert t1.loc["sex_female, n (%)", "Overall"].startswith(f"{n_f} (")
    assert "age, mean (SD)" in t1.index


def test_bin_edges_match_pooled_quantiles(fed, pooled):
    from ehr_fed.models.gbdt.binning import local_bin_edges

    edges = stats.federated_bin_edges(fed, ["age", "charlson", "sex_female"], max_bin=16)
    ref = local_bin_edges(pooled[["age", "charlson", "sex_female"]].to_numpy(), 16)
    assert len(edges["age"]) == 15 and np.all(np.diff(edges["age"]) > 0)
    width = (pooled["age"].max() - pooled["age"].min()) / 64
    assert np.max(np.abs(edges["age"] - ref[0])) < width
    # discrete features: one cut just below each distinct value after the first
    np.testing.assert_allclose(edges["charlson"], ref[1], atol=0.02)
    np.testing.assert_allclose(edges["sex_female"], [1.0], atol=0.01)


def test_small_cells_suppressed_in_aggregates_and_by_site():
    tables = make_tables()
    tables["site_c"] = make_table("site_c", 6, 99)  # a tiny site
    tables["site_c"]["label"] = 0
    fed = Federation.in_process(tables, encrypted=False)
    by_site = stats.describe_by_site(fed, ["age"])
    assert np.isnan(by_site.loc[("site_c", "age"), "mean"]) and np.isnan(by_site.loc[("site_c", "age"), "n"])
    res = fed.query("stats.moments", {"columns": ["age"]})
    assert res.suppressed["site_c"] == {"n": [0], "n_rows": [0]}


def test_histogram_small_bins_merged(fed, pooled):
    edges = np.array([[0, 20, 40, 60, 80, 100, 120.0]])
    h = stats.histogram(fed, ["age"], edges)
    raw, _ = np.histogram(np.clip(pooled["age"], 0, 119.9), edges[0])
    assert h.counts.sum() == raw.sum()
    assert all(c >= 10 for _, _, c in h.groups(0, 0))
    assert np.all((h.counts == 0) | (h.counts >= 10))
