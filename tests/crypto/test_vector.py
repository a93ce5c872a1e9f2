"""Encrypt, add and decrypt vectors: the public API of ehr_fed.crypto."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.crypto import (
    DEFAULT_FRAC_BITS,
    EncodingOverflowError,
    EncryptedVector,
    KeyMismatchError,
    LayoutMismatchError,
    decrypt_vector,
    encrypt_vector,
)


def test_sum_of_three_sites_decrypts_to_the_sum(public_key, private_key):
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1e6, 1e6, size=250) for _ in range(3)]
    evs = [encrypt_vector(public_key, x, bound=1e6, max_terms=3) for x in xs]
    total = sum(evs)
    assert isinstance(total, EncryptedVector)
    assert total.n_terms == 3 and len(total) == 250
    np.testing.assert_allclose(decrypt_vector(private_key, total), xs[0] + xs[1] + xs[2], rtol=0, atol=1e-9)


def test_packed_ciphertexts_are_valid_phe_ciphertexts(public_key, private_key):
    x = np.array([0.5, -0.25, 1.0, -1.0, 0.0])
    ev = encrypt_vector(public_key, x, bound=1.0, max_terms=4)
    layout = ev.layout
    (c,) = ev.ciphertexts
    m = private_key.raw_decrypt(c)  # phe's own decryption opens our ciphertext
    f, width = layout.frac_bits, layout.slot_bits
    slots = [(m >> (j * width)) & ((1 << width) - 1) for j in range(layout.slots_per_ciphertext)]
    expected = [round(v * 2**f) + 2**f for v in x] + [2**f] * (layout.slots_per_ciphertext - len(x))
    assert slots == expected
    assert private_key.decrypt(ev.encrypted_numbers[0]) == m  # a phe.EncryptedNumber with exponent 0


def test_unpacked_vector_holds_phe_encrypted_numbers(public_key, private_key):
    x = np.array([3.5, -2.0, 1e-3])
    ev = encrypt_vector(public_key, x, bound=10.0, max_terms=2, pack=False)
    assert [private_key.decrypt(e) for e in ev.encrypted_numbers] == pytest.approx(x, abs=1e-12)
    np.testing.assert_allclose(decrypt_vector(private_key, ev + ev), 2 * x, atol=1e-12)


def test_value_over_bound_is_refused_with_its_index(public_key):
    with pytest.raises(EncodingOverflowError, match=r"values\[2\] = 1\.5 exceeds bound=1\.0"):
        encrypt_vector(public_key, [0.1, 0.2, 1.5], bound=1.0, max_terms=2)


def test_nan_is_refused_with_its_index(public_key):
    with pytest.raises(EncodingOverflowError, match=r"values\[1\] is nan: only finite values"):
        encrypt_vector(public_key, [0.1, np.nan, np.inf], bound=1.0, max_terms=2)


def test_adding_past_max_terms_raises(public_key):
    ev = encrypt_vector(public_key, [0.5], bound=1.0, max_terms=2)
    with pytest.raises(
        EncodingOverflowError, match="would hold 3 terms but the layout allows at most max_terms=2"
    ):
        ev + ev + ev


def test_different_layouts_do_not_add(public_key):
    a = encrypt_vector(public_key, [0.5], bound=1.0, max_terms=2)
    b = encrypt_vector(public_key, [0.5], bound=2.0, max_terms=2)
    with pytest.raises(LayoutMismatchError, match=r"different layouts \(bound: 1\.0 != 2\.0"):
        a + b


def test_different_keys_do_not_add(public_key, other_keypair, private_key):
    a = encrypt_vector(public_key, [0.5], bound=1.0, max_terms=2)
    b = encrypt_vector(other_keypair[0], [0.5], bound=1.0, max_terms=2)
    with pytest.raises(KeyMismatchError, match="cannot add vectors encrypted under different keys"):
        a + b
    with pytest.raises(KeyMismatchError, match="not under this private key's public key"):
        decrypt_vector(private_key, b)


bounds = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def site_vectors(draw):
    bound = draw(bounds)
    length = draw(st.integers(0, 40))
    n_sites = draw(st.integers(1, 4))
    max_terms = draw(st.integers(n_sites, 1000))
    entry = st.floats(-bound, bound, allow_nan=False, allow_infinity=False) | st.sampled_from([bound, -bound])
    return bound, max_terms, [draw(st.lists(entry, min_size=length, max_size=length)) for _ in range(n_sites)]


@settings(max_examples=15, deadline=None)
@given(site_vectors(), st.booleans())
def test_decrypt_of_sum_of_encryptions_is_the_sum(public_key, private_key, case, pack):
    """decrypt(sum(encrypt(x_i))) == sum(x_i) within n_terms * bound * 2**-frac_bits."""
    bound, max_terms, vectors = case
    evs = [encrypt_vector(public_key, x, bound=bound, max_terms=max_terms, pack=pack) for x in vectors]
    total = sum(evs)
    exact = np.array([math.fsum(col) for col in zip(*vectors, strict=True)], dtype=np.float64)
    decrypted = decrypt_vector(private_key, total)
    assert total.n_terms == len(vectors) and decrypted.shape == exact.shape
    tolerance = len(vectors) * bound * 2.0**-DEFAULT_FRAC_BITS + 2 * np.spacing(np.abs(exact))
    assert np.all(np.abs(decrypted - exact) <= tolerance)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 4), st.integers(1, 30))
def test_adding_past_max_terms_is_always_refused(public_key, max_terms, length):
    ev = encrypt_vector(public_key, np.zeros(length), bound=1.0, max_terms=max_terms)
    total = ev
    for _ in range(max_terms - 1):
        total = total + ev
    assert total.n_terms == max_terms
    with pytest.raises(EncodingOverflowError, match=f"at most max_terms={max_terms}"):
        total + ev


def test_builtin_sum_and_len(public_key, private_key):
    evs = [encrypt_vector(public_key, [float(i), -1.0], bound=10.0, max_terms=5) for i in range(5)]
    total = sum(evs)
    assert len(total) == 2 and total.n_terms == 5
    np.testing.assert_array_equal(decrypt_vector(private_key, total), [10.0, -5.0])


def test_site_aggregates_declare_their_terms(public_key, private_key):
    """A site histogram that already sums 150,000 rows of |g| <= 1 enters with terms=150_000."""
    a = encrypt_vector(public_key, [120_000.0, -3.5], bound=1.0, max_terms=250_000, terms=150_000)
    b = encrypt_vector(public_key, [-90_000.25, 17.0], bound=1.0, max_terms=250_000, terms=100_000)
    assert (a + b).n_terms == 250_000
    np.testing.assert_array_equal(decrypt_vector(private_key, a + b), [29_999.75, 13.5])
    with pytest.raises(EncodingOverflowError, match="would hold 300000 terms"):
        a + a
    with pytest.raises(EncodingOverflowError, match=r"values\[0\] = 120000.0 exceeds bound=100000.0"):
        encrypt_vector(public_key, [120_000.0], bound=1.0, max_terms=250_000, terms=100_000)


def test_empty_vector(public_key, private_key):
    ev = encrypt_vector(public_key, [], bound=1.0, max_terms=2)
    assert len(ev) == 0 and ev.ciphertexts == ()
    assert decrypt_vector(private_key, ev + ev).shape == (0,)


def test_a_long_vector_spans_several_ciphertexts(public_key, private_key):
    x = np.random.default_rng(3).uniform(-5, 5, 1000)
    ev = encrypt_vector(public_key, x, bound=5.0, max_terms=3)
    assert len(ev.ciphertexts) == -(-1000 // ev.layout.slots_per_ciphertext) > 1
    np.testing.assert_allclose(decrypt_vector(private_key, ev + ev + ev), 3 * x, rtol=0, atol=1e-13)


def test_fresh_encryptions_of_equal_vectors_differ(public_key):
    a = encrypt_vector(public_key, [1.0, 2.0], bound=2.0, max_terms=2)
    b = encrypt_vector(public_key, [1.0, 2.0], bound=2.0, max_terms=2)
    assert a.ciphertexts != b.ciphertexts


def test_types_are_checked(public_key, private_key):
    ev = encrypt_vector(public_key, [1.0], bound=1.0, max_terms=2)
    with pytest.raises(TypeError, match="can only add an EncryptedVector to an EncryptedVector, got int"):
        ev + 5
    with pytest.raises(TypeError, match="can only add an EncryptedVector to an EncryptedVector, got float"):
        1.0 + ev
    with pytest.raises(TypeError, match="encrypted must be an EncryptedVector, got list"):
        decrypt_vector(private_key, [1, 2])
    with pytest.raises(
        TypeError, match="private_key must be a phe.PaillierPrivateKey, got PaillierPublicKey"
    ):
        decrypt_vector(public_key, ev)
    with pytest.raises(TypeError, match="public_key must be a phe.PaillierPublicKey, got str"):
        encrypt_vector("key", [1.0], bound=1.0, max_terms=2)
    with pytest.raises(ValueError, match="terms must be an int >= 1, got 0"):
        encrypt_vector(public_key, [1.0], bound=1.0, max_terms=2, terms=0)
    with pytest.raises(EncodingOverflowError, match="terms=3 exceeds max_terms=2"):
        encrypt_vector(public_key, [1.0], bound=1.0, max_terms=2, terms=3)


def test_layout_is_a_frozen_dataclass(public_key):
    layout = encrypt_vector(public_key, [1.0, 2.0], bound=2.0, max_terms=4).layout
    assert (layout.bound, layout.max_terms, layout.frac_bits, layout.length) == (2.0, 4, 53, 2)
    assert layout.slots_per_ciphertext * layout.slot_bits < public_key.n.bit_length()
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.bound = 3.0


def test_altered_ciphertext_is_detected_at_decryption(public_key, private_key):
    ev = encrypt_vector(public_key, np.linspace(-1, 1, 20), bound=1.0, max_terms=2)
    cts = list(ev.ciphertexts)
    cts[0] = cts[0] * 12345 % public_key.nsquare  # still a valid ciphertext, of another plaintext
    forged = EncryptedVector(public_key, ev.layout, cts, n_terms=1)
    with pytest.raises(EncodingOverflowError, match="the ciphertext was altered"):
        decrypt_vector(private_key, forged)
