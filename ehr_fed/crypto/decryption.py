"""Paillier decryption by the Chinese remainder theorem, with gmpy2.

For ``c = (1 + n)**m * r**n mod n**2`` and ``n = p q``::

    m_p = L_p(c**(p - 1) mod p**2) * h_p mod p,   L_p(u) = (u - 1) / p,   h_p = L_p(g**(p - 1) mod p**2)**-1
    m   = CRT(m_p mod p, m_q mod q)

two exponentiations with half-length exponents modulo half-length moduli instead of one full-length one.
The exponentiations of a batch go through ``gmpy2.powmod_base_list`` (one exponent, many bases), which
releases the GIL, so threads decrypt chunks of a batch on all cores without leaving the process.
"""

from __future__ import annotations

import threading

import gmpy2

from .keys import check_private_key

__all__ = ["raw_decrypt_crt", "CrtKey"]


class CrtKey:
    """Precomputed CRT constants of one private key (as gmpy2 integers)."""

    def __init__(self, private_key):
        check_private_key(private_key)
        self.n = gmpy2.mpz(private_key.public_key.n)
        self.p, self.q = gmpy2.mpz(private_key.p), gmpy2.mpz(private_key.q)
        self.psquare, self.qsquare = self.p * self.p, self.q * self.q
        self.hp, self.hq = gmpy2.mpz(private_key.hp), gmpy2.mpz(private_key.hq)
        self.p_inverse = gmpy2.invert(self.p, self.q)


_CRT_CACHE: dict[tuple[int, int], CrtKey] = {}
_CRT_LOCK = threading.Lock()


def crt_key(private_key) -> CrtKey:
    """Cached :class:`CrtKey` for ``private_key``."""
    key = (private_key.p, private_key.q)
    with _CRT_LOCK:
        found = _CRT_CACHE.get(key)
        if found is None:
            if len(_CRT_CACHE) >= 8:
                _CRT_CACHE.pop(next(iter(_CRT_CACHE)))
            found = _CRT_CACHE[key] = CrtKey(private_key)
        return found


def raw_decrypt_crt(private_key, ciphertexts: list[int]) -> list:
    """Decrypt raw ciphertexts (gmpy2 integers in ``[1, n**2)``, unchecked) to raw plaintexts in ``[0, n)``."""
    k = crt_key(private_key)
    p, q, psquare, qsquare = k.p, k.q, k.psquare, k.qsquare
    up = gmpy2.powmod_base_list([c % psquare for c in ciphertexts], p - 1, psquare)
    uq = gmpy2.powmod_base_list([c % qsquare for c in ciphertexts], q - 1, qsquare)
    out = []
    for a, b in zip(up, uq, strict=True):
        mp = (a - 1) // p * k.hp % p
        mq = (b - 1) // q * k.hq % q
        out.append(mp + (mq - mp) * k.p_inverse % q * p)
    return out
