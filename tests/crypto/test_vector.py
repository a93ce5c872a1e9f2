"""Encrypt, add and decrypt vectors: the public API of ehr_fed.crypto."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.crypto import (
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
