"""Threshold Paillier: dealing, share serialization, partial decryption, combination, proofs, decoding."""

from __future__ import annotations

import itertools
import math

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phe import paillier

from ehr_fed.crypto import (
    EncodingOverflowError,
    KeyMismatchError,
    PartialProof,
    PayloadError,
    ThresholdError,
    ThresholdKeyShare,
    VerificationKeys,
    combine_partials,
    decode_integers,
    decode_vector,
    decrypt_vector,
    encrypt_vector,
    generate_threshold_keypair,
    partial_decrypt,
    prove_partial,
    share_fingerprint,
    verify_partial,
)
from ehr_fed.crypto.fields import decode_fields, decrypt_fields, encrypt_fields
from ehr_fed.crypto.primes import is_safe_prime, random_safe_prime
from ehr_fed.crypto.threshold import _generate, lagrange_coefficients
from ehr_fed.crypto.vector import decrypt_integers, encrypt_integers

SCHEMES = [(2, 3), (3, 3), (2, 4), (3, 5)]


def _deal(threshold, n_shares, bits=1024):
    public_key, shares, (p, q) = _generate(bits, n_shares, threshold, allow_insecure=True, _keep_primes=True)
    return public_key, shares, paillier.PaillierPrivateKey(public_key, p, q), (p, q)


@pytest.fixture(scope="module")
def dealt():
    """One 1024-bit threshold key per (t, l) scheme, with the single private key of the same primes."""
    return {scheme: _deal(*scheme) for scheme in SCHEMES}


@pytest.fixture(scope="module")
def key23(dealt):
    return dealt[(2, 3)]


def _vectors(public_key, n_vectors=3, length=120, bound=50.0, seed=0, pack=True):
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-bound, bound, length) for _ in range(n_vectors)]
    return sum(encrypt_vector(public_key, x, bound=bound, max_terms=8, pack=pack) for x in xs)


def _combine(public_key, shares, subset, encrypted, threshold, n_shares, **kwargs):
    partials = {i: partial_decrypt(shares[i - 1], encrypted, **kwargs) for i in subset}
    return combine_partials(public_key, partials, threshold, n_shares)


def _subsets(threshold, n_shares):
    every = list(itertools.combinations(range(1, n_shares + 1), threshold))
    return every + [tuple(range(1, n_shares + 1))]  # all of them: more than t is fine


# --- dealing ---------------------------------------------------------------------------------------------


def test_dealt_key_is_a_phe_key_of_two_safe_primes(key23):
    public_key, shares, private_key, (p, q) = key23
    assert isinstance(public_key, paillier.PaillierPublicKey) and public_key.g == public_key.n + 1
    assert public_key.n == p * q and public_key.n.bit_length() == 1024
    assert is_safe_prime(p) and is_safe_prime(q) and p != q
    assert [s.index for s in shares] == [1, 2, 3]
    assert all((s.n, s.threshold, s.n_shares, s.delta) == (public_key.n, 2, 3, 6) for s in shares)
    # an ordinary phe encryption decrypts by threshold too
    c = public_key.encrypt(-12345)
    raw = _combine(public_key, shares, (1, 3), [c], 2, 3)
    assert paillier.EncodedNumber(public_key, raw[0], c.exponent).decode() == -12345


def test_dealer_secrets_do_not_survive_the_call(key23):
    public_key, shares, _, (p, q) = key23
    m = (p - 1) // 2 * ((q - 1) // 2)
    d = m * pow(m, -1, public_key.n)
    secrets_ = {p, q, m, d, p - 1, q - 1}
    for share in shares:
        held = [share.index, share.n, share.threshold, share.n_shares, share.share,
                share.verification.base, *share.verification.keys]
        assert not secrets_ & set(held)
        assert share.share != d and str(share.share) not in repr(share)
    result = generate_threshold_keypair(512, 2, 2, allow_insecure=True)
    assert len(result) == 2 and isinstance(result[0], paillier.PaillierPublicKey)


