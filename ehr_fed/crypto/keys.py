"""Paillier key generation, key serialization and key fingerprints.

The keys are python-paillier (``phe``) objects; these helpers exist so that no other package of ehr-fed
needs to import ``phe``. Key bytes are a small versioned binary format::

    public : b"EHRFPK" | version (1 byte) | len(n) (4 bytes, big-endian) | n (big-endian)
    private: b"EHRFSK" | version (1 byte) | len(p) | p | len(q) | q

A private key's bytes are the secret itself: store them encrypted at rest and never send them to the
coordinator (see ``docs/crypto.md``, key custody).
"""

from __future__ import annotations

import hashlib
import struct

from phe import paillier

from .errors import KeyMismatchError, PayloadError

__all__ = [
    "MIN_KEY_BITS",
    "generate_keypair",
    "key_fingerprint",
    "public_key_to_bytes",
    "public_key_from_bytes",
    "private_key_to_bytes",
    "private_key_from_bytes",
    "check_public_key",
    "check_private_key",
    "check_key_size",
    "insecure_keys_allowed",
]

#: smallest modulus accepted without ``allow_insecure=True`` (112-bit security, NIST SP 800-57)
MIN_KEY_BITS = 2048
#: smallest modulus accepted even with ``allow_insecure=True`` (tests only)
MIN_INSECURE_KEY_BITS = 512

_PUBLIC_MAGIC = b"EHRFPK"
_PRIVATE_MAGIC = b"EHRFSK"
_KEY_VERSION = 1


def generate_keypair(
    n_length: int = 2048, *, allow_insecure: bool = False
) -> tuple[paillier.PaillierPublicKey, paillier.PaillierPrivateKey]:
    """Generate a Paillier keypair with a modulus of ``n_length`` bits.

    Parameters
    ----------
    n_length : int, default 2048
        Bit length of the modulus ``n = p q``. At least 2048 (about 112-bit security).
    allow_insecure : bool, default False
        Accept ``n_length < 2048`` (down to 512). Only for tests, where a 1024-bit key keeps them fast.

    Returns
    -------
    public_key : phe.PaillierPublicKey
    private_key : phe.PaillierPrivateKey

    Raises
    ------
    ValueError
        If ``n_length`` is below 2048 without ``allow_insecure``, or not an even integer >= 512.
    """
    if isinstance(n_length, bool) or not isinstance(n_length, int):
        raise TypeError(f"n_length must be an int, got {type(n_length).__name__}")
    if n_length % 2 or n_length < MIN_INSECURE_KEY_BITS:
        raise ValueError(
            f"n_length must be an even number of bits >= {MIN_INSECURE_KEY_BITS}, got {n_length}"
        )
    if n_length < MIN_KEY_BITS and not allow_insecure:
        raise ValueError(
            f"n_length={n_length} is below the minimum of {MIN_KEY_BITS} bits; use n_length >= {MIN_KEY_BITS} "
            "(pass allow_insecure=True only in tests)"
        )
    return paillier.generate_paillier_keypair(n_length=n_length)


#: environment variable that turns on the test mode accepting keys below MIN_KEY_BITS
INSECURE_KEYS_ENV = "EHR_FED_ALLOW_INSECURE_KEYS"


def insecure_keys_allowed(allow_insecure: bool = False) -> bool:
    """Whether keys below :data:`MIN_KEY_BITS` are accepted: ``allow_insecure=True`` or the test mode
    ``EHR_FED_ALLOW_INSECURE_KEYS=1`` (set by the test suite; never in production)."""
    import os

    return bool(allow_insecure) or os.environ.get(INSECURE_KEYS_ENV, "") == "1"


def check_key_size(n: int, *, allow_insecure: bool = False, what: str = "Paillier key") -> None:
    """Refuse a modulus below :data:`MIN_KEY_BITS` bits outside the explicit test mode.

    Raises
    ------
    KeyMismatchError
        Naming the key size and the flag (``allow_insecure=True`` / ``--allow-insecure`` /
        ``EHR_FED_ALLOW_INSECURE_KEYS=1``) that accepts it in tests.
    """
    bits = int(n).bit_length()
    if bits >= MIN_KEY_BITS or insecure_keys_allowed(allow_insecure):
        return
    from .errors import InsecureKeyError

    raise InsecureKeyError(
        f"{what} has a {bits}-bit modulus, below the minimum of {MIN_KEY_BITS} bits; short keys are for "
        f"tests only (pass allow_insecure=True / --allow-insecure, or set {INSECURE_KEYS_ENV}=1 in a test "
        "environment); rerun the key ceremony with --bits 2048 or more"
    )


def check_public_key(public_key: object, name: str = "public_key") -> paillier.PaillierPublicKey:
    """Return ``public_key`` if it is a ``phe.PaillierPublicKey``, else raise ``TypeError``."""
    if not isinstance(public_key, paillier.PaillierPublicKey):
        raise TypeError(f"{name} must be a phe.PaillierPublicKey, got {type(public_key).__name__}")
    return public_key


