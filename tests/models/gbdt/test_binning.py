import numpy as np
import pytest

from ehr_fed.models.gbdt.binning import BinMapper, local_bin_edges, quantile_cuts


def test_bins_follow_xgboost_rule_value_below_cut_goes_left():
    # Prepare
    mapper = BinMapper([np.array([0.0, 1.0, 2.5])], max_bin=8)
    x = np.array([[-5.0], [0.0], [0.5], [1.0], [2.49], [2.5], [9.0], [np.nan]])
    # Execute
    b = mapper.transform(x)[:, 0]
    # Assert: bin = number of cuts <= x; a split at bin k keeps exactly the rows with x < cuts[k]
    assert b.tolist() == [0, 1, 1, 2, 2, 3, 3, mapper.missing_bin]
    for k, cut in enumerate(mapper.cuts[0]):
        finite = ~np.isnan(x[:, 0])
        assert np.array_equal((b[finite] <= k), x[finite, 0] < cut)


def test_binning_compares_in_float32():
    cut = np.float32(0.1)
    mapper = BinMapper([np.array([cut])], max_bin=4)
    just_below = np.nextafter(np.float64(cut), -1.0)  # rounds to the float32 cut
    assert mapper.transform(np.array([[just_below]]))[0, 0] == 1


def test_quantile_cuts_are_sorted_unique_and_bounded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    x[:100] = np.nan
    cuts = quantile_cuts(x, 16)
    assert cuts.dtype == np.float32 and cuts.size == 15
    assert np.all(np.diff(cuts) > 0)
    counts = np.bincount(BinMapper([cuts], 16).transform(x[:, None])[:, 0], minlength=17)
    assert counts[16] == 100 and counts[:16].min() > 250  # roughly equal-frequency bins


def test_few_distinct_values_get_one_bin_each():
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0, np.nan])
    assert quantile_cuts(x, 256).tolist() == [1.0]
    assert quantile_cuts(np.array([np.nan, np.nan]), 8).size == 0


def test_too_many_cuts_are_thinned_to_max_bin():
    mapper = BinMapper([np.arange(100.0)], max_bin=10)
    assert mapper.cuts[0].size == 9 and mapper.n_cuts().tolist() == [9]


def test_wrong_width_fails_with_counts():
    mapper = BinMapper(local_bin_edges(np.zeros((4, 3)), 8), 8)
    with pytest.raises(ValueError, match="X has 2 features, but the bin mapper is expecting 3"):
        mapper.transform(np.zeros((4, 2)))