def test_key_size_and_parameters_are_checked():
    with pytest.raises(ValueError, match="allow_insecure=True"):
        generate_threshold_keypair(1024, 3, 2)
    with pytest.raises(ValueError, match="threshold 1 any single share holder decrypts alone"):
        generate_threshold_keypair(512, 3, 1, allow_insecure=True)
    with pytest.raises(ValueError, match=r"threshold must be in \[2, n_shares=3\], got 4"):
        generate_threshold_keypair(512, 3, 4, allow_insecure=True)
    with pytest.raises(ValueError, match="even number of bits"):
        generate_threshold_keypair(1023, 3, 2, allow_insecure=True)


def test_random_safe_prime_has_exact_size_and_top_bits():
    for bits in (64, 256):
        p = random_safe_prime(bits)
        assert is_safe_prime(p) and p.bit_length() == bits and p >> (bits - 2) == 3
    assert not is_safe_prime(p + 2) and not is_safe_prime(p * 3)
    assert not is_safe_prime(13)  # 13 = 2 * 6 + 1, 6 not prime
    assert is_safe_prime(23)


def test_lagrange_coefficients_interpolate_at_zero():
    f = [17, 5, 11]  # degree 2
    for subset in itertools.combinations(range(1, 6), 3):
        mus = lagrange_coefficients(subset, 5)
        value = sum(mu * sum(a * i**k for k, a in enumerate(f)) for i, mu in mus.items())
        assert value == math.factorial(5) * f[0]


# --- combined decryption equals the single key, bit for bit -------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_packed_float_sums_equal_single_key_decryption(dealt, scheme):
    public_key, shares, private_key, _ = dealt[scheme]
    total = _vectors(public_key, seed=sum(scheme))
    expected = decrypt_vector(private_key, total)
    for subset in _subsets(*scheme):
        got = decode_vector(total, _combine(public_key, shares, subset, total, *scheme))
        assert got.tobytes() == expected.tobytes(), subset


def test_unpacked_vectors_and_threads(key23):
    public_key, shares, private_key, _ = key23
    total = _vectors(public_key, n_vectors=2, length=20, pack=False)
    expected = decrypt_vector(private_key, total)
    got = decode_vector(total, _combine(public_key, shares, (2, 3), total, 2, 3, workers=2))
    assert got.tobytes() == expected.tobytes()
    assert partial_decrypt(shares[0], total, workers=2) == partial_decrypt(shares[0], total, workers=1)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_integer_fields_and_integer_vectors(dealt, scheme):
    public_key, shares, private_key, _ = dealt[scheme]
    rng = np.random.default_rng(7)
    widths = np.tile([12, 20, 7], 40)
    parts = [rng.integers(-(2 ** (widths - 3)), 2 ** (widths - 3)) for _ in range(3)]
    fields = sum(encrypt_fields(public_key, x, widths, max_terms=4) for x in parts)
    ints = [[int(v) for v in rng.integers(-(10**15), 10**15, 30)] for _ in range(3)]
    ints[0][0] = -(2**300)
    integers = sum(encrypt_integers(public_key, x, max_terms=4) for x in ints)
    for subset in _subsets(*scheme)[:3]:
        got = decode_fields(fields, _combine(public_key, shares, subset, fields, *scheme), widths)
        assert np.array_equal(got, decrypt_fields(private_key, fields, widths))
        assert np.array_equal(got, np.sum(parts, axis=0))
        got_ints = decode_integers(integers, _combine(public_key, shares, subset, integers, *scheme))
        assert got_ints == decrypt_integers(private_key, integers) == [int(sum(c)) for c in zip(*ints, strict=True)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_large_enough_subset_decrypts(dealt, data):
    scheme = data.draw(st.sampled_from(SCHEMES))
    threshold, n_shares = scheme
    public_key, shares, private_key, _ = dealt[scheme]
    subset = data.draw(st.sets(st.integers(1, n_shares), min_size=threshold))
    values = data.draw(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60))
    n_vectors = data.draw(st.integers(1, 3))
    total = sum(encrypt_vector(public_key, values, bound=1e3, max_terms=3) for _ in range(n_vectors))
    got = decode_vector(total, _combine(public_key, shares, sorted(subset), total, *scheme))
    assert got.tobytes() == decrypt_vector(private_key, total).tobytes()


