"""Fast Paillier obfuscators ``r**n mod n**2`` by the DJN short-exponent construction.

A Paillier ciphertext is ``c = (1 + n m) * rho mod n**2`` where the obfuscator ``rho`` is a random ``n``-th
residue. Plain ``phe`` computes ``rho = r**n`` with a fresh ``r < n``: a 2048-bit exponent modulo a 4096-bit
modulus per ciphertext. Following Damgard, Jurik and Nielsen (2010), this module draws a private random
``g' in Z_n*`` once per pool, fixes the base ``h = g'**n mod n**2`` (itself an ``n``-th residue) and uses
``rho = h**a = (g'**a)**n`` with a short uniformly random exponent ``a`` of ``exponent_bits`` bits
(default 2 x 128). Because ``h`` is fixed, ``h**a`` is a product of precomputed table entries
``h**(d * 2**(w i))`` (fixed-base windowing, ``w = window_bits``): about ``exponent_bits / w``
multiplications modulo ``n**2`` instead of ~2,500 for ``r**n``.

Security argument (see ``docs/crypto.md``): the ciphertext hides ``m`` if ``h**a`` with a short ``a`` is
indistinguishable from a uniformly random ``n``-th residue. ``h`` generates (with overwhelming probability)
a large subgroup of the ``n``-th residues whose order divides ``lambda(n)`` and is unknown without the
factorisation; the best known way to tell ``h**a`` for a short ``a`` from ``h**a`` for a full-length ``a``
is to find ``a``, which takes ``2**(exponent_bits / 2)`` group operations (Pollard's lambda / baby-step
giant-step). ``exponent_bits = 256`` gives 128-bit security, above the 112 bits of a 2048-bit modulus.

Randomness comes from the operating system CSPRNG (:mod:`secrets`).
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from math import gcd

import gmpy2

from .keys import check_public_key

__all__ = ["ObfuscatorPool", "default_pool", "DEFAULT_EXPONENT_BITS", "DEFAULT_WINDOW_BITS"]

#: length of the short exponent ``a``: twice the 128-bit security level
DEFAULT_EXPONENT_BITS = 256
#: fixed-base window: 8 bits per table (one byte of the exponent per multiplication)
DEFAULT_WINDOW_BITS = 8


class ObfuscatorPool:
    """Generator of obfuscators ``h**a mod n**2`` for one public key, with an optional pre-filled stock.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    exponent_bits : int, default 256
        Length of the random exponent ``a``; a multiple of 8.
    window_bits : int, default 8
        Fixed-base window; only 8 is supported (one exponent byte per table).

    Examples
    --------
    >>> pool = ObfuscatorPool(public_key).fill(1000)       # doctest: +SKIP
    >>> encrypt_vector(public_key, x, bound=1.0, max_terms=3, pool=pool)  # doctest: +SKIP
    """

    def __init__(self, public_key, *, exponent_bits: int = DEFAULT_EXPONENT_BITS,
                 window_bits: int = DEFAULT_WINDOW_BITS):
        check_public_key(public_key)
        if exponent_bits % 8 or exponent_bits < 128:
            raise ValueError(f"exponent_bits must be a multiple of 8 and >= 128, got {exponent_bits}")
        if window_bits != 8:
            raise ValueError(f"window_bits must be 8, got {window_bits}")
        self.public_key = public_key
        self.exponent_bits = exponent_bits
        self._n = gmpy2.mpz(public_key.n)
        self._nsquare = self._n * self._n
        self._stock: deque = deque()
        self._lock = threading.Lock()
        self._table = self._build_table(self._random_base())

    def _random_base(self):
        """``h = g'**n mod n**2`` for a uniformly random ``g'`` in ``Z_n*`` (kept private)."""
        n = int(self._n)
        while True:
            g = secrets.randbelow(n - 2) + 2
            if gcd(g, n) == 1:
                return gmpy2.powmod(g, self._n, self._nsquare)

    def _build_table(self, h) -> list[list]:
        """``table[i][d] = h**(d * 256**i) mod n**2`` for ``d < 256``, one row per exponent byte."""
        nsquare, table, base = self._nsquare, [], h
        for _ in range(self.exponent_bits // 8):
            row = [gmpy2.mpz(1), base]
            for _ in range(254):
                row.append(row[-1] * base % nsquare)
            table.append(row)
            base = row[-1] * base % nsquare  # h**(256**(i + 1))
        return table

    def raw_compute(self, count: int) -> list:
        """Compute ``count`` fresh obfuscators (ignores the stock)."""
        nsquare, table = self._nsquare, self._table
        width = self.exponent_bits // 8
        randomness = secrets.token_bytes(width * count)
        out = []
        for k in range(count):
            digits = randomness[k * width:(k + 1) * width]
            acc = None
            for row, d in zip(table, digits):
                if d:
                    acc = row[d] if acc is None else acc * row[d] % nsquare
            out.append(gmpy2.mpz(1) if acc is None else acc)
        return out

    def fill(self, count: int) -> "ObfuscatorPool":
        """Precompute ``count`` obfuscators into the stock (e.g. while waiting for the next round)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        fresh = self.raw_compute(count)
        with self._lock:
            self._stock.extend(fresh)
        return self

    def __len__(self) -> int:
        """Number of obfuscators in stock."""
        return len(self._stock)

    def take(self, count: int) -> list:
        """Return ``count`` obfuscators, from the stock first, each used once."""
        taken = []
        with self._lock:
            while self._stock and len(taken) < count:
                taken.append(self._stock.popleft())
        if len(taken) < count:
            taken.extend(self.raw_compute(count - len(taken)))
        return taken


_DEFAULT_POOLS: dict[int, ObfuscatorPool] = {}
_DEFAULT_LOCK = threading.Lock()


def default_pool(public_key) -> ObfuscatorPool:
    """The process-wide pool for ``public_key`` (built once: ~0.1 s of table precomputation)."""
    check_public_key(public_key)
    with _DEFAULT_LOCK:
        pool = _DEFAULT_POOLS.get(public_key.n)
        if pool is None:
            if len(_DEFAULT_POOLS) >= 8:
                _DEFAULT_POOLS.pop(next(iter(_DEFAULT_POOLS)))
            pool = _DEFAULT_POOLS[public_key.n] = ObfuscatorPool(public_key)
        return pool
