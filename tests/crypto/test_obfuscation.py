"""DJN obfuscators: valid n-th residues from fixed-base tables, pooled and pre-fillable."""

from __future__ import annotations

import gmpy2
import pytest
from phe import paillier

from ehr_fed.crypto import KeyMismatchError, ObfuscatorPool, decrypt_vector, encrypt_vector

# product of two primes (2**255 - 19 and 2**127 - 1): a valid, small, throw-away public modulus
FIXED_PUBLIC_N = (2**255 - 19) * (2**127 - 1)


@pytest.fixture(scope="module")
def small_pool(public_key):
    return ObfuscatorPool(public_key, exponent_bits=128, window_bits=6)


def test_table_products_equal_the_exponentiation(small_pool):
    """raw_compute multiplies table entries: h**a for the exponent a spelled by the digits."""
    pool = small_pool
    h = pool._table[0][1]
    digits = [5, 0, 63, 1] + [0] * (pool.n_windows - 4)
    exponent = sum(d << (pool.window_bits * i) for i, d in enumerate(digits))
    acc = gmpy2.mpz(1)
    for row, d in zip(pool._table, digits, strict=True):
        acc = acc * row[d] % pool._nsquare
    assert acc == gmpy2.powmod(h, exponent, pool._nsquare)
    assert pool.exponent_bits == pool.n_windows * 6 >= 128


def test_obfuscators_are_nth_residues(small_pool, private_key):
    """Every obfuscator encrypts 0: multiplying a ciphertext by it keeps the plaintext."""
    for rho in small_pool.raw_compute(5):
        assert private_key.raw_decrypt(int(rho)) == 0
        assert gmpy2.gcd(rho, private_key.public_key.n) == 1


def test_obfuscators_are_distinct(small_pool):
    values = small_pool.raw_compute(50)
    assert len(set(int(v) for v in values)) == 50


def test_pool_fill_and_take(public_key, private_key, small_pool):
    small_pool.fill(6)
    assert len(small_pool) == 6
    taken = small_pool.take(4)
    assert len(taken) == 4 and len(small_pool) == 2
    assert len(small_pool.take(5)) == 5 and len(small_pool) == 0  # stock first, then fresh ones
    small_pool.fill(3)
    ev = encrypt_vector(public_key, [0.25, -0.5], bound=1.0, max_terms=2, pool=small_pool)
    assert len(small_pool) == 2  # one ciphertext used one stocked obfuscator
    assert decrypt_vector(private_key, ev).tolist() == [0.25, -0.5]


def test_pool_of_another_key_is_refused(public_key, other_keypair):
    pool = ObfuscatorPool(other_keypair[0], exponent_bits=128, window_bits=4)
    with pytest.raises(KeyMismatchError, match="the obfuscator pool was built for a different public key"):
        encrypt_vector(public_key, [0.5], bound=1.0, max_terms=2, pool=pool)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exponent_bits": 64}, "exponent_bits must be an int >= 128, got 64"),
        ({"window_bits": 0}, "window_bits must be an int in \\[1, 16\\], got 0"),
        ({"window_bits": 17}, "window_bits must be an int in \\[1, 16\\], got 17"),
    ],
)
def test_pool_parameters_are_validated(public_key, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ObfuscatorPool(public_key, **kwargs)
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        ObfuscatorPool(public_key, exponent_bits=128, window_bits=2).fill(-1)


def test_process_pool_starts_small_and_upgrades_after_heavy_use(monkeypatch):
    from ehr_fed.crypto import obfuscation
    from ehr_fed.crypto.obfuscation import DEFAULT_WINDOW_BITS, SMALL_WINDOW_BITS, default_pool

    public_key = paillier.PaillierPublicKey(FIXED_PUBLIC_N)  # a key no other test uses
    monkeypatch.setattr(obfuscation, "UPGRADE_AFTER_CIPHERTEXTS", 50)
    try:
        first = default_pool(public_key, upcoming=10)
        assert first.window_bits == SMALL_WINDOW_BITS
        assert default_pool(public_key, upcoming=30) is first
        upgraded = default_pool(public_key, upcoming=10)
        assert upgraded is not first and upgraded.window_bits == DEFAULT_WINDOW_BITS
        assert default_pool(public_key) is upgraded
    finally:
        obfuscation._DEFAULT_POOLS.pop(public_key.n, None)