# --- too few, malformed and wrong partials ------------------------------------------------------------------


def test_t_minus_one_partials_cannot_be_combined(dealt):
    public_key, shares, _, _ = dealt[(3, 5)]
    total = _vectors(public_key, length=30)
    partials = {i: partial_decrypt(shares[i - 1], total) for i in (2, 5)}
    with pytest.raises(ThresholdError, match=r"2 share\(s\) \[2, 5\], need threshold=3"):
        combine_partials(public_key, partials, 3, 5)


def test_malformed_partials_are_refused(key23):
    public_key, shares, _, _ = key23
    total = _vectors(public_key, length=40)
    a, b = partial_decrypt(shares[0], total), partial_decrypt(shares[1], total)
    with pytest.raises(ThresholdError, match=r"share index 4 is outside \[1, n_shares=3\]"):
        combine_partials(public_key, {1: a, 4: b}, 2, 3)
    with pytest.raises(ThresholdError, match="share 1 sent partial decryptions twice"):
        combine_partials(public_key, [(1, a), (1, a), (2, b)], 2, 3)
    with pytest.raises(ThresholdError, match="different lengths"):
        combine_partials(public_key, {1: a, 2: b[:-1]}, 2, 3)
    with pytest.raises(PayloadError, match=r"partial decryption 0 of share 2 is outside \[1, n\*\*2\)"):
        combine_partials(public_key, {1: a, 2: [public_key.nsquare] + b[1:]}, 2, 3)
    with pytest.raises(TypeError, match="share index must be an int"):
        combine_partials(public_key, {"1": a, 2: b}, 2, 3)


def test_garbled_partial_is_detected_and_shifted_partial_is_rejected_by_its_proof(key23):
    public_key, shares, private_key, _ = key23
    total = _vectors(public_key, length=100)
    a, b = partial_decrypt(shares[0], total), partial_decrypt(shares[1], total)
    garbled = list(b)
    garbled[1] = garbled[1] ^ (1 << 700)
    with pytest.raises(ThresholdError, match=r"shares \[1, 2\] do not combine at position 1"):
        combine_partials(public_key, {1: a, 2: garbled}, 2, 3)
    # a lying holder shifts a plaintext: the combination is wrong, and only the proof catches it
    shifted = list(b)
    shifted[0] = shifted[0] * (1 + 5 * public_key.n) % public_key.nsquare
    raw = combine_partials(public_key, {1: a, 2: shifted}, 2, 3)
    assert raw != combine_partials(public_key, {1: a, 2: b}, 2, 3)
    verification = shares[0].verification
    honest = prove_partial(shares[1], total, b)
    assert verify_partial(verification, 2, total, b, honest)
    assert not verify_partial(verification, 2, total, shifted, honest)
    assert not verify_partial(verification, 2, total, shifted, prove_partial(shares[1], total, shifted))
    proofs = {1: prove_partial(shares[0], total, a), 2: prove_partial(shares[1], total, shifted)}
    with pytest.raises(ThresholdError, match=r"the proofs of share\(s\) \[2\] fail"):
        combine_partials(public_key, {1: a, 2: shifted}, 2, 3, ciphertexts=total, verification=verification,
                         proofs=proofs)
    proofs[2] = honest
    raw = combine_partials(public_key, {1: a, 2: b}, 2, 3, ciphertexts=total, verification=verification,
                           proofs=proofs)
    assert decode_vector(total, raw).tobytes() == decrypt_vector(private_key, total).tobytes()


