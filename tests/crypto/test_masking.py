"""Masks in the plaintext space: residue streams, their one-pass sums, and masked encryption.

The masked encryptions must give sums bit-identical to unmasked ones over a set whose masks cancel modulo
``n``, for every plaintext layout (packed fixed-point with negative values, unpacked phe encodings, signed
integers, multi-field integer packing), while each masked contribution decrypts to its plaintext shifted by
its mask.
"""

from __future__ import annotations

import hashlib
import secrets

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_fed.crypto import decrypt_vector, encrypt_vector
from ehr_fed.crypto.fields import decrypt_fields, encrypt_fields
from ehr_fed.crypto.masking import (
    expand_residues,
    mask_ciphertexts,
    mask_plaintexts,
    mask_vector,
    sum_residues,
)
from ehr_fed.crypto.vector import decrypt_integers, encrypt_integers

SEED = bytes(range(32))


def _cancelling(n: int, sizes: int, count: int, rng) -> list[list[int]]:
    """``sizes`` lists of ``count`` residues mod ``n`` that sum to 0 mod ``n`` index by index."""
    masks = [[int.from_bytes(rng.bytes(160), "big") % n for _ in range(count)] for _ in range(sizes - 1)]
    masks.append([(-sum(col)) % n for col in zip(*masks, strict=True)] if masks else [0] * count)
    return masks


def _as_masks(residues):
    """A ``masks`` argument that also records the count it was asked for."""
    asked = []

    def masks(count):
        asked.append(count)
        return residues[:count]

    masks.asked = asked
    return masks


def _raw(private_key, ev) -> list[int]:
    return [private_key.raw_decrypt(int(c)) for c in ev.ciphertexts]


# -- residue streams ----------------------------------------------------------------------------------------
def _shake_stream(label: bytes, count: int, size: int) -> bytes:
    xof = hashlib.shake_256()
    xof.update(b"ehr-fed mask stream v1\x00" + (32).to_bytes(2, "big") + SEED + len(label).to_bytes(4, "big")
               + label + count.to_bytes(8, "big"))
    return xof.digest(size)


def _chacha_stream(label: bytes, count: int, size: int) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = hashlib.sha256(b"ehr-fed mask stream v2\x00" + (32).to_bytes(2, "big") + SEED
                         + len(label).to_bytes(4, "big") + label + count.to_bytes(8, "big")).digest()
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(size))


@pytest.mark.parametrize("count", [1, 14, 15, 40])  # 144 bytes per residue: 14 x 144 <= 2048 < 15 x 144
def test_expand_residues_reads_shake256_for_short_streams_and_chacha20_for_long_ones(count):
    from ehr_fed.crypto.masking import SHORT_STREAM_BYTES

    n = (1 << 1023) + 12345
    width = (n.bit_length() + 7) // 8 + 16
    size = count * width
    stream = (_shake_stream if size <= SHORT_STREAM_BYTES else _chacha_stream)(b"out", count, size)
    want = [int.from_bytes(stream[i * width:(i + 1) * width], "big") % n for i in range(count)]
    assert expand_residues(SEED, b"out", count, n) == want
    other = (_chacha_stream if size <= SHORT_STREAM_BYTES else _shake_stream)(b"out", count, size)
    assert [int.from_bytes(other[i * width:(i + 1) * width], "big") % n for i in range(count)] != want


def test_expand_residues_is_deterministic_and_separated_by_label_and_seed():
    n = (1 << 1023) + 12345
    got = expand_residues(SEED, b"out", 5, n)
    assert all(0 <= r < n for r in got)
    assert expand_residues(SEED, b"out", 5, n) == got                 # deterministic
    assert expand_residues(SEED, b"other", 5, n) != got               # labels separate the streams
    assert expand_residues(SEED[::-1], b"out", 5, n) != got           # so do seeds
    assert expand_residues(SEED, b"out", 0, n) == []


@pytest.mark.parametrize(("args", "error", "match"), [
    ((b"short", b"x", 3, 1001), ValueError, "at least 16 bytes"),
    ((SEED, b"x", -1, 1001), ValueError, "count must be an int >= 0, got -1"),
    ((SEED, b"x", 2.5, 1001), ValueError, "count must be an int >= 0"),
    ((SEED, "x", 3, 1001), TypeError, "a mask label must be bytes, got str"),
    ((SEED, b"x", 3, 1), ValueError, "the modulus n must be an int >= 2"),
])
def test_expand_residues_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        expand_residues(*args)
    with pytest.raises(error, match=match):
        sum_residues([(1, args[0])], *args[1:])


def _reference_sum(signed_seeds, label, count, n):
    total = [0] * count
    for sign, seed in signed_seeds:
        total = [t + sign * r for t, r in zip(total, expand_residues(seed, label, count, n), strict=True)]
    return [t % n for t in total]


