"""Proofs that partial decryptions are correct (Shoup 2000), batched over a whole vector.

Share holder ``i`` claims ``c_ij = c_j**(2 x) mod n**2`` for every ciphertext ``c_j`` of a batch, with
``x = Delta s_i`` and its public verification key ``v_i = v**x``. Squares are compared (``c_ij**2`` against
``(c_j**4)**x``) so that the statements live in the group of squares modulo ``n**2``, whose order
``n p' q'`` has no small prime factor.

Batching (small-exponent test, Bellare, Garay and Rabin 1998): 128-bit weights ``rho_j`` are drawn from a
hash of the whole statement (modulus, ``v``, ``v_i``, every ``c_j`` and ``c_ij``), and the single statement
``C_i**2 = (C**4)**x`` with ``C = prod c_j**rho_j``, ``C_i = prod c_ij**rho_j`` is proved. If any one
``c_ij`` is wrong (beyond a sign, which the combination squares away), the combined statement is false except
with probability about ``2**-128``. Then the equality of discrete logarithms ``log_(C**4) C_i**2 =
log_v v_i`` is proved non-interactively (Fiat-Shamir with SHA-256)::

    prover  : r random of |x| + 384 bits, a = C**(4 r), b = v**r, e = H(statement, a, b) (256 bits), z = r + e x
    verifier: a = C**(4 z) * C_i**(-2 e), b = v**z * v_i**(-e), accept iff e == H(statement, a, b)

Cost: the two weighted products are multi-exponentiations with 128-bit exponents (bucket method: about
``128 / w`` multiplications per ciphertext for windows of ``w`` bits) plus two full exponentiations per
batch, for the prover and again for the verifier: a few percent of the partial decryptions of a long vector. The proof is statistically zero-knowledge (``r`` is
384 bits longer than ``e x``) and 2 integers long.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass

import gmpy2

from .errors import PayloadError
from .partial import raw_ciphertexts
from .threshold import ThresholdError, ThresholdKeyShare, VerificationKeys

__all__ = ["PartialProof", "prove_partial", "verify_partial"]

_WEIGHT_BITS = 128
_CHALLENGE_BITS = 256
_SLACK_BITS = 128
_MAGIC = b"EHRFTP"
_VERSION = 1


@dataclass(frozen=True)
class PartialProof:
    """A proof that share ``index``'s partial decryptions of one batch are correct."""

    index: int
    challenge: int
    response: int

    def to_bytes(self) -> bytes:
        z = self.response.to_bytes((self.response.bit_length() + 7) // 8 or 1, "big")
        return _MAGIC + struct.pack(">BH32sI", _VERSION, self.index, self.challenge.to_bytes(32, "big"), len(z)) + z

    @classmethod
    def from_bytes(cls, data: bytes) -> PartialProof:
        """Read :meth:`to_bytes` output (PayloadError on anything else)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"proof bytes must be bytes, got {type(data).__name__}")
        data, head = bytes(data), len(_MAGIC) + struct.calcsize(">BH32sI")
        if not data.startswith(_MAGIC):
            raise PayloadError(f"not a serialized partial-decryption proof: expected the prefix {_MAGIC!r}")
        if len(data) < head:
            raise PayloadError(f"serialized proof is truncated: {len(data)} bytes, the header alone is {head}")
        version, index, e, size = struct.unpack_from(">BH32sI", data, len(_MAGIC))
        if version != _VERSION:
            raise PayloadError(f"unsupported proof format version: expected {_VERSION}, got {version}")
        if len(data) != head + size:
            raise PayloadError(f"serialized proof has {len(data)} bytes, its header says {head + size}")
        return cls(index, int.from_bytes(e, "big"), int.from_bytes(data[head:], "big"))


def _int_bytes(value, width: int) -> bytes:
    return int(value).to_bytes(width, "big")


def _statement(verification: VerificationKeys, index: int, cts: list, parts: list) -> bytes:
    n = verification.n
    width = (2 * n.bit_length() + 7) // 8
    h = hashlib.sha256(b"ehr-fed threshold partial proof v1\x00")
    h.update(struct.pack(">HHHQ", verification.threshold, verification.n_shares, index, len(cts)))
    for value in (n, verification.base, verification.key_of(index)):
        h.update(_int_bytes(value, width))
    for c, c_i in zip(cts, parts, strict=True):
        h.update(_int_bytes(c, width))
        h.update(_int_bytes(c_i, width))
    return h.digest()


def _weights(digest: bytes, count: int) -> list[int]:
    stream = hashlib.shake_256(digest + b"weights").digest(count * _WEIGHT_BITS // 8)
    size = _WEIGHT_BITS // 8
    return [int.from_bytes(stream[k * size : (k + 1) * size], "big") | 1 for k in range(count)]


def multi_exp(bases: list, exponents: list[int], modulus, bits: int) -> gmpy2.mpz:
    """``prod bases[k]**exponents[k] mod modulus`` for exponents below ``2**bits`` (bucket method)."""
    window = max(2, min(10, len(bases).bit_length() - 2))
    mask = (1 << window) - 1
    result = gmpy2.mpz(1)
    for shift in reversed(range(0, bits, window)):
        if result != 1:
            for _ in range(window):
                result = result * result % modulus
        buckets: list = [None] * (mask + 1)
        for base, exponent in zip(bases, exponents, strict=True):
            digit = (exponent >> shift) & mask
            if digit:
                bucket = buckets[digit]
                buckets[digit] = base if bucket is None else bucket * base % modulus
        running, total = gmpy2.mpz(1), gmpy2.mpz(1)
        for digit in range(mask, 0, -1):  # total = prod bucket[d]**d
            if buckets[digit] is not None:
                running = running * buckets[digit] % modulus
            if running != 1:
                total = total * running % modulus
        result = result * total % modulus
    return result


def _combined(verification, index, cts, parts):
    if len(cts) != len(parts):
        raise ThresholdError(f"{len(parts)} partial decryptions for {len(cts)} ciphertexts")
    nsquare = gmpy2.mpz(verification.n) ** 2
    digest = _statement(verification, index, cts, parts)
    rho = _weights(digest, len(cts))
    big_c = multi_exp(cts, rho, nsquare, _WEIGHT_BITS)
    big_ci = multi_exp([gmpy2.mpz(c) for c in parts], rho, nsquare, _WEIGHT_BITS)
    return digest, big_c * big_c % nsquare * big_c * big_c % nsquare, big_ci * big_ci % nsquare, nsquare


def _challenge(digest: bytes, width: int, *values) -> int:
    h = hashlib.sha256(digest + b"challenge")
    for value in values:
        h.update(_int_bytes(value, width))
    return int.from_bytes(h.digest(), "big")


def _response_bits(verification: VerificationKeys) -> int:
    x_bits = (verification.delta * verification.n * verification.n).bit_length()
    return x_bits + _CHALLENGE_BITS + _SLACK_BITS


def prove_partial(share: ThresholdKeyShare, ciphertexts, partials, *, workers: int | None = None) -> PartialProof:
    """Prove that ``partials == partial_decrypt(share, ciphertexts)`` (one proof for the whole batch).

    ``workers`` is accepted for symmetry with :func:`~ehr_fed.crypto.partial_decrypt`; the proof runs in the
    calling thread (its cost is a few percent of the partial decryption).
    """
    if not isinstance(share, ThresholdKeyShare):
        raise TypeError(f"share must be a ThresholdKeyShare, got {type(share).__name__}")
    verification = share.verification
    cts = raw_ciphertexts(share.public_key, ciphertexts)
    parts = [int(c) for c in partials]
    digest, c4, ci2, nsquare = _combined(verification, share.index, cts, parts)
    x = share.delta * share.share
    r = gmpy2.mpz(secrets.randbits(_response_bits(verification)))
    a = gmpy2.powmod(c4, r, nsquare)
    b = gmpy2.powmod(verification.base, r, nsquare)
    width = (nsquare.bit_length() + 7) // 8
    e = _challenge(digest, width, c4, ci2, a, b)
    return PartialProof(share.index, e, int(r + e * x))


def verify_partial(verification: VerificationKeys, index: int, ciphertexts, partials, proof: PartialProof, *,
                   workers: int | None = None) -> bool:
    """True if ``proof`` shows that share ``index``'s ``partials`` of ``ciphertexts`` are correct.

    Returns False for a wrong partial, a proof of another share, batch or key, or a malformed proof;
    raises only for arguments of the wrong type or length.
    """
    if not isinstance(verification, VerificationKeys):
        raise TypeError(f"verification must be VerificationKeys, got {type(verification).__name__}")
    if not isinstance(proof, PartialProof):
        raise TypeError(f"proof must be a PartialProof, got {type(proof).__name__}")
    if proof.index != index or not 1 <= index <= verification.n_shares:
        return False
    if not 0 <= proof.response < (1 << (_response_bits(verification) + 1)) or proof.challenge >> _CHALLENGE_BITS:
        return False
    cts = raw_ciphertexts(verification.public_key, ciphertexts)
    parts = [int(c) for c in partials]
    if any(not 0 < c < verification.n * verification.n for c in parts):
        return False
    digest, c4, ci2, nsquare = _combined(verification, index, cts, parts)
    z, e = gmpy2.mpz(proof.response), gmpy2.mpz(proof.challenge)
    try:
        a = gmpy2.powmod(c4, z, nsquare) * gmpy2.invert(gmpy2.powmod(ci2, e, nsquare), nsquare) % nsquare
        v_i = verification.key_of(index)
        b = gmpy2.powmod(verification.base, z, nsquare) * gmpy2.invert(gmpy2.powmod(v_i, e, nsquare), nsquare)
    except ZeroDivisionError:
        return False
    width = (nsquare.bit_length() + 7) // 8
    return _challenge(digest, width, c4, ci2, a, b % nsquare) == proof.challenge
