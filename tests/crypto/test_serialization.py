"""Wire format of encrypted vectors and keys."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.crypto import (
    EncryptedVector,
    KeyMismatchError,
    PayloadError,
    decrypt_vector,
    encrypt_vector,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
)


@pytest.mark.parametrize("pack", [True, False])
def test_round_trip(public_key, private_key, pack):
    x = np.linspace(-3, 3, 41)
    ev = encrypt_vector(public_key, x, bound=3.0, max_terms=5, pack=pack) + encrypt_vector(
        public_key, x, bound=3.0, max_terms=5, pack=pack
    )
    back = EncryptedVector.from_bytes(public_key, ev.to_bytes())
    assert back.layout == ev.layout and back.n_terms == 2 and back.ciphertexts == ev.ciphertexts
    np.testing.assert_allclose(decrypt_vector(private_key, back), 2 * x, atol=1e-12)


def test_payload_for_another_key_is_rejected(public_key, other_keypair):
    data = encrypt_vector(other_keypair[0], [1.0], bound=1.0, max_terms=2).to_bytes()
    with pytest.raises(
        KeyMismatchError, match="payload was encrypted under key .* not under the given public key"
    ):
        EncryptedVector.from_bytes(public_key, data)


def test_truncated_and_altered_payloads_are_rejected(public_key):
    data = encrypt_vector(public_key, [1.0, 0.5], bound=1.0, max_terms=2).to_bytes()
    with pytest.raises(PayloadError, match="payload is truncated: expected"):
        EncryptedVector.from_bytes(public_key, data[:-1])
    altered = bytearray(data)
    altered[len(data) // 2] ^= 1
    with pytest.raises(PayloadError, match="payload checksum mismatch"):
        EncryptedVector.from_bytes(public_key, bytes(altered))


def test_keys_round_trip(keypair):
    pk, sk = keypair
    pk2 = public_key_from_bytes(public_key_to_bytes(pk))
    sk2 = private_key_from_bytes(private_key_to_bytes(sk), pk2)
    assert pk2 == pk and sk2 == sk
    assert key_fingerprint(pk2) == key_fingerprint(pk) and len(key_fingerprint(pk)) == 64
