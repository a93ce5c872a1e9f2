import numpy as np
import pytest

from ehr_fed.crypto.fields import expand_segments, field_plan, pack_fields, unpack_fields
from ehr_fed.models.gbdt.packing import bin_mask, field_widths, from_wire, histogram_segments, to_wire


@pytest.mark.parametrize("channels", [2, 3])
def test_extreme_pooled_sums_fit_their_fields_and_decode_exactly(channels):
    # Prepare: 5 sites whose pooled node sums sit at the extremes of the bounds of a 250,000-row node
    n_sites, p = 5, 10
    widths = expand_segments(histogram_segments([250_000], 40, p, channels))
    plan = field_plan(widths, 2046)
    rng = np.random.default_rng(2)
    parts = []
    for n in [50_000] * n_sites:
        sign = rng.choice([-1, 1])
        f = np.stack([np.full(40, sign * (n << p)), np.full(40, (n << p) >> 2), np.full(40, n)][:channels], axis=-1)
        f[:20] = rng.integers(0, 50, size=(20, channels)) * np.array([-1, 1, 1][:channels])
        parts.append(f.ravel())
    # Execute: packed per site, summed as Paillier sums plaintexts
    total = [sum(k) for k in zip(*[pack_fields(f, plan) for f in parts], strict=True)]
    # Assert
    assert np.array_equal(unpack_fields(total, plan), np.sum(parts, axis=0))


def test_deeper_nodes_need_fewer_bits():
    assert field_widths(250_000, 10, 3) == [29, 27, 19]
    assert field_widths(7_000, 10, 3) == [24, 22, 14]
    assert field_widths(7_000, 10, 2) == [24, 22]
    # a child's exact Hessian total (from its parent's split) bounds its H field more tightly
    assert field_widths(7_000, 10, 3, hessian=600 << 10) == [24, 21, 14]
    assert field_widths(7_000, 10, 3, hessian=10**12) == [24, 22, 14]  # never looser than n 2**(p-2)


def test_wire_form_keeps_only_real_bins():
    mask = bin_mask(np.array([2, 0, 4]), 6)  # 6 bins: 5 value bins + missing bin
    assert mask.sum(axis=1).tolist() == [4, 2, 6]
    assert mask[:, -1].all()
    hist = np.zeros((2, 3, 6, 3), dtype=np.int64)
    hist[:, mask] = np.arange(2 * int(mask.sum()) * 3).reshape(2, -1, 3)
    flat = to_wire(hist, mask, 3)
    assert flat.size == 2 * 12 * 3
    assert np.array_equal(from_wire(flat.astype(float), mask, 2, 3), hist)
    with pytest.raises(ValueError, match="histogram fields for 2 nodes"):
        from_wire(flat[:-1], mask, 2, 3)


def test_a_histogram_that_does_not_add_up_is_refused():
    from ehr_fed.models.gbdt.federated import InconsistentHistogramError, check_consistent

    hist = np.zeros((2, 3, 4, 3), dtype=np.int64)
    hist[:, :, 1] = [5, 7, 2]  # every feature of both nodes: the same totals
    check_consistent(hist, 3, [3, 4])
    hist[1, 2, 0, 2] += 1  # one more row in one feature of node 4
    with pytest.raises(InconsistentHistogramError, match=r"nodes \[4\] do not add up"):
        check_consistent(hist, 3, [3, 4])
