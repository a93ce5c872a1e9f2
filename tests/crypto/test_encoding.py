"""Fixed-point encoding and packing, at the integer level (no encryption): fast, so many examples."""

from __future__ import annotations

import math

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.crypto import EncodingOverflowError
from ehr_fed.crypto.encoding import (
    DEFAULT_FRAC_BITS,
    bound_exponent,
    check_values,
    make_layout,
    raw_decode,
    raw_encode,
    raw_pack,
    raw_unpack,
)

N_2048 = (1 << 2047) + 12345  # any 2048-bit modulus: layouts depend on its bit length only


@pytest.mark.parametrize(
    ("bound", "expected"), [(1.0, 0), (0.75, 0), (2.0, 1), (3.0, 2), (1e6, 20), (0.5, -1), (2.0**-30, -30)]
)
def test_bound_exponent_is_ceil_log2(bound, expected):
    assert bound_exponent(bound) == expected
    assert bound <= 2.0**expected < 2 * bound


@pytest.mark.parametrize(
    ("max_terms", "slot_bits", "slots"), [(1, 56, 36), (3, 57, 35), (10, 59, 34), (250_000, 73, 28)]
)
def test_slot_width_is_frac_bits_plus_sign_plus_terms_plus_guard(max_terms, slot_bits, slots):
    layout = make_layout(N_2048, 100, bound=1.0, max_terms=max_terms)
    assert layout.frac_bits == DEFAULT_FRAC_BITS
    assert layout.slot_bits == DEFAULT_FRAC_BITS + 2 + max_terms.bit_length() == slot_bits
    assert layout.slots_per_ciphertext == slots
    assert slots * slot_bits <= N_2048.bit_length() - 1  # every packed plaintext is < n
    assert max_terms * 2 ** (DEFAULT_FRAC_BITS + 1) < 2 ** (slot_bits - 1)  # a full sum leaves the guard bit


def test_layout_that_does_not_fit_the_key_is_refused():
    with pytest.raises(
        EncodingOverflowError, match=r"a slot of 67 bits .* does not fit in a plaintext of this"
    ):
        make_layout(2**60 + 1, 3, bound=1.0, max_terms=1000, frac_bits=55)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bound": 0.0}, ValueError, "bound must be a positive finite number, got 0.0"),
        ({"bound": float("nan")}, ValueError, "bound must be a positive finite number, got nan"),
        ({"bound": "big"}, TypeError, "bound must be a positive number, got str"),
        ({"max_terms": 0}, ValueError, "max_terms must be >= 1, got 0"),
        ({"max_terms": 2.5}, TypeError, "max_terms must be an int, got float"),
        ({"frac_bits": 62}, ValueError, "frac_bits must be <= 61, got 62"),
    ],
)
def test_layout_parameters_are_validated(kwargs, error, match):
    params = {"bound": 1.0, "max_terms": 2, **kwargs}
    with pytest.raises(error, match=match):
        make_layout(N_2048, 3, **params)


def test_values_must_be_one_dimensional():
    with pytest.raises(
        ValueError, match=r"values must be 1-D, got an array of shape \(2, 2\); pass values.ravel"
    ):
        check_values(np.zeros((2, 2)), 1.0)


def _encode_sum(vectors, layout, terms=None):
    """Sum of packed plaintexts, as Paillier addition would produce it."""
    terms = terms or [1] * len(vectors)
    plaintexts = [
        raw_pack(raw_encode(np.asarray(v), layout, t), layout) for v, t in zip(vectors, terms, strict=True)
    ]
    return [sum(column) for column in zip(*plaintexts, strict=True)]


