"""Wire format of :class:`EncryptedVector` (version 1).

::

    header   : magic b"EHRFEV" | version u8 | flags u8 (bit 0: packed) | key fingerprint (32 bytes)
               | bound f64 | max_terms u64 | frac_bits u16 | slots_per_ciphertext u16 | slot_bits u32
               | length u64 | n_terms u64 | n_ciphertexts u64 | ciphertext_bytes u32        (big-endian)
    exponents: n_ciphertexts x i32 (unpacked vectors only: phe's EncodedNumber exponents)
    body     : n_ciphertexts x ciphertext_bytes, each ciphertext big-endian, ciphertext_bytes = bytes(n**2)
    trailer  : SHA-256 of everything above (32 bytes)

The checksum detects truncation and accidental corruption; it is not a signature (an active attacker can
recompute it; transport authentication is the federation's job). Reading checks, in order: the magic and
version, the exact size, the checksum, the key fingerprint, that the layout is the one this key gives for
(bound, max_terms, frac_bits), the term count, and that every ciphertext is in ``[1, n**2)`` and invertible
modulo ``n``.
"""

from __future__ import annotations

import hashlib
import struct

import gmpy2

from .encoding import Layout, make_layout
from .errors import EncodingOverflowError, KeyMismatchError, PayloadError
from .keys import check_public_key, raw_fingerprint

__all__ = ["vector_to_bytes", "vector_from_bytes", "FORMAT_VERSION"]

MAGIC = b"EHRFEV"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">6sBB32sdQHHIQQQI")
_DIGEST_BYTES = 32


def _ciphertext_bytes(public_key) -> int:
    return (public_key.nsquare.bit_length() + 7) // 8


def vector_to_bytes(vector) -> bytes:
    """Serialize an :class:`EncryptedVector` (see the module docstring for the format)."""
    layout, public_key = vector.layout, vector.public_key
    width = _ciphertext_bytes(public_key)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        1 if layout.packed else 0,
        raw_fingerprint(public_key.n),
        layout.bound,
        layout.max_terms,
        layout.frac_bits,
        layout.slots_per_ciphertext,
        layout.slot_bits,
        layout.length,
        vector.n_terms,
        len(vector.ciphertexts),
        width,
    )
    parts = [header]
    if not layout.packed:
        parts.append(struct.pack(f">{len(vector.ciphertexts)}i", *vector._exponents))
    parts.append(b"".join(c.to_bytes(width, "big") for c in vector._ciphertexts))
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def _parse_header(data: bytes):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise PayloadError(
            f"not an encrypted vector payload: expected the prefix {MAGIC!r}, got {data[:6]!r}"
        )
    if len(data) < _HEADER.size + _DIGEST_BYTES:
        raise PayloadError(
            f"payload is truncated: {len(data)} bytes is shorter than the {_HEADER.size + _DIGEST_BYTES}-byte "
            "header and checksum"
        )
    fields = _HEADER.unpack_from(data)
    if fields[1] != FORMAT_VERSION:
        raise PayloadError(
            f"unsupported payload format version {fields[1]}: this ehr-fed reads version {FORMAT_VERSION}; "
            "upgrade ehr-fed on the reading side or re-encrypt with the same version"
        )
    return data, fields


def vector_from_bytes(public_key, data: bytes):
    """Read an :class:`EncryptedVector` written by :func:`vector_to_bytes`, checking it fully.

    Raises
    ------
    PayloadError
        If the payload has the wrong magic or version, is truncated or has trailing bytes, fails its checksum,
        carries an inconsistent layout or term count, or holds an out-of-range ciphertext.
    KeyMismatchError
        If the payload was encrypted under another public key.
    """
    from .vector import EncryptedVector

    check_public_key(public_key)
    data, fields = _parse_header(data)
    (
        _,
        _,
        flags,
        fingerprint,
        bound,
        max_terms,
        frac_bits,
        slots,
        slot_bits,
        length,
        n_terms,
        count,
        width,
    ) = fields
    packed = bool(flags & 1)
    expected = _HEADER.size + (0 if packed else 4 * count) + count * width + _DIGEST_BYTES
    if len(data) < expected:
        raise PayloadError(f"payload is truncated: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise PayloadError(
            f"payload has {len(data) - expected} unexpected trailing bytes (expected {expected})"
        )
    if hashlib.sha256(data[:-_DIGEST_BYTES]).digest() != data[-_DIGEST_BYTES:]:
        raise PayloadError("payload checksum mismatch: the bytes were altered or corrupted in transit")
    if fingerprint != raw_fingerprint(public_key.n):
        raise KeyMismatchError(
            f"payload was encrypted under key {fingerprint.hex()[:16]}, not under the given public key "
            f"{raw_fingerprint(public_key.n).hex()[:16]}; use the federation's public key"
        )
    layout = _check_layout(public_key, bound, max_terms, frac_bits, slots, slot_bits, length, packed)
    if count != layout.n_ciphertexts or width != _ciphertext_bytes(public_key):
        raise PayloadError(
            f"payload holds {count} ciphertexts of {width} bytes; the layout needs {layout.n_ciphertexts} of "
            f"{_ciphertext_bytes(public_key)} bytes"
        )
    if not 1 <= n_terms <= max_terms:
        raise PayloadError(f"payload claims n_terms={n_terms}, outside [1, max_terms={max_terms}]")
    pos = _HEADER.size
    exponents = None
    if not packed:
        exponents = struct.unpack_from(f">{count}i", data, pos)
        pos += 4 * count
    view = memoryview(data)
    ciphertexts = [
        gmpy2.mpz.from_bytes(view[pos + i * width : pos + (i + 1) * width], "big") for i in range(count)
    ]
    _check_ciphertexts(public_key, ciphertexts)
    return EncryptedVector(public_key, layout, ciphertexts, n_terms, exponents=exponents)


def _check_layout(public_key, bound, max_terms, frac_bits, slots, slot_bits, length, packed) -> Layout:
    try:
        layout = make_layout(
            public_key.n, length, bound=bound, max_terms=max_terms, frac_bits=frac_bits, pack=packed
        )
    except (ValueError, TypeError, EncodingOverflowError) as exc:
        raise PayloadError(f"payload carries an invalid layout: {exc}") from None
    if (layout.slots_per_ciphertext, layout.slot_bits) != (slots, slot_bits) or (not packed and frac_bits):
        raise PayloadError(
            f"payload layout is inconsistent: {slots} slots of {slot_bits} bits, but bound={bound}, "
            f"max_terms={max_terms}, frac_bits={frac_bits} give {layout.slots_per_ciphertext} slots of "
            f"{layout.slot_bits} bits under this key"
        )
    return layout


def _check_ciphertexts(public_key, ciphertexts: list[int]) -> None:
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    for index, c in enumerate(ciphertexts):
        if not 0 < c < nsquare:
            raise PayloadError(f"ciphertext {index} is out of range: it must lie in [1, n**2)")
        if gmpy2.gcd(c, n) != 1:
            raise PayloadError(
                f"ciphertext {index} is not invertible modulo n: not a valid Paillier ciphertext"
            )