def test_proofs_bind_share_batch_and_bytes(key23):
    public_key, shares, _, _ = key23
    total, other = _vectors(public_key, length=40), _vectors(public_key, length=40, seed=9)
    a = partial_decrypt(shares[0], total)
    proof = prove_partial(shares[0], total, a)
    assert PartialProof.from_bytes(proof.to_bytes()) == proof
    verification = shares[2].verification
    assert verify_partial(verification, 1, total, a, proof)
    assert not verify_partial(verification, 2, total, a, proof)  # claimed by another share
    assert not verify_partial(verification, 1, other, partial_decrypt(shares[0], other), proof)
    forged = PartialProof(1, proof.challenge, proof.response + 1)
    assert not verify_partial(verification, 1, total, a, forged)
    with pytest.raises(PayloadError, match="truncated"):
        PartialProof.from_bytes(proof.to_bytes()[:20])
    with pytest.raises(PayloadError, match="its header says"):
        PartialProof.from_bytes(proof.to_bytes() + b"\0")


# --- keys and shares --------------------------------------------------------------------------------------------


def test_share_under_another_key_is_refused(dealt, key23):
    public_key, shares, _, _ = key23
    other_public, other_shares, _, _ = dealt[(2, 4)]
    with pytest.raises(KeyMismatchError, match="load the share issued for this federation's key"):
        ThresholdKeyShare.from_bytes(other_shares[0].to_bytes(), public_key, allow_insecure=True)
    foreign = _vectors(other_public, length=10)
    with pytest.raises(KeyMismatchError, match="not under this share's public key"):
        partial_decrypt(shares[0], foreign)
    with pytest.raises(KeyMismatchError):
        VerificationKeys.from_bytes(other_shares[0].verification.to_bytes(), public_key, allow_insecure=True)


