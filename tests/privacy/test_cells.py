"""Complementary suppression and joint merging (ehr_fed.privacy.cells)."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.privacy.cells import (
    complementary_suppression,
    merge_joint,
    partition_relations,
    protect,
    suppress,
)


def test_a_hidden_group_hides_a_second_group():
    # two label groups (rows) x three columns; overall = column sums are released elsewhere
    n = np.array([[95.0, 40.0, 0.0], [5.0, 30.0, 4.0]])
    out, idx = suppress(n, 10)
    hidden = np.isnan(out)
    np.testing.assert_array_equal(hidden, [[True, False, True], [True, False, True]])
    assert idx == [0, 2, 3, 5]
    # no column has a single hidden cell, so overall - shown group never gives a hidden one
    assert all(hidden[:, j].sum() != 1 for j in range(3))


def test_one_dimensional_counts_are_independent_cells():
    n, s, idx = suppress(np.array([0, 3, 12, 9]), 10, np.array([0.0, 5.0, 20.0, 7.0]))
    assert idx == [1, 3]
    np.testing.assert_array_equal(np.isnan(s), [False, True, False, True])


def test_general_relations_reach_a_fixpoint():
    # a + b = total, b + c = total2: hiding a forces b, which forces c
    counts = {"x": np.array([4.0, 50.0, 60.0])}
    rels = [[("x", (0,)), ("x", (1,))], [("x", (1,)), ("x", (2,))]]
    masks = complementary_suppression(counts, {"x": np.array([True, False, False])}, rels)
    np.testing.assert_array_equal(masks["x"], [True, True, True])


def test_complement_picks_the_smallest_shown_cell():
    counts = {"g": np.array([[3.0], [40.0], [20.0]])}
    rels = partition_relations("g", (3, 1))
    masks = complementary_suppression(counts, {"g": np.array([[True], [False], [False]])}, rels)
    np.testing.assert_array_equal(masks["g"][:, 0], [True, False, True])


def test_tied_counts_hide_each_other_with_their_sums():
    # n + n_missing = n_rows: a small n_missing hides n (and its sum); a small n hides n_missing
    res = {"n_rows": np.array([[100.0, 100.0]]), "n": np.array([[93.0, 4.0]]),
           "n_missing": np.array([[7.0, 96.0]]), "sum": np.array([[930.0, 40.0]])}
    done = protect(res, {"n_missing": ("n", "sum"), "n": ("n_missing", "sum")}, (), 10)
    assert np.isnan(res["n"]).all() and np.isnan(res["n_missing"]).all() and np.isnan(res["sum"]).all()
    assert (res["n_rows"] == 100).all() and done == {"n_missing": [0], "n": [1]}


def test_protect_scalars_become_none():
    res = {"n": 4.0, "s": 2.0}
    protect(res, {"n": ("s",)}, (), 10)
    assert res == {"n": None, "s": None}


@pytest.mark.parametrize("seed", range(20))
def test_merge_joint_every_channel_zero_or_at_least_min(seed):
    rng = np.random.default_rng(seed)
    ch = rng.poisson(rng.uniform(0.1, 3), size=(2, 60)).astype(float)
    ch[:, rng.random(60) < 0.3] = 0
    merged, groups = merge_joint(ch, 10)
    if np.isnan(merged).all():
        assert np.any((ch.sum(axis=1) > 0) & (ch.sum(axis=1) < 10))
        return
    np.testing.assert_array_equal(merged.sum(axis=1), ch.sum(axis=1))
    assert np.all((merged == 0) | (merged >= 10))
    for g in groups:  # each group's counts sit in its first bin; groups are contiguous and disjoint
        assert g == list(range(g[0], g[-1] + 1))
        np.testing.assert_array_equal(merged[:, g[0]], ch[:, g].sum(axis=1))


def test_protect_joint_histograms_share_one_grouping():
    res = {"pos": np.array([3.0, 8.0, 0.0, 12.0]), "neg": np.array([20.0, 1.0, 9.0, 30.0])}
    done = protect(res, {}, (), 10, joint_histograms=[("pos", "neg")])
    np.testing.assert_array_equal(res["pos"], [11.0, 0.0, 12.0, 0.0])
    np.testing.assert_array_equal(res["neg"], [21.0, 0.0, 39.0, 0.0])
    assert done == {"pos+neg": [[0, 0, 1], [0, 2, 3]]}
