"""Federation.in_process: query and secure_sum in plaintext mode against pooled computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import Federation, FederationError, SiteContext, site_task
from ehr_fed.federation.testing import FEATURES, test_ceremony


@site_task("test.colsum", kind="moments")
def _colsum(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    cols = params["columns"]
    x = table[cols].fillna(0).to_numpy(float)
    return {"s": x.sum(axis=0), "xtx": x.T @ x, "n": np.array(float(len(table)))}


LAYOUT = {"s": (1e7, 3), "xtx": (1e9, 3), "n": (1e6, 3)}


def test_secure_sum_plaintext_equals_pooled(tables):
    fed = Federation.in_process(tables, encrypted=False)
    out = fed.secure_sum("test.colsum", {"columns": FEATURES}, LAYOUT)
    pooled = pd.concat(tables.values())[FEATURES].fillna(0).to_numpy(float)
    np.testing.assert_allclose(out["s"], pooled.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out["xtx"], pooled.T @ pooled, rtol=1e-12)
    assert out["xtx"].shape == (5, 5) and out["n"].shape == ()
    assert out.contributors == ["site_a", "site_b", "site_c"] and out.missing == {}
    assert fed.site_ids == ["site_a", "site_b", "site_c"]


def test_query_returns_per_site_counts(tables):
    fed = Federation.in_process(tables, encrypted=False)
    res = fed.query("stats.count", {})
    assert {s: r["n"] for s, r in res.items()} == {"site_a": 80.0, "site_b": 120.0, "site_c": 100.0}


def test_layout_must_match_outputs(tables):
    fed = Federation.in_process(tables, encrypted=False)
    with pytest.raises(FederationError, match=r"layout declares \['n', 's'\]"):
        fed.secure_sum("test.colsum", {"columns": FEATURES}, {"s": (1e7, 3), "n": (1e6, 3)})


def test_bound_exceeded_is_reported(tables):
    fed = Federation.in_process(tables, encrypted=False)
    with pytest.raises(FederationError, match="exceeds the layout bound"):
        fed.secure_sum("test.colsum", {"columns": FEATURES}, {**LAYOUT, "xtx": (1.0, 3)})


def test_bad_layout_spec():
    fed = Federation.in_process({"a": pd.DataFrame({"label": [0]})}, encrypted=False)
    with pytest.raises(FederationError, match=r"expected a \(bound, max_terms\) pair"):
        fed.secure_sum("test.colsum", {}, {"s": 5})


def test_secure_sum_encrypted_equals_plaintext(tables):
    keys, _ = test_ceremony()
    enc = Federation.in_process(tables, encrypted=True, site_keys=keys)
    plain = Federation.in_process(tables, encrypted=False)
    a = enc.secure_sum("test.colsum", {"columns": FEATURES}, LAYOUT)
    b = plain.secure_sum("test.colsum", {"columns": FEATURES}, LAYOUT)
    for k in LAYOUT:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-9)
        assert a[k].shape == b[k].shape
    assert a.contributors == ["site_a", "site_b", "site_c"]


@site_task("test.counts", kind="histogram")
def _counts(table: pd.DataFrame, params: dict, ctx: SiteContext) -> dict:
    x = table[FEATURES[0]].fillna(0).to_numpy(float)
    bins = np.clip(np.floor(x).astype(int) + 5, 0, 9)
    counts = np.bincount(bins, minlength=10)
    signed = np.bincount(bins, weights=np.where(x > 0, 1.0, -1.0), minlength=10)
    return {"h": np.stack([signed, counts], axis=-1) * float(params.get("scale", 1))}


FIELDS = {"h": {"widths": [[10, [11, 10]]], "max_terms": 3}}  # |signed| <= 300 < 2**10, counts <= 300 < 2**9


def test_integer_fields_sum_exactly_encrypted_and_plaintext(tables):
    keys, _ = test_ceremony()
    enc = Federation.in_process(tables, encrypted=True, site_keys=keys)
    plain = Federation.in_process(tables, encrypted=False)
    a = enc.secure_sum("test.counts", {}, FIELDS)
    b = plain.secure_sum("test.counts", {}, FIELDS)
    pooled = _counts(pd.concat(tables.values()), {}, None)["h"]
    assert a["h"].shape == (10, 2)
    assert np.array_equal(a["h"], pooled) and np.array_equal(b["h"], pooled)
    assert a["h"][:, 1].sum() == sum(len(t) for t in tables.values())


def test_integer_fields_over_their_width_are_refused_at_the_site(tables):
    fed = Federation.in_process(tables, encrypted=False)
    with pytest.raises(FederationError, match="does not fit its 10-bit width"):
        fed.secure_sum("test.counts", {"scale": 8}, FIELDS)
    with pytest.raises(FederationError, match="integer-field layout"):
        fed.secure_sum("test.counts", {}, {"h": {"widths": [[10, [60, 10]]], "max_terms": 3}})
    with pytest.raises(FederationError, match="declares 10 integer fields"):
        fed.secure_sum("test.counts", {}, {"h": {"widths": [[5, [11, 10]]], "max_terms": 3}})