@settings(max_examples=60, deadline=None)
@given(signs=st.lists(st.sampled_from([1, -1]), max_size=7), count=st.integers(0, 40),
       n=st.one_of(st.integers(2, 2**64), st.integers(2**511, 2**2048)), label=st.binary(max_size=12),
       salt=st.binary(min_size=16, max_size=16))
def test_sum_residues_equals_the_sum_of_the_streams(signs, count, n, label, salt):
    seeds = [(s, hashlib.sha256(salt + bytes([i])).digest()) for i, s in enumerate(signs)]
    got = sum_residues(seeds, label, count, n)
    assert got == _reference_sum(seeds, label, count, n)
    assert len(got) == count and all(0 <= r < n for r in got)
    assert all(type(r) is type(gmpy2.mpz(0)) for r in got)


@settings(max_examples=40, deadline=None)
@given(signs=st.lists(st.sampled_from([1, -1]), max_size=5), own=st.lists(st.binary(max_size=6), max_size=5),
       count=st.integers(0, 20), label=st.binary(max_size=8), salt=st.binary(min_size=16, max_size=16))
def test_sum_residues_with_labels_of_their_own(signs, own, count, label, salt):
    """``(sign, seed, label)`` streams (a self-mask beside pairwise masks) sum like their own streams."""
    n = gmpy2.next_prime(1 << 700) * gmpy2.next_prime(1 << 600)
    seeds = [(s, hashlib.sha256(salt + bytes([i])).digest()) for i, s in enumerate(signs)]
    extra = [(-1 if i % 2 else 1, hashlib.sha256(salt + b"self" + bytes([i])).digest(), lab)
             for i, lab in enumerate(own)]
    want = _reference_sum(seeds, label, count, n)
    for sign, seed, lab in extra:
        want = [(t + r) % n for t, r in zip(want, _reference_sum([(sign, seed)], lab, count, n), strict=True)]
    assert sum_residues(seeds + extra, label, count, n) == want


def test_pairwise_sums_cancel_over_the_whole_set():
    """Site i adds the streams it shares with j > i and subtracts those with j < i: the sites' sums cancel."""
    n = gmpy2.next_prime(1 << 1024) * gmpy2.next_prime(1 << 1023)
    sites = range(5)
    shared = {(i, j): secrets.token_bytes(32) for i in sites for j in sites if i < j}
    per_site = [sum_residues([(1 if i < j else -1, shared[min(i, j), max(i, j)]) for j in sites if j != i],
                             b"hist", 30, n) for i in sites]
    assert [sum(col) % n for col in zip(*per_site, strict=True)] == [0] * 30
    partial = [sum(col) % n for col in zip(*per_site[:4], strict=True)]   # a proper subset: no cancelling
    assert all(p != 0 for p in partial)


def test_sum_residues_without_seeds_is_zero_and_signs_are_checked():
    assert sum_residues([], b"x", 3, 1001) == [0, 0, 0]
    with pytest.raises(ValueError, match="a mask sign must be \\+1 or -1, got 2"):
        sum_residues([(2, SEED)], b"x", 3, 1001)
    with pytest.raises(ValueError, match="a mask sign must be \\+1 or -1, got True"):
        sum_residues([(True, SEED)], b"x", 3, 1001)


def test_mask_plaintexts_adds_modulo_n():
    n = 1009
    assert mask_plaintexts([0, 5, 1008, 1000], [0, 1008, 1, 20], n) == [0, 4, 0, 11]
    with pytest.raises(ValueError, match="2 plaintexts but 1 mask residues"):
        mask_plaintexts([1, 2], [3], n)


# -- masked encryption --------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(sites=st.integers(1, 5), length=st.integers(1, 80), pack=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_masked_float_vectors_sum_bit_identically(public_key, private_key, sites, length, pack, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1e3, 1e3, length) for _ in range(sites)]
    plain = [encrypt_vector(public_key, x, bound=1e3, max_terms=sites, pack=pack) for x in xs]
    count = plain[0].layout.n_ciphertexts if pack else length
    masks = _cancelling(public_key.n, sites, count, rng)
    masked = [encrypt_vector(public_key, x, bound=1e3, max_terms=sites, pack=pack, masks=_as_masks(m))
              for x, m in zip(xs, masks, strict=True)]
    got, want = decrypt_vector(private_key, sum(masked)), decrypt_vector(private_key, sum(plain))
    assert got.tobytes() == want.tobytes()                                  # bit-identical sums
    for ev_masked, ev_plain, m in zip(masked, plain, masks, strict=True):    # each one shifted by its mask
        assert ev_masked.layout == ev_plain.layout and ev_masked.n_terms == ev_plain.n_terms
        assert ev_masked.encrypted_numbers[0].exponent == ev_plain.encrypted_numbers[0].exponent
        assert _raw(private_key, ev_masked) == [(p + r) % public_key.n
                                                 for p, r in zip(_raw(private_key, ev_plain), m, strict=True)]


