"""Wire format of :class:`EncryptedVector` (version 1).

::

    header   : magic b"EHRFEV" | version u8 | flags u8 (bit 0: packed, bit 1: integer) | key fingerprint (32 bytes)
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
from typing import NamedTuple

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
        (1 if layout.packed else 0) | (2 if layout.integer else 0),
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


class _Header(NamedTuple):
    magic: bytes
    version: int
    flags: int
    fingerprint: bytes
    bound: float
    max_terms: int
    frac_bits: int
    slots: int
    slot_bits: int
    length: int
    n_terms: int
    count: int
    width: int

    @property
    def packed(self) -> bool:
        return bool(self.flags & 1)

    @property
    def integer(self) -> bool:
        return bool(self.flags & 2)

    def payload_size(self) -> int:
        exponents = 0 if self.packed else 4 * self.count
        return _HEADER.size + exponents + self.count * self.width + _DIGEST_BYTES


def _parse_envelope(data: bytes) -> tuple[bytes, _Header]:
    """Check magic, version, exact size and checksum; return the bytes and the header."""
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
    header = _Header(*_HEADER.unpack_from(data))
    if header.version != FORMAT_VERSION:
        raise PayloadError(
            f"unsupported payload format version {header.version}: this ehr-fed reads version "
            f"{FORMAT_VERSION}; upgrade ehr-fed on the reading side or re-encrypt with the same version"
        )
    expected = header.payload_size()
    if len(data) < expected:
        raise PayloadError(f"payload is truncated: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise PayloadError(
            f"payload has {len(data) - expected} unexpected trailing bytes (expected {expected})"
        )
    if hashlib.sha256(data[:-_DIGEST_BYTES]).digest() != data[-_DIGEST_BYTES:]:
        raise PayloadError("payload checksum mismatch: the bytes were altered or corrupted in transit")
    return data, header


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
    data, h = _parse_envelope(data)
    if h.fingerprint != raw_fingerprint(public_key.n):
        raise KeyMismatchError(
            f"payload was encrypted under key {h.fingerprint.hex()[:16]}, not under the given public key "
            f"{raw_fingerprint(public_key.n).hex()[:16]}; use the federation's public key"
        )
    layout = _check_layout(public_key, h)
    if h.count != layout.n_ciphertexts or h.width != _ciphertext_bytes(public_key):
        raise PayloadError(
            f"payload holds {h.count} ciphertexts of {h.width} bytes; the layout needs "
            f"{layout.n_ciphertexts} of {_ciphertext_bytes(public_key)} bytes"
        )
    if not 1 <= h.n_terms <= h.max_terms:
        raise PayloadError(f"payload claims n_terms={h.n_terms}, outside [1, max_terms={h.max_terms}]")
    pos, exponents = _HEADER.size, None
    if not h.packed:
        exponents = struct.unpack_from(f">{h.count}i", data, pos)
        pos += 4 * h.count
    view, width = memoryview(data), h.width
    ciphertexts = [
        gmpy2.mpz.from_bytes(view[pos + i * width : pos + (i + 1) * width], "big") for i in range(h.count)
    ]
    check_ciphertexts(public_key, ciphertexts)
    return EncryptedVector(public_key, layout, ciphertexts, h.n_terms, exponents=exponents)


def _check_layout(public_key, h: _Header) -> Layout:
    """The layout this key gives for the header's parameters, which must match the header's slots."""
    if h.flags & ~3:
        raise PayloadError(f"payload carries unknown layout flags {h.flags:#04x}; upgrade ehr-fed on the reading side")
    try:
        layout = make_layout(
            public_key.n, h.length, bound=h.bound, max_terms=h.max_terms, frac_bits=h.frac_bits, pack=h.packed,
            integer=h.integer,
        )
    except (ValueError, TypeError, EncodingOverflowError) as exc:
        raise PayloadError(f"payload carries an invalid layout: {exc}") from None
    if (layout.slots_per_ciphertext, layout.slot_bits) != (h.slots, h.slot_bits) or (
        not h.packed and h.frac_bits
    ):
        raise PayloadError(
            f"payload layout is inconsistent: {h.slots} slots of {h.slot_bits} bits, but bound={h.bound}, "
            f"max_terms={h.max_terms}, frac_bits={h.frac_bits} give {layout.slots_per_ciphertext} slots of "
            f"{layout.slot_bits} bits under this key"
        )
    return layout


def check_ciphertexts(public_key, ciphertexts: list[int], *,
                      out_of_range: str = "is out of range: it must lie in [1, n**2)") -> None:
    """Raise :class:`PayloadError` unless every ciphertext is a unit of ``Z_(n**2)`` in ``[1, n**2)``."""
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    product = gmpy2.mpz(1)
    for index, c in enumerate(ciphertexts):
        if not 0 < c < nsquare:
            raise PayloadError(f"ciphertext {index} {out_of_range}")
        product = product * c % n
    if gmpy2.gcd(product, n) == 1:  # every ciphertext is invertible modulo n (one gcd instead of one each)
        return
    for index, c in enumerate(ciphertexts):
        if gmpy2.gcd(c, n) != 1:
            raise PayloadError(
                f"ciphertext {index} is not invertible modulo n: not a valid Paillier ciphertext"
            )
