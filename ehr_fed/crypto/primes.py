"""Safe primes ``p = 2 p' + 1`` (``p'`` prime) for threshold Paillier moduli, sieved before any primality test.

A random ``b``-bit odd integer ``p'`` is a Sophie Germain prime (``p'`` and ``2 p' + 1`` both prime) with
probability of roughly ``2.6 / (b ln 2)**2``: about one in 190,000 odd candidates at ``b = 1023``. Testing
them one by one is what makes naive safe-prime generation slow. Here a window of ``SIEVE_WINDOW``
consecutive odd candidates ``p' = start + 2 k`` is sieved at once with numpy: for every odd prime
``r < SIEVE_LIMIT``, the ``k`` with ``r | p'`` and the ``k`` with ``r | 2 p' + 1`` are struck out (two strided
slice assignments per ``r``). Only the ~0.3 % of candidates that survive both sieves are tested, cheapest
first: a base-2 Fermat test of ``p = 2 p' + 1`` (one exponentiation; almost every survivor fails it), then
``gmpy2.is_prime`` (Miller-Rabin) on ``p'`` and on ``p``.

All randomness comes from :mod:`secrets`.
"""

from __future__ import annotations

import secrets
from functools import lru_cache

import gmpy2
import numpy as np

__all__ = ["random_safe_prime", "is_safe_prime", "SIEVE_LIMIT", "SIEVE_WINDOW"]

#: small primes used by the sieve (odd primes below this bound)
SIEVE_LIMIT = 1 << 18
#: odd candidates ``p'`` sieved per window (about 5 safe primes per window at 1024 bits)
SIEVE_WINDOW = 1 << 20
#: Miller-Rabin rounds of the final tests (error below ``4**-MR_ROUNDS`` per test, far less for random input)
MR_ROUNDS = 40


def _small_primes(limit: int) -> np.ndarray:
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for r in range(2, int(limit**0.5) + 1):
        if sieve[r]:
            sieve[r * r :: r] = False
    return np.flatnonzero(sieve)[1:]  # odd primes


@lru_cache(maxsize=1)
def _sieve_table() -> tuple[tuple[int, int, int], ...]:
    """``(r, 1/2 mod r, 1/4 mod r)`` for the odd primes ``r < SIEVE_LIMIT`` (built on first use, ~0.2 s)."""
    return tuple((int(r), pow(2, -1, int(r)), pow(4, -1, int(r))) for r in _small_primes(SIEVE_LIMIT))


def is_safe_prime(p: int) -> bool:
    """True if ``p`` and ``(p - 1) / 2`` are both (probable) primes."""
    p = gmpy2.mpz(p)
    return p > 5 and p % 2 == 1 and gmpy2.is_prime(p, MR_ROUNDS) and gmpy2.is_prime((p - 1) // 2, MR_ROUNDS)


def _survivors(start: gmpy2.mpz, window: int) -> np.ndarray:
    """Offsets ``k`` in ``[0, window)`` with no prime factor below SIEVE_LIMIT in ``start + 2k`` nor in
    ``2 (start + 2k) + 1``."""
    alive = np.ones(window, dtype=bool)
    for r, inv2, inv4 in _sieve_table():
        s = int(start % r)
        alive[(-s * inv2) % r :: r] = False  # r | start + 2k
        alive[(-(2 * s + 1) * inv4) % r :: r] = False  # r | 2 (start + 2k) + 1
    return np.flatnonzero(alive)


def random_safe_prime(bits: int) -> gmpy2.mpz:
    """A random safe prime ``p`` of exactly ``bits`` bits whose two top bits are set.

    The two top bits make the product of two such primes exactly ``2 * bits`` bits long.

    Parameters
    ----------
    bits : int
        At least 16.

    Returns
    -------
    gmpy2.mpz
        ``p = 2 p' + 1`` with ``p'`` and ``p`` probable primes (``gmpy2.is_prime`` with 40 rounds each).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 16:
        raise ValueError(f"bits must be an int >= 16, got {bits!r}")
    low = gmpy2.mpz(3) << (bits - 3)  # p' has bits - 1 bits, its two top bits set
    high = gmpy2.mpz(1) << (bits - 1)
    span = high - low - 2 * SIEVE_WINDOW
    two = gmpy2.mpz(2)
    while True:
        start = low + gmpy2.mpz(secrets.randbelow(int(span))) if span > 0 else low
        start |= 1
        for k in _survivors(start, SIEVE_WINDOW).tolist():
            q = start + 2 * k
            if q >= high:
                break
            p = 2 * q + 1
            if gmpy2.powmod(two, p - 1, p) != 1:
                continue
            if gmpy2.is_prime(q, MR_ROUNDS) and gmpy2.is_prime(p, MR_ROUNDS):
                return p
