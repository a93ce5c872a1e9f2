"""Threshold Paillier keys: t-of-l shares of the decryption exponent of a phe-compatible key.

Scheme (Shoup 2000; Damgard and Jurik 2001 with ``s = 1``; Fouque, Poupard and Stern 2000)::

    p = 2 p' + 1, q = 2 q' + 1 safe primes, n = p q, m = p' q', g = n + 1 (phe's generator)
    d = 0 mod m, d = 1 mod n                          (d = m * (m^-1 mod n))
    f(X) = d + a_1 X + ... + a_(t-1) X^(t-1) mod n m   (a_k uniform in [0, n m))
    share i = s_i = f(i) for i = 1..l,  Delta = l!
    verification: v a random square mod n^2, v_i = v^(Delta s_i) mod n^2 (public)

Any ``t`` shares decrypt (:func:`ehr_fed.crypto.partial_decrypt`, :func:`ehr_fed.crypto.combine_partials`);
``t - 1`` shares give no information on ``d`` (Shamir's secret sharing over ``Z_(n m)``). The public key is an
ordinary ``phe.PaillierPublicKey(n)``: everything that encrypts, adds and serializes today works unchanged.

Share bytes (version 1)::

    b"EHRFTS" | version u8 | len-prefixed big-endian ints (4-byte lengths):
        n, threshold, n_shares, index, s_i, v, v_1, ..., v_(n_shares)

The bytes hold the secret ``s_i``: store them encrypted at rest, hand each to its holder only.
"""

from __future__ import annotations

import hashlib
import math
import operator
import secrets
from dataclasses import dataclass, field

import gmpy2
from phe import paillier

from .errors import CryptoError, KeyMismatchError, PayloadError
from .keys import MIN_INSECURE_KEY_BITS, MIN_KEY_BITS, _pack_ints, check_public_key, key_fingerprint
from .keys import _unpack_ints as _unpack_key_ints
from .primes import random_safe_prime

__all__ = [
    "ThresholdError",
    "ThresholdKeyShare",
    "VerificationKeys",
    "generate_threshold_keypair",
    "share_fingerprint",
    "check_threshold_params",
    "MAX_SHARES",
]

#: largest number of shares (Delta = l! lengthens every partial decryption's exponent by |l!| bits)
MAX_SHARES = 64

_SHARE_MAGIC = b"EHRFTS"
_VERIFICATION_MAGIC = b"EHRFTV"
_VERSION = 1


class ThresholdError(CryptoError, ValueError):
    """Threshold decryption cannot proceed: too few, duplicate, out-of-range, inconsistent or invalid partials."""


