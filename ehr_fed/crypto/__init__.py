"""Paillier engine: packed, fast, checked encrypted vectors on python-paillier keys.

The only package of ehr-fed that imports ``phe``. See ``docs/crypto.md`` for the encoding, its precision,
the security argument and the wire format.

>>> pk, sk = generate_keypair(2048)                                      # doctest: +SKIP
>>> ev = encrypt_vector(pk, [0.5, -1.25], bound=2.0, max_terms=3)        # doctest: +SKIP
>>> decrypt_vector(sk, ev + ev)                                          # doctest: +SKIP
array([ 1. , -2.5])

Threshold decryption (any 2 of 3 share holders decrypt, see ``docs/crypto.md``):

>>> pk, shares = generate_threshold_keypair(2048, n_shares=3, threshold=2)  # doctest: +SKIP
>>> partials = {s.index: partial_decrypt(s, ev) for s in shares[:2]}       # doctest: +SKIP
>>> decode_vector(ev, combine_partials(pk, partials, threshold=2, n_shares=3))  # doctest: +SKIP
"""

from __future__ import annotations

from .encoding import DEFAULT_FRAC_BITS, Layout
from .errors import (
    CryptoError,
    EncodingOverflowError,
    InsecureKeyError,
    KeyMismatchError,
    LayoutMismatchError,
    PayloadError,
)
from .keys import (
    MIN_KEY_BITS,
    check_key_size,
    generate_keypair,
    insecure_keys_allowed,
    key_fingerprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_from_bytes,
    public_key_to_bytes,
)
from .obfuscation import ObfuscatorPool
from .parallel import shutdown_workers
from .partial import combine_partials, partial_decrypt
from .proofs import PartialProof, prove_partial, verify_partial
from .threshold import (
    ThresholdError,
    ThresholdKeyShare,
    VerificationKeys,
    generate_threshold_keypair,
    share_fingerprint,
)
from .vector import EncryptedVector, decode_integers, decode_vector, decrypt_vector, encrypt_vector

__all__ = [
    "generate_keypair",
    "encrypt_vector",
    "decrypt_vector",
    "decode_vector",
    "decode_integers",
    "EncryptedVector",
    "Layout",
    "ObfuscatorPool",
    "public_key_to_bytes",
    "public_key_from_bytes",
    "private_key_to_bytes",
    "private_key_from_bytes",
    "key_fingerprint",
    "shutdown_workers",
    "generate_threshold_keypair",
    "ThresholdKeyShare",
    "VerificationKeys",
    "share_fingerprint",
    "partial_decrypt",
    "combine_partials",
    "PartialProof",
    "prove_partial",
    "verify_partial",
    "ThresholdError",
    "CryptoError",
    "KeyMismatchError",
    "LayoutMismatchError",
    "EncodingOverflowError",
    "PayloadError",
    "InsecureKeyError",
    "check_key_size",
    "insecure_keys_allowed",
    "DEFAULT_FRAC_BITS",
    "MIN_KEY_BITS",
]
