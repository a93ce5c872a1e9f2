"""Paillier engine: packed, fast, checked encrypted vectors on python-paillier keys.

The only package of ehr-fed that imports ``phe``. See ``docs/crypto.md`` for the encoding, its precision,
the security argument and the wire format.

>>> pk, sk = generate_keypair(2048)                                      # doctest: +SKIP
>>> ev = encrypt_vector(pk, [0.5, -1.25], bound=2.0, max_terms=3)        # doctest: +SKIP
>>> decrypt_vector(sk, ev + ev)                                          # doctest: +SKIP
array([ 1. , -2.5])
"""

from __future__ import annotations

from .encoding import DEFAULT_FRAC_BITS, Layout
from .errors import CryptoError, EncodingOverflowError, KeyMismatchError, LayoutMismatchError, PayloadError
from .keys import (
    MIN_KEY_BITS,
    generate_keypair,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
)
from .obfuscation import ObfuscatorPool
from .parallel import shutdown_workers
from .vector import EncryptedVector, decrypt_vector, encrypt_vector

__all__ = [
    "generate_keypair",
    "encrypt_vector",
    "decrypt_vector",
    "EncryptedVector",
    "Layout",
    "ObfuscatorPool",
    "public_key_to_bytes",
    "public_key_from_bytes",
    "private_key_to_bytes",
    "private_key_from_bytes",
    "key_fingerprint",
    "shutdown_workers",
    "CryptoError",
    "KeyMismatchError",
    "LayoutMismatchError",
    "EncodingOverflowError",
    "PayloadError",
    "DEFAULT_FRAC_BITS",
    "MIN_KEY_BITS",
]
