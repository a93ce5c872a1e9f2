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
import numpy as np

from .keys import check_public_key

__all__ = ["ObfuscatorPool", "default_pool", "DEFAULT_EXPONENT_BITS", "DEFAULT_WINDOW_BITS"]

#: length of the short exponent ``a``: twice the 128-bit security level
DEFAULT_EXPONENT_BITS = 256
#: fixed-base window: 12 bits per table (22 tables for a 256-bit exponent, 264 bits in effect)
DEFAULT_WINDOW_BITS = 12


class ObfuscatorPool:
    """Generator of obfuscators ``h**a mod n**2`` for one public key, with an optional pre-filled stock.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    exponent_bits : int, default 256
        Minimum length of the random exponent ``a`` (rounded up to a whole number of windows).
    window_bits : int, default 12
        Fixed-base window ``w``: ``ceil(exponent_bits / w)`` tables of ``2**w`` entries. Encryption costs
        ``ceil(exponent_bits / w) - 1`` multiplications modulo ``n**2`` per ciphertext; the tables cost
        ``ceil(exponent_bits / w) * 2**w`` multiplications once and as many entries of memory (w = 12, 2048-bit
        key: 22 x 4096 entries of 512 bytes, 46 MB, built in about half a second; w = 8: 4 MB, 32 tables).

    Examples
    --------
    >>> pool = ObfuscatorPool(public_key).fill(1000)       # doctest: +SKIP
    >>> encrypt_vector(public_key, x, bound=1.0, max_terms=3, pool=pool)  # doctest: +SKIP
    """

    def __init__(
        self,
        public_key,
        *,
        exponent_bits: int = DEFAULT_EXPONENT_BITS,
        window_bits: int = DEFAULT_WINDOW_BITS,
    ):
        check_public_key(public_key)
        if isinstance(exponent_bits, bool) or not isinstance(exponent_bits, int) or exponent_bits < 128:
            raise ValueError(f"exponent_bits must be an int >= 128, got {exponent_bits!r}")
        if isinstance(window_bits, bool) or not isinstance(window_bits, int) or not 1 <= window_bits <= 16:
            raise ValueError(f"window_bits must be an int in [1, 16], got {window_bits!r}")
        self.public_key = public_key
        self.window_bits = window_bits
        self.n_windows = -(-exponent_bits // window_bits)
        self.exponent_bits = self.n_windows * window_bits
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
        """``table[i][d] = h**(d * 2**(w i)) mod n**2`` for ``d < 2**w``, one row per window."""
        nsquare, table, base = self._nsquare, [], h
        size = 1 << self.window_bits
        for _ in range(self.n_windows):
            row = [gmpy2.mpz(1), base]
            for _ in range(size - 2):
                row.append(row[-1] * base % nsquare)
            table.append(row)
            base = row[-1] * base % nsquare  # h**(2**(w (i + 1)))
        return table

    def raw_digits(self, count: int) -> list[list[int]]:
        """``count`` uniformly random exponents as base-``2**w`` digits, from the OS CSPRNG."""
        if count == 0:
            return []
        raw = np.frombuffer(secrets.token_bytes(2 * count * self.n_windows), dtype="<u2")
        digits = (raw & np.uint16((1 << self.window_bits) - 1)).reshape(count, self.n_windows)
        return digits.tolist()

    def raw_compute(self, count: int) -> list:
        """Compute ``count`` fresh obfuscators ``h**a`` (ignores the stock)."""
        nsquare, table = self._nsquare, self._table
        out = []
        for digits in self.raw_digits(count):
            acc = None
            for row, d in zip(table, digits, strict=True):
                if d:
                    acc = row[d] if acc is None else acc * row[d] % nsquare
            out.append(gmpy2.mpz(1) if acc is None else acc)
        return out

    def fill(self, count: int) -> ObfuscatorPool:
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


#: window of the process-wide pool of a key until it has produced this many obfuscators: small tables
#: (8 bits: 32 x 256 entries, ~0.05 s for a 2048-bit key) for keys used a little, as in tests and short runs
SMALL_WINDOW_BITS = 8
#: process-wide pools move to ``DEFAULT_WINDOW_BITS`` tables (~0.5 s, 30% faster encryption) once a key has
#: encrypted this many ciphertexts in the process, where the larger tables have paid for themselves
UPGRADE_AFTER_CIPHERTEXTS = 4096

_DEFAULT_POOLS: dict[int, list] = {}  # n -> [pool, ciphertexts requested so far]
_DEFAULT_LOCK = threading.Lock()


def default_pool(public_key, upcoming: int = 0) -> ObfuscatorPool:
    """The process-wide pool for ``public_key``, about to provide ``upcoming`` obfuscators.

    It starts with small fixed-base tables and is rebuilt once with large ones when the key's cumulative use
    in this process reaches ``UPGRADE_AFTER_CIPHERTEXTS`` (so one-off uses stay cheap and long runs fast).
    """
    check_public_key(public_key)
    with _DEFAULT_LOCK:
        entry = _DEFAULT_POOLS.get(public_key.n)
        if entry is None:
            if len(_DEFAULT_POOLS) >= 8:
                _DEFAULT_POOLS.pop(next(iter(_DEFAULT_POOLS)))
            large = upcoming >= UPGRADE_AFTER_CIPHERTEXTS
            pool = ObfuscatorPool(public_key, window_bits=DEFAULT_WINDOW_BITS if large else SMALL_WINDOW_BITS)
            entry = _DEFAULT_POOLS[public_key.n] = [pool, 0]
        elif entry[0].window_bits < DEFAULT_WINDOW_BITS and entry[1] + upcoming >= UPGRADE_AFTER_CIPHERTEXTS:
            upgraded = ObfuscatorPool(public_key, window_bits=DEFAULT_WINDOW_BITS)
            upgraded._stock.extend(entry[0]._stock)
            entry[0] = upgraded
        entry[1] += upcoming
        return entry[0]
