"""Additive masks inside the Paillier plaintext space.

A mask is a residue ``r`` modulo ``n`` added to a plaintext. Masks that sum to zero modulo ``n`` over a set
of contributions leave the homomorphic sum of exactly that set unchanged, while each contribution alone (or
any proper subset) decrypts to a uniformly random residue.

Where the mask is added
-----------------------
With ``g = n + 1`` (python-paillier's choice) a ciphertext of ``m`` is ``c = (1 + m n) rho mod n**2``, so a
site that knows its plaintext integers adds the mask *before* encryption: :func:`mask_plaintexts` gives
``(m + r) mod n`` (one addition and one reduction per ciphertext) and the ciphertext is the ordinary
encryption of that residue. This is what :func:`ehr_fed.crypto.encrypt_vector`, ``encrypt_integers`` and
``ehr_fed.crypto.fields.encrypt_fields`` do with their ``masks`` argument. Decryption already reduces modulo
``n`` and every plaintext layout lives in ``[0, n)`` (packed fixed-point slots below ``2**(bits(n) - 1)``,
signed integers as ``x mod n``, unpacked ``phe`` encodings modulo ``n``), so the decrypted sum over the
masked set is bit-identical to the unmasked one.

An existing ciphertext can still be masked afterwards with :func:`mask_ciphertexts`: since
``g**r = 1 + r n (mod n**2)``, ``c (1 + r n) mod n**2`` is a ciphertext of ``(m + r) mod n``. It costs one
multiplication modulo ``n**2`` per ciphertext (about one step of an encryption) and gives the same plaintext.

Residue streams
---------------
:func:`expand_residues` turns a seed of at least 16 bytes into pseudo-random residues modulo ``n``: one
stream per label, SHAKE-256 (FIPS 202) for streams up to 2 KB and the ChaCha20 keystream (RFC 8439, from
``cryptography``, keyed by SHA-256 of the seed, the label and the count) for longer ones, where it is several
times faster per byte; each residue takes ``bytes(n) + 16`` stream bytes, so its bias from uniform is below
``2**-128``.
:func:`sum_residues` gives, for several ``(sign, seed)`` pairs, ``sum_j sign_j r_ji mod n`` for every index
``i``, bit-identical to summing the streams of :func:`expand_residues`, in one pass (one reduction per
index, not one per stream and index). The keystream is most of what remains: about 0.4 us per residue and
peer with a 2048-bit key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import gmpy2
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .keys import check_public_key

__all__ = ["expand_residues", "sum_residues", "mask_plaintexts", "mask_ciphertexts", "mask_vector"]

_MPZ = type(gmpy2.mpz(0))
_EXTRA_BYTES = 16
#: ChaCha20's 16-byte initial counter and nonce: zero (one stream per key, see :func:`_stream`)
_NONCE = bytes(16)
#: streams up to this many bytes come from SHAKE-256, longer ones from ChaCha20 (measured crossover: about
#: 8 residues of a 2048-bit key, 2,200 bytes)
SHORT_STREAM_BYTES = 2048


def _residue_bytes(n: int) -> int:
    """Output bytes of the XOF per residue modulo ``n``: ``bytes(n) + 16``."""
    return (int(n).bit_length() + 7) // 8 + _EXTRA_BYTES


def _check_seed(seed) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
        raise ValueError("a mask seed must be at least 16 bytes")


def _check_stream_args(label, count: int, n: int) -> None:
    if not isinstance(label, (bytes, bytearray)):
        raise TypeError(f"a mask label must be bytes, got {type(label).__name__}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer, _MPZ)) or n < 2:
        raise ValueError(f"the modulus n must be an int >= 2, got {n!r}")


def stream_key(seed: bytes, label: bytes, count: int) -> bytes:
    """The 32-byte ChaCha20 key of the stream ``(seed, label, count)`` (stream v2)."""
    h = hashlib.sha256(b"ehr-fed mask stream v2\x00")
    h.update(len(seed).to_bytes(2, "big") + bytes(seed))
    h.update(len(label).to_bytes(4, "big") + bytes(label))
    h.update(int(count).to_bytes(8, "big"))
    return h.digest()


def _stream(seed: bytes, label: bytes, count: int, width: int) -> bytes:
    """``width * count`` pseudo-random bytes for ``(seed, label, count)``.

    Up to :data:`SHORT_STREAM_BYTES`: SHAKE-256 output (stream v1); longer: the ChaCha20 keystream (zero
    nonce and counter) under :func:`stream_key` (stream v2; each key is used for one stream only, so the
    fixed nonce never repeats under a key). Both are standard; which one a stream uses follows from its
    length alone, so every site expands the same bytes. SHAKE-256 costs about 3.5 ns per byte and nothing
    to set up, ChaCha20 about 0.6 ns per byte and 5 us to set up.
    """
    size = width * count
    if size <= SHORT_STREAM_BYTES:
        return hashlib.shake_256(b"".join((
            b"ehr-fed mask stream v1\x00", len(seed).to_bytes(2, "big"), bytes(seed),
            len(label).to_bytes(4, "big"), bytes(label), int(count).to_bytes(8, "big")))).digest(size)
    cipher = Cipher(algorithms.ChaCha20(stream_key(seed, label, count), _NONCE), mode=None)
    return cipher.encryptor().update(bytes(size))


def expand_residues(seed: bytes, label: bytes, count: int, n: int) -> list:
    """``count`` pseudo-random residues modulo ``n`` from ``seed`` (domain-separated by ``label``).

    Residue ``i`` is the big-endian integer of output bytes ``[i w, (i + 1) w)`` of one keystream
    (``w = bytes(n) + 16``) reduced modulo ``n``. The same ``(seed, label, count, n)`` always gives the same
    residues; distinct labels (or counts) give independent streams.

    Returns
    -------
    list of gmpy2.mpz, length ``count``, each in ``[0, n)``

    Raises
    ------
    ValueError
        If the seed is shorter than 16 bytes, ``count`` is negative or ``n < 2``.
    """
    _check_seed(seed)
    _check_stream_args(label, count, n)
    if count == 0:
        return []
    width = _residue_bytes(n)
    stream = memoryview(_stream(seed, label, count, width))
    nz = gmpy2.mpz(n)
    from_bytes = int.from_bytes
    return [gmpy2.mpz(from_bytes(stream[i : i + width], "big")) % nz for i in range(0, width * count, width)]


def sum_residues(signed_seeds: Sequence[tuple[int, bytes]], label: bytes, count: int, n: int) -> list:
    """``sum_j sign_j * expand_residues(seed_j, label, count, n)[i] mod n`` for ``i < count``, in one pass.

    Bit-identical to summing the streams of :func:`expand_residues` and reducing, but each stream is read
    once into unreduced integers, the signed sums are taken per index, and each index is reduced modulo ``n``
    once (not once per stream).

    Parameters
    ----------
    signed_seeds : sequence of (int, bytes) or (int, bytes, bytes)
        ``(sign, seed)`` pairs, ``sign`` in ``{+1, -1}`` (a site's pairwise seeds: ``+1`` for peers after it),
        or ``(sign, seed, label)`` for a stream with its own label (a self-mask beside the pairwise masks).
    label, count, n
        As in :func:`expand_residues` (the same stream per seed).

    Returns
    -------
    list of gmpy2.mpz, length ``count``, each in ``[0, n)`` (all zero when ``signed_seeds`` is empty)

    Raises
    ------
    ValueError
        If a sign is not ``+1`` or ``-1``, or as :func:`expand_residues`.
    """
    seeds = [(item[0], item[1], item[2] if len(item) > 2 else label) for item in signed_seeds]
    for sign, seed, own in seeds:
        if isinstance(sign, bool) or sign not in (1, -1):
            raise ValueError(f"a mask sign must be +1 or -1, got {sign!r}")
        _check_seed(seed)
        _check_stream_args(own, count, n)
    _check_stream_args(label, count, n)
    if count == 0:
        return []
    width = _residue_bytes(n)
    from_bytes = int.from_bytes
    totals = [0] * count
    for sign, seed, own in seeds:
        stream = memoryview(_stream(seed, own, count, width))
        chunks = (from_bytes(stream[i : i + width], "big") for i in range(0, width * count, width))
        if sign > 0:
            totals = [t + r for t, r in zip(totals, chunks, strict=True)]
        else:
            totals = [t - r for t, r in zip(totals, chunks, strict=True)]
    n = int(n)
    return [gmpy2.mpz(t % n) for t in totals]


def mask_plaintexts(plaintexts: Sequence, residues: Sequence, n: int) -> list:
    """``(m_i + r_i) mod n`` for raw plaintexts ``0 <= m_i < n`` and mask residues ``r_i``.

    The ordinary encryption of the result is a ciphertext of the masked plaintext: masking costs one addition
    and one reduction modulo ``n`` per ciphertext.

    Raises
    ------
    ValueError
        If the numbers of plaintexts and residues differ.
    """
    if len(plaintexts) != len(residues):
        raise ValueError(f"{len(plaintexts)} plaintexts but {len(residues)} mask residues")
    nz = gmpy2.mpz(n)
    return [(gmpy2.mpz(m) + r) % nz for m, r in zip(plaintexts, residues, strict=True)]


def mask_ciphertexts(public_key, ciphertexts: Sequence, residues: Sequence) -> list:
    """``c_i * (1 + r_i * n) mod n**2`` for each ciphertext: the plaintexts become ``m_i + r_i (mod n)``."""
    check_public_key(public_key)
    if len(ciphertexts) != len(residues):
        raise ValueError(f"{len(ciphertexts)} ciphertexts but {len(residues)} mask residues")
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    return [gmpy2.mpz(c) * (1 + (gmpy2.mpz(r) % n) * n) % nsquare for c, r in zip(ciphertexts, residues, strict=True)]


def mask_vector(vector, residues: Sequence):
    """A copy of an :class:`~ehr_fed.crypto.vector.EncryptedVector` whose every plaintext is shifted by the
    matching residue (modulo ``n``); layout, term count and exponents are kept."""
    from .vector import EncryptedVector

    if not isinstance(vector, EncryptedVector):
        raise TypeError(f"mask_vector needs an EncryptedVector, got {type(vector).__name__}")
    cts = mask_ciphertexts(vector.public_key, vector._ciphertexts, residues)
    return EncryptedVector(vector.public_key, vector.layout, cts, vector.n_terms, exponents=vector._exponents)