def check_private_key(private_key: object, name: str = "private_key") -> paillier.PaillierPrivateKey:
    """Return ``private_key`` if it is a ``phe.PaillierPrivateKey``, else raise ``TypeError``."""
    if not isinstance(private_key, paillier.PaillierPrivateKey):
        raise TypeError(f"{name} must be a phe.PaillierPrivateKey, got {type(private_key).__name__}")
    return private_key


def _int_to_bytes(value: int) -> bytes:
    return int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")


def raw_fingerprint(n: int) -> bytes:
    """SHA-256 digest (32 bytes) identifying the modulus ``n``."""
    return hashlib.sha256(b"ehr-fed paillier modulus\x00" + _int_to_bytes(n)).digest()


def key_fingerprint(public_key: paillier.PaillierPublicKey) -> str:
    """Hex SHA-256 fingerprint of a public key (64 hex characters); equal keys give equal fingerprints."""
    check_public_key(public_key)
    return raw_fingerprint(public_key.n).hex()


def _pack_ints(*values: int) -> bytes:
    out = bytearray()
    for value in values:
        raw = _int_to_bytes(value)
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def _unpack_ints(data: bytes, magic: bytes, count: int | None, what: str, *, version: int = _KEY_VERSION,
                 max_count: int | None = None) -> list[int]:
    """The integers of ``magic | version | len-prefixed ints``: exactly ``count`` of them, or (``count=None``)
    every integer up to the end, at most ``max_count``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} bytes must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(magic):
        raise PayloadError(
            f"not a serialized {what}: expected the prefix {magic!r}, got {data[: len(magic)]!r}"
        )
    if len(data) < len(magic) + 1 or data[len(magic)] != version:
        got = data[len(magic)] if len(data) > len(magic) else "nothing"
        raise PayloadError(f"unsupported {what} format version: expected {version}, got {got}")
    pos, values = len(magic) + 1, []
    while (len(values) < count) if count is not None else (pos < len(data)):
        if max_count is not None and len(values) >= max_count:
            raise PayloadError(f"serialized {what} holds more integers than any valid {what}")
        if pos + 4 > len(data):
            raise PayloadError(f"serialized {what} is truncated at byte {pos} of {len(data)}")
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + size > len(data):
            raise PayloadError(f"serialized {what} is truncated: needs {pos + size} bytes, got {len(data)}")
        values.append(int.from_bytes(data[pos : pos + size], "big"))
        pos += size
    if pos != len(data):
        raise PayloadError(f"serialized {what} has {len(data) - pos} unexpected trailing bytes")
    return values


def public_key_to_bytes(public_key: paillier.PaillierPublicKey) -> bytes:
    """Serialize a public key (its modulus ``n``)."""
    check_public_key(public_key)
    return _PUBLIC_MAGIC + bytes([_KEY_VERSION]) + _pack_ints(public_key.n)


def public_key_from_bytes(data: bytes) -> paillier.PaillierPublicKey:
    """Read a public key written by :func:`public_key_to_bytes`.

    Raises
    ------
    PayloadError
        If ``data`` is not a serialized public key, is truncated or has trailing bytes.
    """
    (n,) = _unpack_ints(data, _PUBLIC_MAGIC, 1, "public key")
    if n < 2 ** (MIN_INSECURE_KEY_BITS - 1) or n % 2 == 0:
        raise PayloadError(f"serialized public key has an invalid modulus of {n.bit_length()} bits")
    return paillier.PaillierPublicKey(n)


def private_key_to_bytes(private_key: paillier.PaillierPrivateKey) -> bytes:
    """Serialize a private key (its primes ``p`` and ``q``). The result is secret."""
    check_private_key(private_key)
    return _PRIVATE_MAGIC + bytes([_KEY_VERSION]) + _pack_ints(private_key.p, private_key.q)


def private_key_from_bytes(
    data: bytes, public_key: paillier.PaillierPublicKey | None = None
) -> paillier.PaillierPrivateKey:
    """Read a private key written by :func:`private_key_to_bytes`.

    Parameters
    ----------
    data : bytes
    public_key : phe.PaillierPublicKey, optional
        When given, the private key must belong to it (else :class:`KeyMismatchError`).
    """
    p, q = _unpack_ints(data, _PRIVATE_MAGIC, 2, "private key")
    if p < 3 or q < 3 or p == q:
        raise PayloadError("serialized private key has invalid primes")
    restored_public = paillier.PaillierPublicKey(p * q)
    if public_key is not None and check_public_key(public_key).n != restored_public.n:
        raise KeyMismatchError(
            f"private key (fingerprint {key_fingerprint(restored_public)[:16]}) does not belong to the given "
            f"public key (fingerprint {key_fingerprint(public_key)[:16]})"
        )
    return paillier.PaillierPrivateKey(restored_public, p, q)