def check_threshold_params(threshold: object, n_shares: object) -> tuple[int, int]:
    """``(threshold, n_shares)`` as ints after checking ``2 <= threshold <= n_shares <= MAX_SHARES``."""
    for name, value in (("threshold", threshold), ("n_shares", n_shares)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 2 <= n_shares <= MAX_SHARES:
        raise ValueError(f"n_shares must be in [2, {MAX_SHARES}], got {n_shares}")
    if not 2 <= threshold <= n_shares:
        raise ValueError(
            f"threshold must be in [2, n_shares={n_shares}], got {threshold}: with threshold 1 any single share "
            "holder decrypts alone (use generate_keypair for a single key)"
        )
    return int(threshold), int(n_shares)


def _check_key_bits(n: int, allow_insecure: bool, what: str) -> None:
    bits = int(n).bit_length()
    if bits < MIN_KEY_BITS and not allow_insecure:
        raise ValueError(
            f"{what} has a {bits}-bit modulus, below the minimum of {MIN_KEY_BITS} bits; use a key of at least "
            f"{MIN_KEY_BITS} bits (pass allow_insecure=True only in tests)"
        )


@dataclass(frozen=True)
class VerificationKeys:
    """Public values that let anyone check partial decryptions (Shoup's proofs) of one threshold key.

    Attributes
    ----------
    n : int
        The modulus of the public key.
    threshold, n_shares : int
    base : int
        ``v``, a random square modulo ``n**2``.
    keys : tuple of int, shape (n_shares,)
        ``keys[i - 1] = v**(Delta s_i) mod n**2`` for share ``i``.
    """

    n: int
    threshold: int
    n_shares: int
    base: int
    keys: tuple[int, ...]

    @property
    def public_key(self) -> paillier.PaillierPublicKey:
        return paillier.PaillierPublicKey(self.n)

    @property
    def delta(self) -> int:
        return math.factorial(self.n_shares)

    def key_of(self, index: int) -> int:
        """``v_i`` of share ``index`` (1-based)."""
        if not 1 <= index <= self.n_shares:
            raise ThresholdError(f"share index {index} is outside [1, n_shares={self.n_shares}]")
        return self.keys[index - 1]

    def to_bytes(self) -> bytes:
        """Serialize (public: safe to publish beside the public key)."""
        return _VERIFICATION_MAGIC + bytes([_VERSION]) + _pack_ints(
            self.n, self.threshold, self.n_shares, self.base, *self.keys
        )

    @classmethod
    def from_bytes(cls, data: bytes, public_key, *, allow_insecure: bool = False) -> VerificationKeys:
        """Read :meth:`to_bytes` output, checked against ``public_key`` (else :class:`KeyMismatchError`)."""
        what = "threshold verification keys"
        ints = _unpack_ints(data, _VERIFICATION_MAGIC, what)
        if len(ints) < 4:
            raise PayloadError(f"serialized {what} are truncated: {len(ints)} integers, expected at least 4")
        n, threshold, n_shares, base, *keys = ints
        _check_belongs(n, public_key, what)
        _check_key_bits(n, allow_insecure, what)
        _check_params_payload(threshold, n_shares, what)
        if len(keys) != n_shares:
            raise PayloadError(f"serialized {what} hold {len(keys)} keys for n_shares={n_shares}")
        for name, value in (("v", base), *((f"v_{i + 1}", k) for i, k in enumerate(keys))):
            _check_unit(value, n, f"{what}: {name}")
        return cls(n, threshold, n_shares, base, tuple(keys))


@dataclass(frozen=True)
class ThresholdKeyShare:
    """One holder's share of a threshold Paillier private key.

    Attributes
    ----------
    index : int
        The share's number ``i`` in ``1..n_shares`` (the point at which the sharing polynomial is evaluated).
    n : int
        The modulus of the public key.
    threshold : int
        ``t``: partial decryptions of any ``t`` distinct shares decrypt.
    n_shares : int
        ``l``: number of shares dealt.
    verification : VerificationKeys
        Public values to prove and check partial decryptions.
    share : int
        The secret ``s_i = f(i)`` in ``[0, n m)`` (not shown by ``repr``).
    """

    index: int
    n: int
    threshold: int
    n_shares: int
    verification: VerificationKeys = field(repr=False)
    share: int = field(repr=False)

    @property
    def delta(self) -> int:
        """``Delta = n_shares!``."""
        return math.factorial(self.n_shares)

    @property
    def public_key(self) -> paillier.PaillierPublicKey:
        return paillier.PaillierPublicKey(self.n)

    @property
    def verification_key(self) -> int:
        """``v_i = v**(Delta s_i) mod n**2`` of this share (public)."""
        return self.verification.key_of(self.index)

    def __repr__(self) -> str:
        return (
            f"<ThresholdKeyShare {self.index} of {self.n_shares} (threshold {self.threshold}) "
            f"key={key_fingerprint(self.public_key)[:12]} share={share_fingerprint(self)[:12]}>"
        )

    def to_bytes(self) -> bytes:
        """Serialize (see the module docstring). The result is secret: it holds ``s_i``."""
        return _SHARE_MAGIC + bytes([_VERSION]) + _pack_ints(
            self.n, self.threshold, self.n_shares, self.index, self.share, self.verification.base,
            *self.verification.keys,
        )

    @classmethod
    def from_bytes(cls, data: bytes, public_key, *, allow_insecure: bool = False) -> ThresholdKeyShare:
        """Read bytes written by :meth:`to_bytes` and check them against ``public_key``.

        Besides the format (magic, version, lengths, ranges), the share is checked against its own public
        verification key (``v**(Delta s_i) == v_i``, one exponentiation modulo ``n**2``), so an altered share
        is refused here rather than producing wrong decryptions later.

        Raises
        ------
        PayloadError
            If ``data`` is not a serialized share, is truncated, has trailing bytes, or is inconsistent.
        KeyMismatchError
            If the share belongs to another public key.
        ValueError
            If the modulus is below 2048 bits and ``allow_insecure`` is not set.
        """
        what = "threshold key share"
        ints = _unpack_ints(data, _SHARE_MAGIC, what)
        if len(ints) < 6:
            raise PayloadError(f"serialized {what} is truncated: {len(ints)} integers, expected at least 6")
        n, threshold, n_shares, index, share, base, *keys = ints
        _check_belongs(n, public_key, what)
        _check_key_bits(n, allow_insecure, what)
        _check_params_payload(threshold, n_shares, what)
        if len(keys) != n_shares:
            raise PayloadError(f"serialized {what} holds {len(keys)} verification keys for n_shares={n_shares}")
        if not 1 <= index <= n_shares:
            raise PayloadError(f"serialized {what} has index {index}, outside [1, n_shares={n_shares}]")
        nsquare = n * n
        if not 0 < share < nsquare:
            raise PayloadError(f"serialized {what} has a share value out of range")
        for name, value in (("v", base), *((f"v_{i + 1}", k) for i, k in enumerate(keys))):
            _check_unit(value, n, f"{what}: {name}")
        delta = math.factorial(n_shares)
        if gmpy2.powmod(base, delta * share, nsquare) != keys[index - 1]:
            raise PayloadError(
                f"serialized {what} {index} does not match its verification key: the share was altered or "
                "mixed with another dealing; ask the dealer for this share again"
            )
        verification = VerificationKeys(n, threshold, n_shares, base, tuple(keys))
        return cls(index, n, threshold, n_shares, verification, share)


def share_fingerprint(share: ThresholdKeyShare | VerificationKeys, index: int | None = None) -> str:
    """Hex SHA-256 identifying a share from its public parts only (modulus, t, l, index, ``v``, ``v_i``).

    Safe to publish and pin: it reveals nothing about the secret ``s_i``. Pass a :class:`VerificationKeys`
    and an ``index`` to compute the fingerprint of another holder's share.
    """
    if isinstance(share, ThresholdKeyShare):
        verification, index = share.verification, share.index
    elif isinstance(share, VerificationKeys):
        verification = share
        if index is None:
            raise TypeError("share_fingerprint(verification_keys, index): the share index is required")
    else:
        raise TypeError(f"share must be a ThresholdKeyShare or VerificationKeys, got {type(share).__name__}")
    v = verification
    payload = _pack_ints(v.n, v.threshold, v.n_shares, index, v.base, v.key_of(index))
    return hashlib.sha256(b"ehr-fed threshold share\x00" + payload).hexdigest()


def generate_threshold_keypair(
    n_length: int, n_shares: int, threshold: int, *, allow_insecure: bool = False
) -> tuple[paillier.PaillierPublicKey, list[ThresholdKeyShare]]:
    """Deal a ``threshold``-of-``n_shares`` Paillier key (trusted dealer).

    Parameters
    ----------
    n_length : int
        Bit length of ``n = p q`` (``p``, ``q`` safe primes of ``n_length / 2`` bits). At least 2048.
    n_shares : int
        ``l``, number of share holders, in ``[2, MAX_SHARES]``.
    threshold : int
        ``t``, number of partial decryptions needed, in ``[2, n_shares]``.
    allow_insecure : bool, default False
        Accept ``n_length < 2048`` (down to 512). Only for tests.

    Returns
    -------
    public_key : phe.PaillierPublicKey
        An ordinary phe public key (``g = n + 1``).
    shares : list of ThresholdKeyShare
        ``shares[i - 1]`` is share ``i``.

    Notes
    -----
    **What the dealer must erase, and when.** ``p``, ``q``, ``m``, ``d`` and the polynomial's coefficients
    exist only in local variables of this call and are dropped when it returns; nothing returned or kept
    holds them. CPython does not zero freed memory, so until the process exits its memory may still contain
    them: run the dealing in a short-lived process (not a long-lived server or notebook kernel), with core
    dumps off and swap encrypted, and let it exit right after the shares are handed out. The returned shares
    are the secret: any ``t`` of them decrypt every ciphertext of the key (and reveal a multiple of
    ``m``, which factors ``n``). The dealer holds all of them until it hands them out, so it must hand each
    share (serialized by :meth:`ThresholdKeyShare.to_bytes`, encrypted to its holder) to its holder only,
    then delete every copy it wrote (files, buffers, backups) and end the process. Until then the dealer can
    decrypt alone; a federation that cannot trust one dealer needs dealer-free key generation
    (Nishide-Sakurai 2010; Veugen, Attema and Spini 2019), which this module does not implement.

    Safe-prime generation dominates the cost (see :mod:`ehr_fed.crypto.primes` and ``docs/crypto.md``).

    Raises
    ------
    ValueError
        If ``n_length`` is below 2048 without ``allow_insecure``, odd or below 512, or if ``threshold`` or
        ``n_shares`` are out of range.
    """
    public_key, shares, _ = _generate(n_length, n_shares, threshold, allow_insecure=allow_insecure)
    return public_key, shares


def _generate(n_length, n_shares, threshold, *, allow_insecure=False, _keep_primes=False):
    """The dealing; ``_keep_primes=True`` (tests only) also returns ``(p, q)``, else ``None``."""
    if isinstance(n_length, bool) or not isinstance(n_length, int):
        raise TypeError(f"n_length must be an int, got {type(n_length).__name__}")
    if n_length % 2 or n_length < MIN_INSECURE_KEY_BITS:
        raise ValueError(f"n_length must be an even number of bits >= {MIN_INSECURE_KEY_BITS}, got {n_length}")
    if n_length < MIN_KEY_BITS and not allow_insecure:
        raise ValueError(
            f"n_length={n_length} is below the minimum of {MIN_KEY_BITS} bits; use n_length >= {MIN_KEY_BITS} "
            "(pass allow_insecure=True only in tests)"
        )
    threshold, n_shares = check_threshold_params(threshold, n_shares)
    p = random_safe_prime(n_length // 2)
    q = random_safe_prime(n_length // 2)
    while q == p:
        q = random_safe_prime(n_length // 2)
    n = p * q
    m = (p - 1) // 2 * ((q - 1) // 2)
    nm, nsquare = n * m, n * n
    d = m * gmpy2.invert(m, n)
    coefficients = [d] + [gmpy2.mpz(secrets.randbelow(int(nm))) for _ in range(threshold - 1)]
    values = []
    for i in range(1, n_shares + 1):
        value = gmpy2.mpz(0)
        for a in reversed(coefficients):  # Horner
            value = (value * i + a) % nm
        values.append(value)
    base = _random_square(n)
    delta = math.factorial(n_shares)
    keys = tuple(int(gmpy2.powmod(base, delta * s, nsquare)) for s in values)
    verification = VerificationKeys(int(n), threshold, n_shares, int(base), keys)
    shares = [
        ThresholdKeyShare(i, int(n), threshold, n_shares, verification, int(s))
        for i, s in enumerate(values, start=1)
    ]
    primes = (int(p), int(q)) if _keep_primes else None
    del p, q, m, nm, d, coefficients, values
    return paillier.PaillierPublicKey(int(n)), shares, primes


def _random_square(n) -> gmpy2.mpz:
    """A random square modulo ``n**2`` that is a unit (it generates the squares' group with overwhelming
    probability)."""
    nsquare = n * n
    while True:
        r = gmpy2.mpz(secrets.randbelow(int(nsquare)))
        if r > 1 and gmpy2.gcd(r, n) == 1:
            return r * r % nsquare


def _unpack_ints(data: bytes, magic: bytes, what: str) -> list[int]:
    return _unpack_key_ints(data, magic, None, what, version=_VERSION, max_count=MAX_SHARES + 7)


def _check_belongs(n: int, public_key, what: str) -> None:
    check_public_key(public_key)
    if n != public_key.n:
        other = key_fingerprint(paillier.PaillierPublicKey(n))[:16] if n > 0 else "invalid"
        raise KeyMismatchError(
            f"the {what} belongs to key {other}, not to the given public key {key_fingerprint(public_key)[:16]}; "
            "load the share issued for this federation's key"
        )


def _check_params_payload(threshold: int, n_shares: int, what: str) -> None:
    try:
        check_threshold_params(threshold, n_shares)
    except ValueError as exc:
        raise PayloadError(f"serialized {what} has invalid parameters: {exc}") from None


def _check_unit(value: int, n: int, what: str) -> None:
    if not 0 < value < n * n or gmpy2.gcd(value, n) != 1:
        raise PayloadError(f"{what} is not a unit modulo n**2: the bytes were altered")


def lagrange_coefficients(indices, n_shares: int) -> dict[int, int]:
    """Integer Lagrange coefficients at 0, scaled by ``Delta = n_shares!``.

    ``mu_i = Delta * prod_(j in S, j != i) j / (j - i)`` for ``i`` in ``S = indices``: integers, with
    ``sum_i mu_i f(i) = Delta f(0)`` for every polynomial ``f`` of degree below ``len(indices)``.
    """
    delta = math.factorial(n_shares)
    out = {}
    for i in indices:
        num, den = delta, 1
        for j in indices:
            if j != i:
                num *= j
                den *= j - i
        mu, rest = divmod(num, den)
        if rest:  # cannot happen for distinct indices in [1, n_shares]
            raise ThresholdError(f"Lagrange coefficient of share {i} is not an integer for shares {sorted(indices)}")
        out[operator.index(i)] = mu
    return out