bounds = st.floats(min_value=1e-8, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def summands(draw):
    bound = draw(bounds)
    length = draw(st.integers(0, 80))
    n_vectors = draw(st.integers(1, 6))
    max_terms = draw(st.integers(n_vectors, n_vectors + 300_000))
    frac_bits = draw(st.sampled_from([DEFAULT_FRAC_BITS, 20, 40, 61]))
    entry = st.floats(-bound, bound, allow_nan=False, allow_infinity=False) | st.sampled_from(
        [bound, -bound, 0.0]
    )
    vectors = [draw(st.lists(entry, min_size=length, max_size=length)) for _ in range(n_vectors)]
    return bound, max_terms, frac_bits, vectors


@settings(max_examples=60, deadline=None)
@given(summands())
def test_decode_of_packed_sum_is_the_sum_within_the_stated_error(case):
    """Decode(sum Encode(x_t)) == sum x_t within T * quantum / 2 (< T * bound * 2**-frac_bits)."""
    bound, max_terms, frac_bits, vectors = case
    length = len(vectors[0])
    layout = make_layout(N_2048, length, bound=bound, max_terms=max_terms, frac_bits=frac_bits)
    decoded = raw_decode(raw_unpack(_encode_sum(vectors, layout), layout), layout, len(vectors))
    exact = np.array([math.fsum(column) for column in zip(*vectors, strict=True)], dtype=np.float64)
    tolerance = layout.error_bound(len(vectors)) + 2 * np.spacing(np.abs(exact))
    assert layout.error_bound(len(vectors)) < len(vectors) * bound * 2.0**-frac_bits
    assert decoded.shape == (length,)
    assert np.all(np.abs(decoded - exact) <= tolerance)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=50), st.integers(1, 5))
def test_multiples_of_the_quantum_are_summed_exactly(integers, copies):
    """Integers (2**e <= 2**frac_bits) and other multiples of the quantum survive exactly."""
    bound = 2.0**40
    layout = make_layout(N_2048, len(integers), bound=bound, max_terms=copies)
    x = np.array(integers, dtype=np.float64)
    decoded = raw_decode(raw_unpack(_encode_sum([x] * copies, layout), layout), layout, copies)
    assert decoded.tolist() == (x * copies).tolist()


def test_entries_aggregating_several_terms_use_a_larger_offset():
    layout = make_layout(N_2048, 2, bound=1.0, max_terms=300_000)
    site_a, site_b = np.array([120_000.0, -3.5]), np.array([-90_000.25, 17.0])
    total = _encode_sum([site_a, site_b], layout, terms=[150_000, 100_000])
    decoded = raw_decode(raw_unpack(total, layout), layout, 250_000)
    assert decoded.tolist() == (site_a + site_b).tolist()


def test_out_of_range_slots_and_high_bits_are_detected():
    layout = make_layout(N_2048, 3, bound=1.0, max_terms=2)
    (plaintext,) = raw_pack(raw_encode(np.array([0.5, -0.5, 1.0]), layout), layout)
    with pytest.raises(EncodingOverflowError, match="slot 1 holds .* outside \\[0, .*\\] for 1 terms"):
        bad = plaintext + ((1 << (layout.slot_bits - 1)) << layout.slot_bits)
        raw_decode(raw_unpack([bad], layout), layout, 1)
    with pytest.raises(EncodingOverflowError, match="bits above its 35 slots: the ciphertext was altered"):
        raw_unpack([plaintext + (gmpy2.mpz(1) << (layout.slots_per_ciphertext * layout.slot_bits))], layout)
    with pytest.raises(EncodingOverflowError, match="a padding slot does not decode to 0"):
        raw_decode(raw_unpack([plaintext + (1 << (5 * layout.slot_bits))], layout), layout, 1)


@settings(max_examples=60, deadline=None)
@given(bounds, st.integers(0, 20), st.sampled_from([np.nan, np.inf, -np.inf, "over"]))
def test_bad_entries_are_refused_with_their_index(bound, index, bad):
    values = np.zeros(21)
    values[index] = np.nextafter(bound, np.inf) if bad == "over" else bad
    expected = "exceeds bound" if bad == "over" else "only finite values can be encrypted"
    with pytest.raises(EncodingOverflowError, match=rf"values\[{index}\] .*{expected}"):
        check_values(values, bound)
