"""Additive masks inside the Paillier plaintext space.

With ``g = n + 1`` (python-paillier's choice), ``g**r = 1 + r*n (mod n**2)``, so for any ciphertext ``c`` of
``m``::

    c * (1 + r*n) mod n**2   is a ciphertext of   (m + r) mod n

Masking a ciphertext therefore costs one multiplication modulo ``n**2`` and no exponentiation. Masks that sum
to zero modulo ``n`` over a set of contributions leave the homomorphic sum of exactly that set unchanged,
while each contribution alone (or any proper subset) decrypts to a uniformly random residue.

:func:`expand_residues` turns a 32-byte seed into pseudo-random residues modulo ``n`` with SHAKE-256 (an
extendable-output function, FIPS 202): each residue takes ``bytes(n) + 16`` output bytes, so its bias from
uniform is below ``2**-128``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import gmpy2

from .keys import check_public_key

__all__ = ["expand_residues", "mask_ciphertexts", "mask_vector"]

_MPZ = type(gmpy2.mpz(0))
_EXTRA_BYTES = 16


def expand_residues(seed: bytes, label: bytes, count: int, n: int) -> list:
    """``count`` pseudo-random residues modulo ``n`` from ``seed`` (domain-separated by ``label``).

    The same ``(seed, label, count, n)`` always gives the same residues; distinct labels give independent
    streams.
    """
    if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
        raise ValueError("a mask seed must be at least 16 bytes")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return []
    width = (int(n).bit_length() + 7) // 8 + _EXTRA_BYTES
    xof = hashlib.shake_256()
    xof.update(b"ehr-fed mask stream v1\x00")
    xof.update(len(seed).to_bytes(2, "big") + bytes(seed))
    xof.update(len(label).to_bytes(4, "big") + bytes(label))
    xof.update(int(count).to_bytes(8, "big"))
    stream = xof.digest(width * count)
    nz = gmpy2.mpz(n)
    return [gmpy2.mpz(int.from_bytes(stream[i * width:(i + 1) * width], "big")) % nz for i in range(count)]


def mask_ciphertexts(public_key, ciphertexts: Sequence, residues: Sequence) -> list:
    """``c_i * (1 + r_i * n) mod n**2`` for each ciphertext: the plaintexts become ``m_i + r_i (mod n)``."""
    check_public_key(public_key)
    if len(ciphertexts) != len(residues):
        raise ValueError(f"{len(ciphertexts)} ciphertexts but {len(residues)} mask residues")
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    return [gmpy2.mpz(c) * (1 + (gmpy2.mpz(r) % n) * n) % nsquare for c, r in zip(ciphertexts, residues, strict=True)]


def mask_vector(vector, residues: Sequence):
    """A copy of an :class:`~ehr_fed.crypto.vector.EncryptedVector` whose every plaintext is shifted by the
    matching residue (modulo ``n``); layout, term count and exponents are kept."""
    from .vector import EncryptedVector

    if not isinstance(vector, EncryptedVector):
        raise TypeError(f"mask_vector needs an EncryptedVector, got {type(vector).__name__}")
    cts = mask_ciphertexts(vector.public_key, vector._ciphertexts, residues)
    return EncryptedVector(vector.public_key, vector.layout, cts, vector.n_terms, exponents=vector._exponents)
