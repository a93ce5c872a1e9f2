"""Encryption spread over worker processes gives ordinary, correct ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.crypto import decrypt_vector, encrypt_vector, shutdown_workers
from ehr_fed.crypto.parallel import PARALLEL_MIN_CIPHERTEXTS, resolve_workers


def test_two_worker_processes_encrypt_correctly(public_key, private_key):
    x = np.random.default_rng(7).uniform(-2, 2, 300)
    try:
        ev = encrypt_vector(public_key, x, bound=2.0, max_terms=2, workers=2)
        plain = encrypt_vector(public_key, x, bound=2.0, max_terms=2, workers=1)
    finally:
        shutdown_workers()
    assert len(ev.ciphertexts) == len(plain.ciphertexts) > 2
    np.testing.assert_allclose(decrypt_vector(private_key, ev + plain), 2 * x, rtol=0, atol=1e-14)
    for c in ev.ciphertexts:  # each a valid phe ciphertext of a packed plaintext below n
        assert 0 <= private_key.raw_decrypt(c) < 2 ** (public_key.n.bit_length() - 1)


def test_worker_count_resolution(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_workers(None, PARALLEL_MIN_CIPHERTEXTS - 1) == 1
    assert resolve_workers(None, PARALLEL_MIN_CIPHERTEXTS) == 2
    assert resolve_workers(4, 3) == 3
    assert resolve_workers(1, 10_000) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert resolve_workers(None, 10 * PARALLEL_MIN_CIPHERTEXTS) == 1
    with pytest.raises(ValueError, match="workers must be None or an int >= 1, got 0"):
        resolve_workers(0, 10)


def test_two_threads_decrypt_an_aggregate_exactly(keypair):
    pk, sk = keypair
    rng = np.random.default_rng(7)
    parts = [rng.integers(-1000, 1000, size=900).astype(float) for _ in range(3)]
    total = sum(encrypt_vector(pk, x, bound=1000.0, max_terms=3) for x in parts)
    serial = decrypt_vector(sk, total, workers=1)
    try:
        parallel = decrypt_vector(sk, total, workers=2)
    finally:
        shutdown_workers()
    np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_array_equal(serial, parts[0] + parts[1] + parts[2])
