"""Wire format of encrypted vectors: round trips and every way a payload can be wrong."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.crypto import (
    EncodingOverflowError,
    EncryptedVector,
    KeyMismatchError,
    PayloadError,
    decrypt_vector,
    encrypt_vector,
)
from ehr_fed.crypto.serialization import _HEADER


def _reseal(body: bytes) -> bytes:
    """Recompute the checksum, as an attacker (not a transmission error) would."""
    return body + hashlib.sha256(body).digest()


def _with_header(data: bytes, **changes) -> bytes:
    names = (
        "magic version flags fingerprint bound max_terms frac_bits slots slot_bits length n_terms count width"
    ).split()
    fields = dict(zip(names, _HEADER.unpack_from(data), strict=True))
    fields.update(changes)
    return _reseal(_HEADER.pack(*fields.values()) + data[_HEADER.size : -32])


@pytest.fixture(scope="module")
def payload(public_key):
    ev = encrypt_vector(public_key, np.linspace(-1, 1, 50), bound=1.0, max_terms=4)
    return ev, (ev + ev).to_bytes()


@settings(max_examples=12, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), max_size=60),
    st.booleans(),
    st.integers(1, 3),
)
def test_serialization_round_trips(public_key, private_key, values, pack, copies):
    ev = sum([encrypt_vector(public_key, values, bound=100.0, max_terms=3, pack=pack)] * copies)
    back = EncryptedVector.from_bytes(public_key, ev.to_bytes())
    assert back.layout == ev.layout and back.n_terms == copies and back.ciphertexts == ev.ciphertexts
    assert back.to_bytes() == ev.to_bytes()
    np.testing.assert_array_equal(decrypt_vector(private_key, back), decrypt_vector(private_key, ev))


def test_bytes_per_value_of_a_packed_vector(public_key, payload):
    ev, data = payload
    ciphertext_bytes = (public_key.nsquare.bit_length() + 7) // 8
    assert len(data) == _HEADER.size + len(ev.ciphertexts) * ciphertext_bytes + 32
    assert len(ev.ciphertexts) == -(-50 // ev.layout.slots_per_ciphertext)


def test_payload_for_another_key_is_rejected(public_key, other_keypair):
    data = encrypt_vector(other_keypair[0], [1.0], bound=1.0, max_terms=2).to_bytes()
    with pytest.raises(
        KeyMismatchError, match="payload was encrypted under key .* not under the given public key"
    ):
        EncryptedVector.from_bytes(public_key, data)


def test_truncated_payloads_are_rejected(public_key, payload):
    _, data = payload
    with pytest.raises(
        PayloadError, match=f"payload is truncated: expected {len(data)} bytes, got {len(data) - 1}"
    ):
        EncryptedVector.from_bytes(public_key, data[:-1])
    with pytest.raises(PayloadError, match="payload is truncated: 20 bytes is shorter than the"):
        EncryptedVector.from_bytes(public_key, data[:20])
    with pytest.raises(PayloadError, match="2 unexpected trailing bytes"):
        EncryptedVector.from_bytes(public_key, data + b"\x00\x00")


@pytest.mark.parametrize("position", [7, 60, 200, -40, -1])
def test_altered_bytes_fail_the_checksum(public_key, payload, position):
    _, data = payload
    altered = bytearray(data)
    altered[position] ^= 0x10
    with pytest.raises(PayloadError, match="payload checksum mismatch: the bytes were altered or corrupted"):
        EncryptedVector.from_bytes(public_key, bytes(altered))


def test_wrong_magic_version_and_type(public_key, payload):
    _, data = payload
    with pytest.raises(PayloadError, match="not an encrypted vector payload: expected the prefix b'EHRFEV'"):
        EncryptedVector.from_bytes(public_key, b"XXXXXX" + data[6:])
    with pytest.raises(
        PayloadError, match="unsupported payload format version 2: this ehr-fed reads version 1"
    ):
        EncryptedVector.from_bytes(public_key, _with_header(data, version=2))
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        EncryptedVector.from_bytes(public_key, "EHRFEV")


def test_inconsistent_layout_is_rejected(public_key, payload):
    _, data = payload
    with pytest.raises(PayloadError, match="payload layout is inconsistent: 36 slots of 57 bits"):
        EncryptedVector.from_bytes(public_key, _with_header(data, slots=36, slot_bits=57))
    with pytest.raises(PayloadError, match="payload carries an invalid layout: bound must be a positive"):
        EncryptedVector.from_bytes(public_key, _with_header(data, bound=-1.0))
    with pytest.raises(PayloadError, match="payload claims n_terms=5, outside \\[1, max_terms=4\\]"):
        EncryptedVector.from_bytes(public_key, _with_header(data, n_terms=5))


def test_out_of_range_ciphertexts_are_rejected(public_key, payload):
    _, data = payload
    width = (public_key.nsquare.bit_length() + 7) // 8
    start = _HEADER.size
    for value, match in [
        (0, "ciphertext 0 is out of range: it must lie in \\[1, n\\*\\*2\\)"),
        (public_key.nsquare, "ciphertext 0 is out of range"),
        (public_key.n * 7, "ciphertext 0 is not invertible modulo n"),
    ]:
        body = data[:start] + value.to_bytes(width, "big") + data[start + width : -32]
        with pytest.raises(PayloadError, match=match):
            EncryptedVector.from_bytes(public_key, _reseal(body))


def test_resealed_substituted_ciphertext_is_caught_at_decryption(public_key, private_key, payload):
    ev, data = payload
    width = (public_key.nsquare.bit_length() + 7) // 8
    start = _HEADER.size
    forged_ct = ev.ciphertexts[0] * pow(public_key.n + 1, 2**1000, public_key.nsquare) % public_key.nsquare
    body = data[:start] + forged_ct.to_bytes(width, "big") + data[start + width : -32]
    forged = EncryptedVector.from_bytes(public_key, _reseal(body))  # structurally valid
    with pytest.raises(EncodingOverflowError, match="the ciphertext was altered"):
        decrypt_vector(private_key, forged)


def test_unpacked_payload_carries_exponents(public_key, private_key):
    ev = encrypt_vector(public_key, [1.5, -2.25], bound=4.0, max_terms=2, pack=False)
    data = ev.to_bytes()
    assert len(data) == _HEADER.size + 2 * 4 + 2 * ((public_key.nsquare.bit_length() + 7) // 8) + 32
    assert struct.unpack_from(">2i", data, _HEADER.size) == tuple(e.exponent for e in ev.encrypted_numbers)
    np.testing.assert_array_equal(
        decrypt_vector(private_key, EncryptedVector.from_bytes(public_key, data)), [1.5, -2.25]
    )