def test_masks_are_asked_for_one_residue_per_ciphertext(public_key, private_key):
    x = np.linspace(-5, 5, 300)
    ev = encrypt_vector(public_key, x, bound=5.0, max_terms=3)
    masks = _as_masks([1] * 100)
    encrypt_vector(public_key, x, bound=5.0, max_terms=3, masks=masks)
    assert masks.asked == [ev.layout.n_ciphertexts]
    masks = _as_masks([1] * 500)
    encrypt_vector(public_key, x, bound=5.0, max_terms=3, pack=False, masks=masks)
    assert masks.asked == [300]


def test_masks_that_wrap_around_n(public_key, private_key):
    """Residues near ``n`` make ``m + r`` pass ``n``: the reduction keeps the sum exact."""
    n = public_key.n
    x = np.array([-1.0, 0.0, 1.0, -0.5])
    ev = encrypt_vector(public_key, x, bound=1.0, max_terms=3)
    (m,) = _raw(private_key, ev)
    masks = [[n - 1], [n - m], [m + 1]]                                     # sum = 2n = 0 mod n
    parts = [encrypt_vector(public_key, x, bound=1.0, max_terms=3, masks=lambda c, r=r: r) for r in masks]
    assert _raw(private_key, parts[0]) == [m - 1] and _raw(private_key, parts[1]) == [0]
    np.testing.assert_array_equal(decrypt_vector(private_key, sum(parts)), 3 * x)


@settings(max_examples=15, deadline=None)
@given(sites=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_masked_signed_integers_and_fields_sum_bit_identically(public_key, private_key, sites, seed):
    rng = np.random.default_rng(seed)
    n = public_key.n
    ints = [[int(v) for v in rng.integers(-2**40, 2**40, 7)] for _ in range(sites)]
    masks = _cancelling(n, sites, 7, rng)
    masked = [encrypt_integers(public_key, v, max_terms=sites, masks=_as_masks(m))
              for v, m in zip(ints, masks, strict=True)]
    assert decrypt_integers(private_key, sum(masked)) == [sum(col) for col in zip(*ints, strict=True)]
    assert _raw(private_key, masked[0]) == [(v + r) % n for v, r in zip(ints[0], masks[0], strict=True)]

    widths = np.tile(np.array([30, 22, 9]), 40)                              # several plaintexts of fields
    values = [np.concatenate([rng.integers(-2**26, 2**26, (40, 1)), rng.integers(-2**18, 2**18, (40, 1)),
                              rng.integers(0, 2**5, (40, 1))], axis=1).ravel() for _ in range(sites)]
    plain = [encrypt_fields(public_key, v, widths, max_terms=sites) for v in values]
    fmasks = _cancelling(n, sites, plain[0].layout.n_ciphertexts, rng)
    fmasked = [encrypt_fields(public_key, v, widths, max_terms=sites, masks=_as_masks(m))
               for v, m in zip(values, fmasks, strict=True)]
    got = decrypt_fields(private_key, sum(fmasked), widths)
    np.testing.assert_array_equal(got, decrypt_fields(private_key, sum(plain), widths))
    np.testing.assert_array_equal(got, np.sum(values, axis=0))


def test_masking_before_and_after_encryption_agree(public_key, private_key):
    """The same residues added to the plaintext or multiplied into the ciphertext give the same plaintext."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 10, 120)
    ev = encrypt_vector(public_key, x, bound=100.0, max_terms=2)
    residues = expand_residues(SEED, b"v", ev.layout.n_ciphertexts, public_key.n)
    before = encrypt_vector(public_key, x, bound=100.0, max_terms=2, masks=lambda count: residues)
    after = mask_vector(ev, residues)
    assert _raw(private_key, before) == _raw(private_key, after)
    assert _raw(private_key, before) != _raw(private_key, ev)
    assert mask_ciphertexts(public_key, ev.ciphertexts, [0] * len(residues)) == list(ev.ciphertexts)


def test_a_masks_function_of_the_wrong_length_or_type_is_refused(public_key):
    with pytest.raises(ValueError, match="1 plaintexts but 2 mask residues"):
        encrypt_vector(public_key, [1.0], bound=1.0, max_terms=2, masks=lambda count: [1, 2])
    with pytest.raises(TypeError, match="masks must be a function of the number of ciphertexts, got list"):
        encrypt_integers(public_key, [1, 2], max_terms=2, masks=[1, 2])
