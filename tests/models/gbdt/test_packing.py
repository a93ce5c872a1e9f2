import numpy as np
import pytest

from ehr_fed.models.gbdt.packing import choose_precision, field_widths, pack, unpack, word_layout


@pytest.mark.parametrize("channels", [2, 3])
def test_sum_of_packed_words_unpacks_to_sum_of_fields(channels):
    # Prepare: 5 sites whose pooled sums sit at the extremes of the bounds
    n_sites, n_total, p = 5, 250_000, 14
    words = word_layout(field_widths(n_total, p, channels))
    rng = np.random.default_rng(2)
    site_rows = [50_000] * n_sites
    parts = []
    for n in site_rows:
        g = rng.choice([-1, 1]) * np.full(40, n << p)
        h = np.full(40, (n << p) >> 2)
        c = np.full(40, n)
        f = np.stack([g, h, c][:channels], axis=-1)
        f[:20] = rng.integers(0, 50, size=(20, channels)) * np.array([-1, 1, 1][:channels])
        parts.append(f)
    # Execute: floats summed the way the plaintext federation sums them
    summed = np.sum(np.stack([pack(f, words) for f in parts]), axis=0)
    # Assert
    assert np.array_equal(unpack(summed, words), np.sum(parts, axis=0))
    assert np.abs(np.stack([pack(f, words) for f in parts])).max() <= 1.0


def test_layout_packs_fields_into_fewest_words():
    assert word_layout([35, 33, 19]).n_words == 2
    assert word_layout([27, 25]).n_words == 1
    with pytest.raises(ValueError, match="more than a word"):
        word_layout([60])


def test_choose_precision_prefers_fewest_words_then_finest_grid():
    assert choose_precision(250_000, 2) == 8  # G and H share one word
    assert choose_precision(250_000, 3) == 16  # two words either way: keep precision
    assert word_layout(field_widths(250_000, 8, 2)).n_words == 1


def test_overflowing_field_is_refused():
    words = word_layout(field_widths(10, 4, 3))
    with pytest.raises(OverflowError, match="exceeds its"):
        pack(np.array([[10**6, 0, 0]]), words)
