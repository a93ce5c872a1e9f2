"""Key generation policy, key serialization and fingerprints."""

from __future__ import annotations

import pytest

from ehr_fed.crypto import (
    KeyMismatchError,
    PayloadError,
    generate_keypair,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
)


def test_keys_below_2048_bits_need_the_explicit_flag():
    with pytest.raises(
        ValueError, match=r"n_length=1024 is below the minimum of 2048 bits.*allow_insecure=True"
    ):
        generate_keypair(1024)


@pytest.mark.parametrize("n_length", [256, 1025])
def test_key_sizes_that_are_never_allowed(n_length):
    with pytest.raises(ValueError, match="n_length must be an even number of bits >= 512"):
        generate_keypair(n_length, allow_insecure=True)


def test_n_length_must_be_an_int():
    with pytest.raises(TypeError, match="n_length must be an int, got float"):
        generate_keypair(2048.0)


def test_public_and_private_keys_round_trip(keypair):
    pk, sk = keypair
    pk2 = public_key_from_bytes(public_key_to_bytes(pk))
    sk2 = private_key_from_bytes(private_key_to_bytes(sk), pk2)
    assert pk2 == pk and sk2 == sk and sk2.public_key == pk
    assert pk.n.bit_length() == 1024


def test_fingerprint_is_stable_and_distinguishes_keys(keypair, other_keypair):
    pk = keypair[0]
    assert key_fingerprint(pk) == key_fingerprint(public_key_from_bytes(public_key_to_bytes(pk)))
    assert key_fingerprint(pk) != key_fingerprint(other_keypair[0])
    assert len(key_fingerprint(pk)) == 64 and int(key_fingerprint(pk), 16) >= 0


def test_private_key_of_another_public_key_is_rejected(keypair, other_keypair):
    with pytest.raises(KeyMismatchError, match="does not belong to the given public key"):
        private_key_from_bytes(private_key_to_bytes(other_keypair[1]), keypair[0])


def test_malformed_key_bytes_are_rejected(keypair):
    data = public_key_to_bytes(keypair[0])
    with pytest.raises(PayloadError, match="serialized public key is truncated"):
        public_key_from_bytes(data[:-3])
    with pytest.raises(PayloadError, match="3 unexpected trailing bytes"):
        public_key_from_bytes(data + b"abc")
    with pytest.raises(PayloadError, match="not a serialized public key: expected the prefix b'EHRFPK'"):
        public_key_from_bytes(private_key_to_bytes(keypair[1]))
    with pytest.raises(PayloadError, match="unsupported public key format version: expected 1, got 9"):
        public_key_from_bytes(data[:6] + b"\x09" + data[7:])
    with pytest.raises(TypeError, match="public key bytes must be bytes, got str"):
        public_key_from_bytes("EHRFPK")


def test_key_helpers_check_types():
    with pytest.raises(TypeError, match="public_key must be a phe.PaillierPublicKey, got int"):
        key_fingerprint(12345)
    with pytest.raises(TypeError, match="private_key must be a phe.PaillierPrivateKey, got str"):
        private_key_to_bytes("secret")