def test_share_serialization_round_trips_and_rejects_garbage(key23):
    public_key, shares, _, _ = key23
    for share in shares:
        data = share.to_bytes()
        back = ThresholdKeyShare.from_bytes(data, public_key, allow_insecure=True)
        assert back == share and share_fingerprint(back) == share_fingerprint(share)
    assert len({share_fingerprint(s) for s in shares}) == 3
    assert share_fingerprint(shares[0].verification, 2) == share_fingerprint(shares[1])
    verification = shares[0].verification
    assert VerificationKeys.from_bytes(verification.to_bytes(), public_key, allow_insecure=True) == verification
    data = shares[1].to_bytes()
    with pytest.raises(PayloadError, match="expected the prefix"):
        ThresholdKeyShare.from_bytes(b"garbage" + data, public_key, allow_insecure=True)
    with pytest.raises(PayloadError, match="format version"):
        ThresholdKeyShare.from_bytes(data[:6] + b"\x07" + data[7:], public_key, allow_insecure=True)
    for cut in (10, len(data) // 2, len(data) - 1):
        with pytest.raises(PayloadError, match="truncated"):
            ThresholdKeyShare.from_bytes(data[:cut], public_key, allow_insecure=True)
    with pytest.raises(PayloadError, match="verification keys for n_shares=3"):
        ThresholdKeyShare.from_bytes(data + b"\x00\x00\x00\x01\x05", public_key, allow_insecure=True)
    altered = ThresholdKeyShare(2, shares[1].n, 2, 3, shares[1].verification, shares[1].share + 1).to_bytes()
    with pytest.raises(PayloadError, match="does not match its verification key"):
        ThresholdKeyShare.from_bytes(altered, public_key, allow_insecure=True)
    with pytest.raises(TypeError, match="must be bytes"):
        ThresholdKeyShare.from_bytes("text", public_key, allow_insecure=True)


def test_loading_a_short_share_needs_the_flag(key23):
    public_key, shares, _, _ = key23
    with pytest.raises(ValueError, match=r"1024-bit modulus, below the minimum of 2048 bits.*allow_insecure=True"):
        ThresholdKeyShare.from_bytes(shares[0].to_bytes(), public_key)
    with pytest.raises(ValueError, match="allow_insecure=True"):
        VerificationKeys.from_bytes(shares[0].verification.to_bytes(), public_key)


def test_partial_decrypt_checks_its_input(key23):
    public_key, shares, _, _ = key23
    with pytest.raises(TypeError, match="share must be a ThresholdKeyShare"):
        partial_decrypt(object(), [1])
    with pytest.raises(PayloadError, match=r"ciphertext 1 is outside \[1, n\*\*2\)"):
        partial_decrypt(shares[0], [2, 0])
    with pytest.raises(PayloadError, match="ciphertext 1 is not invertible modulo n"):
        partial_decrypt(shares[0], [2, int(public_key.n) * 3])
    with pytest.raises(TypeError, match="EncryptedVector or a sequence of ciphertexts"):
        partial_decrypt(shares[0], 5)


# --- decoding halves keep the decryptions' checks -------------------------------------------------------------


def test_decode_functions_check_plaintexts(key23):
    public_key, _, private_key, _ = key23
    floats = _vectors(public_key, length=40)
    integers = encrypt_integers(public_key, [3, -4], max_terms=2)
    raw = [private_key.raw_decrypt(c) for c in floats.ciphertexts]
    with pytest.raises(ValueError, match=f"1 plaintexts for a vector of {len(raw)} ciphertexts"):
        decode_vector(floats, raw[:1])
    with pytest.raises(ValueError, match=r"plaintext 0 is outside \[0, n\)"):
        decode_vector(floats, [public_key.n] + raw[1:])
    with pytest.raises(EncodingOverflowError):
        decode_vector(floats, [public_key.n // 3] + raw[1:])  # an altered plaintext leaves its slots' range
    with pytest.raises(TypeError, match="decode it with decode_integers"):
        decode_vector(integers, [0, 0])
    with pytest.raises(TypeError, match="decode it with decode_vector"):
        decode_integers(floats, raw)
    with pytest.raises(EncodingOverflowError, match="ciphertext 1 decrypts outside the packed range"):
        decode_integers(integers, [3, public_key.n // 2])
    assert decode_integers(integers, [private_key.raw_decrypt(c) for c in integers.ciphertexts]) == [3, -4]


def test_sieve_strikes_exactly_the_candidates_with_small_factors():
    from ehr_fed.crypto.primes import SIEVE_LIMIT, _small_primes, _survivors

    start = (1 << 200) + 12345 | 1
    window = 3000
    survivors = set(_survivors(gmpy2.mpz(start), window).tolist())
    primorial = math.prod(int(r) for r in _small_primes(SIEVE_LIMIT))
    for k in range(window):
        q = start + 2 * k
        clean = math.gcd(q, primorial) == 1 and math.gcd(2 * q + 1, primorial) == 1
        assert (k in survivors) == clean, k


def test_multi_exponentiation_equals_the_naive_product():
    from ehr_fed.crypto.proofs import multi_exp

    rng = np.random.default_rng(3)
    modulus = gmpy2.mpz(2**521 - 1)
    for count in (1, 5, 70):
        bases = [gmpy2.mpz(int(b)) for b in rng.integers(2, 2**62, count)]
        exponents = [int.from_bytes(rng.bytes(16), "big") for _ in range(count)]
        expected = math.prod(pow(int(b), e, int(modulus)) for b, e in zip(bases, exponents, strict=True))
        assert multi_exp(bases, exponents, modulus, 128) == expected % int(modulus)


def test_verification_keys_of_another_key_are_refused_when_combining(dealt, key23):
    public_key, shares, _, _ = key23
    total = _vectors(public_key, length=20)
    partials = {i: partial_decrypt(shares[i - 1], total) for i in (1, 2)}
    proofs = {i: prove_partial(shares[i - 1], total, partials[i]) for i in (1, 2)}
    foreign = dealt[(3, 3)][1][0].verification
    with pytest.raises(KeyMismatchError, match="verification keys belong to another threshold key"):
        combine_partials(public_key, partials, 2, 3, ciphertexts=total, verification=foreign, proofs=proofs)
    with pytest.raises(ThresholdError, match=r"no proof for the partial decryptions of share\(s\) \[2\]"):
        combine_partials(public_key, partials, 2, 3, ciphertexts=total, verification=shares[0].verification,
                         proofs={1: proofs[1]})
    with pytest.raises(TypeError, match="together"):
        combine_partials(public_key, partials, 2, 3, proofs=proofs)
