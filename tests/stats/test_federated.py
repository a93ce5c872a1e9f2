"""Federated statistics equal pooled ones; small cells are suppressed or merged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed import stats
from ehr_fed.federation import Federation
from ehr_fed.federation.coordinator import FederationError
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
    res = stats.per_site(fed, "stats.moments", {"columns": ["age"]})
    assert res.suppressed["site_c"] == {"n_rows": [0]}  # its partners n, n_missing, sums went with it
    assert all(v is None or np.isnan(v).all() for k, v in res["site_c"].items())
    # and every other site hides the same cell: else pooled minus their values would give site_c's back
    for sid in ("site_a", "site_b"):
        assert np.isnan(by_site.loc[(sid, "age"), "n"]) and np.isnan(np.asarray(res[sid]["n_rows"], float)).all()
    with pytest.raises(FederationError, match="cross_site_suppression"):
        fed.query("stats.moments", {"columns": ["age"]})


def _binary_tables():
    """Three sites; pooled: 7 missing creatinine values, 9 of label 1 have flag=1, 60 of label 0."""
    tables = make_tables()
    for i, t in enumerate(tables.values()):
        t["lab_creatinine"] = t["lab_creatinine"].fillna(1.0)
        t.loc[t.index[: (3, 2, 2)[i]], "lab_creatinine"] = np.nan
        t["flag"] = 0.0
        pos = t.index[t["label"] == 1][: (3, 3, 3)[i]]
        neg = t.index[t["label"] == 0][:20]
        t.loc[pos, "flag"] = 1.0
        t.loc[neg, "flag"] = 1.0
    return tables


def test_complementary_suppression_in_table_one_and_moments():
    tables = _binary_tables()
    pooled = pd.concat(tables.values(), ignore_index=True)
    assert pooled["lab_creatinine"].isna().sum() == 7
    assert ((pooled["flag"] == 1) & (pooled["label"] == 1)).sum() == 9
    fed = Federation.in_process(tables, encrypted=False)
    m = stats.moments(fed, ["lab_creatinine", "flag"])
    # 7 missing: hidden, and n (which would give N - n = 7) with it; N itself stays
    assert np.isnan(m["n_missing"][0, 0]) and np.isnan(m["n"][0, 0]) and m["n_rows"][0, 0] == 300
    g = stats.moments(fed, ["flag"], by="label")
    # label=1 holds 9 ones: hidden; label=0's ones are hidden too (overall - label=0 would give 9)
    assert np.isnan(g["n_ones"][:, 0]).all() and np.isnan(g["sum"][:, 0]).all()
    assert np.isnan(g["mean"][:, 0]).all() and np.isnan(g["m2"][:, 0]).all()
    t1 = stats.table_one(fed, ["lab_creatinine", "flag"])
    assert t1.loc["flag, n (%)", "Overall"].startswith("69 (")
    assert (t1.loc["flag, n (%)", "label=0"], t1.loc["flag, n (%)", "label=1"]) == ("suppressed", "suppressed")
    assert t1.loc["lab_creatinine missing, n (%)", "Overall"] == "suppressed"
    cells = " ".join(t1.to_numpy().ravel().tolist())
    assert " 9 (" not in f" {cells}" and "7 (" not in cells


def test_no_count_below_minimum_is_recoverable_from_moments():
    """Every released count cell, and every difference a reader can form (N - n, overall - group,
    ones = n - zeros), is 0 or >= 10."""
    tables = _binary_tables()
    fed = Federation.in_process(tables, encrypted=False)
    cols = ["age", "lab_creatinine", "flag"]
    o, g = stats.moments(fed, cols), stats.moments(fed, cols, by="label")
    derived = [o["n_rows"] - o["n"], o["n_rows"] - o["n_missing"], o["n"] - o["n_ones"], o["n"] - o["n_zeros"],
               o["n"] - g["n"], o["n_missing"] - g["n_missing"], o["n_ones"] - g["n_ones"],
               g["n_rows"] - g["n"], g["n_rows"] - g["n_missing"]]
    for k in ("n", "n_rows", "n_missing", "n_ones", "n_zeros"):
        derived += [o[k], g[k]]
    for arr in derived:
        a = np.asarray(arr, dtype=float)
        a = a[np.isfinite(a)]
        assert not np.any((a > 0) & (a < 10)), a


def test_histogram_small_bins_merged(fed, pooled):
    edges = np.array([[0, 20, 40, 60, 80, 100, 120.0]])
    h = stats.histogram(fed, ["age"], edges)
    raw, _ = np.histogram(np.clip(pooled["age"], 0, 119.9), edges[0])
    assert h.counts.sum() == raw.sum()
    assert all(c >= 10 for _, _, c in h.groups(0, 0))
    assert np.all((h.counts == 0) | (h.counts >= 10))
