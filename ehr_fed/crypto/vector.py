"""Encrypted float vectors: encryption, homomorphic addition and decryption."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gmpy2
import numpy as np
from phe import paillier

from .encoding import (
    DEFAULT_FRAC_BITS,
    Layout,
    check_bound,
    check_values,
    make_layout,
    raw_decode,
    raw_encode,
    raw_pack,
    raw_unpack,
)
from .errors import EncodingOverflowError, KeyMismatchError, LayoutMismatchError
from .keys import check_private_key, check_public_key, key_fingerprint
from .obfuscation import ObfuscatorPool, default_pool
from .parallel import raw_decrypt_parallel, raw_encrypt_plaintexts

__all__ = [
    "EncryptedVector", "encrypt_vector", "decrypt_vector", "encrypt_integers", "decrypt_integers",
    "decode_vector", "decode_integers",
]

_MPZ = type(gmpy2.mpz(0))


class EncryptedVector:
    """A float vector encrypted under a Paillier public key.

    Build it with :func:`encrypt_vector` or :meth:`from_bytes`; add vectors with ``+`` or ``sum``; open it
    with :func:`decrypt_vector`.

    Attributes
    ----------
    public_key : phe.PaillierPublicKey
    layout : Layout
    n_terms : int
        Number of terms added into this vector (1 for a fresh vector encrypted with ``terms=1``).
    """

    __slots__ = ("public_key", "layout", "n_terms", "_ciphertexts", "_exponents")

    def __init__(self, public_key, layout: Layout, ciphertexts, n_terms: int = 1, exponents=None):
        check_public_key(public_key)
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a Layout, got {type(layout).__name__}")
        ciphertexts = [c if type(c) is _MPZ else gmpy2.mpz(c) for c in ciphertexts]
        if len(ciphertexts) != layout.n_ciphertexts:
            raise ValueError(f"layout needs {layout.n_ciphertexts} ciphertexts, got {len(ciphertexts)}")
        if not 1 <= n_terms <= layout.max_terms:
            raise EncodingOverflowError(
                f"n_terms must be in [1, max_terms={layout.max_terms}], got {n_terms}"
            )
        if (exponents is None) != layout.packed:
            raise ValueError("exponents are given for, and only for, unpacked layouts")
        self.public_key = public_key
        self.layout = layout
        self.n_terms = int(n_terms)
        self._ciphertexts = ciphertexts
        self._exponents = None if exponents is None else tuple(int(e) for e in exponents)

    def __len__(self) -> int:
        return self.layout.length

    def __repr__(self) -> str:
        kind = f"{self.layout.slots_per_ciphertext} slots/ciphertext" if self.layout.packed else "unpacked"
        return (
            f"<EncryptedVector length={len(self)} n_terms={self.n_terms}/{self.layout.max_terms} "
            f"{kind} key={key_fingerprint(self.public_key)[:12]}>"
        )

    @property
    def ciphertexts(self) -> tuple[int, ...]:
        """Raw Paillier ciphertexts (Python ints modulo ``n**2``), valid under ``public_key``."""
        return tuple(int(c) for c in self._ciphertexts)

    @property
    def encrypted_numbers(self) -> list[paillier.EncryptedNumber]:
        """The ciphertexts as ``phe.EncryptedNumber`` (for packed vectors they hold packed plaintexts)."""
        exponents = self._exponents or (0,) * len(self._ciphertexts)
        return [
            paillier.EncryptedNumber(self.public_key, int(c), e)
            for c, e in zip(self._ciphertexts, exponents, strict=True)
        ]

    def check_compatible(self, other: EncryptedVector) -> None:
        """Raise unless ``other`` can be added to this vector (same key, same layout)."""
        if not isinstance(other, EncryptedVector):
            raise TypeError(
                f"can only add an EncryptedVector to an EncryptedVector, got {type(other).__name__}"
            )
        if other.public_key != self.public_key:
            raise KeyMismatchError(
                f"cannot add vectors encrypted under different keys (fingerprints "
                f"{key_fingerprint(self.public_key)[:16]} and {key_fingerprint(other.public_key)[:16]}); "
                "every site must encrypt with the federation's public key"
            )
        if other.layout != self.layout:
            diff = [
                f"{name}: {getattr(self.layout, name)!r} != {getattr(other.layout, name)!r}"
                for name in Layout.__dataclass_fields__
                if getattr(self.layout, name) != getattr(other.layout, name)
            ]
            raise LayoutMismatchError(
                "cannot add vectors with different layouts (" + "; ".join(diff) + "); every party must "
                "encrypt with the same length, bound, max_terms, frac_bits and pack"
            )

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        self.check_compatible(other)
        n_terms = self.n_terms + other.n_terms
        if n_terms > self.layout.max_terms:
            raise EncodingOverflowError(
                f"the sum would hold {n_terms} terms but the layout allows at most max_terms="
                f"{self.layout.max_terms}; encrypt with a larger max_terms"
            )
        if self.layout.packed:
            nsquare = gmpy2.mpz(self.public_key.nsquare)
            cts = [a * b % nsquare for a, b in zip(self._ciphertexts, other._ciphertexts, strict=True)]
            return EncryptedVector(self.public_key, self.layout, cts, n_terms)
        summed = [a + b for a, b in zip(self.encrypted_numbers, other.encrypted_numbers, strict=True)]
        return EncryptedVector(
            self.public_key,
            self.layout,
            [s.ciphertext(be_secure=False) for s in summed],
            n_terms,
            exponents=[s.exponent for s in summed],
        )

    def __radd__(self, other) -> EncryptedVector:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # the start value of builtin sum()
        return self.__add__(other)

    def to_bytes(self) -> bytes:
        """Serialize (versioned; carries the key fingerprint, the layout and a checksum)."""
        from .serialization import vector_to_bytes

        return vector_to_bytes(self)

    @classmethod
    def from_bytes(cls, public_key, data: bytes) -> EncryptedVector:
        """Read bytes written by :meth:`to_bytes`; see :func:`ehr_fed.crypto.serialization.vector_from_bytes`."""
        from .serialization import vector_from_bytes

        return vector_from_bytes(public_key, data)


def encrypt_vector(
    public_key,
    values,
    *,
    bound: float,
    max_terms: int,
    pack: bool = True,
    frac_bits: int = DEFAULT_FRAC_BITS,
    workers: int | None = None,
    terms: int = 1,
    pool: ObfuscatorPool | None = None,
    masks: Callable[[int], Sequence[int]] | None = None,
) -> EncryptedVector:
    """Encrypt a float vector under ``public_key``.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    values : array-like of float, shape (length,)
        Finite entries with ``|x| <= bound * terms``.
    bound : float
        Largest absolute value of one entry of one term. Public: it sizes the slots.
    max_terms : int
        Largest number of terms that will ever be added together (e.g. the number of sites, or the pooled
        number of rows when each entry sums rows, see ``terms``).
    pack : bool, default True
        Pack many fixed-point slots per ciphertext. ``False`` gives one ordinary ``phe.EncryptedNumber`` per
        value (phe's own encoding at a fixed exponent), slower and larger.
    frac_bits : int, default 53
        Fractional bits below ``2**ceil(log2(bound))``. Decoded sums of ``T`` terms are within
        ``T * bound * 2**-frac_bits`` of the exact sums (see :mod:`ehr_fed.crypto.encoding`).
    workers : int, optional
        Processes for encryption. ``None``: in this process below 8,192 ciphertexts (about 280,000 values
        with a 2048-bit key), else all cores (at most 8). ``1``: never spawn.
    terms : int, default 1
        Number of bound-limited terms each entry already aggregates (e.g. the site's rows in a local
        histogram, each row contributing at most ``bound``). The vector starts with ``n_terms = terms``.
    pool : ObfuscatorPool, optional
        Source of obfuscators (e.g. pre-filled); default a process-wide pool for the key.
    masks : callable, optional
        ``masks(count)`` returns one residue modulo ``n`` per ciphertext (``count`` of them, known once the
        layout is), added to the plaintext integers before encryption (:mod:`ehr_fed.crypto.masking`): the
        vector then decrypts to random residues, and a sum over vectors whose masks cancel modulo ``n``
        decrypts bit-identically to the unmasked sum.

    Returns
    -------
    EncryptedVector

    Raises
    ------
    EncodingOverflowError
        If an entry is not finite or exceeds ``bound * terms`` (the message names the index), if
        ``terms > max_terms``, or if one slot does not fit in a plaintext of this key.
    ValueError
        If ``masks`` returns a number of residues other than the number of ciphertexts.
    """
    check_public_key(public_key)
    if isinstance(terms, bool) or not isinstance(terms, (int, np.integer)) or terms < 1:
        raise ValueError(f"terms must be an int >= 1, got {terms!r}")
    terms = int(terms)
    array = check_values(values, check_bound(bound) * terms)
    layout = make_layout(
        public_key.n, len(array), bound=bound, max_terms=max_terms, frac_bits=frac_bits, pack=pack
    )
    if terms > layout.max_terms:
        raise EncodingOverflowError(f"terms={terms} exceeds max_terms={layout.max_terms}")
    pool = _pool_for(public_key, pool, layout.n_ciphertexts)
    if not layout.packed:
        return _encrypt_unpacked(public_key, array, layout, pool, terms, masks)
    plaintexts = _apply_masks(public_key, raw_pack(raw_encode(array, layout, terms), layout), masks)
    ciphertexts = raw_encrypt_plaintexts(public_key, plaintexts, pool=pool, workers=workers)
    return EncryptedVector(public_key, layout, ciphertexts, terms)


def _pool_for(public_key, pool: ObfuscatorPool | None, upcoming: int) -> ObfuscatorPool:
    """The given pool (checked against the key) or the process-wide pool of the key."""
    if pool is None:
        return default_pool(public_key, upcoming=upcoming)
    if pool.public_key != public_key:
        raise KeyMismatchError("the obfuscator pool was built for a different public key than the vector's")
    return pool


def _apply_masks(public_key, plaintexts: list, masks) -> list:
    """The raw plaintexts shifted by ``masks(len(plaintexts))`` modulo ``n`` (unchanged without masks)."""
    if masks is None:
        return plaintexts
    from .masking import mask_plaintexts

    if not callable(masks):
        raise TypeError(f"masks must be a function of the number of ciphertexts, got {type(masks).__name__}")
    return mask_plaintexts(plaintexts, list(masks(len(plaintexts))), public_key.n)


def _encrypt_unpacked(public_key, array, layout: Layout, pool: ObfuscatorPool, terms: int,
                      masks=None) -> EncryptedVector:
    """One ``phe.EncryptedNumber`` per value, phe's encoding at the fixed exponent of the layout's quantum."""
    from phe import EncodedNumber

    precision = 2.0 ** (layout.bound_exponent - DEFAULT_FRAC_BITS)
    n, nsquare = public_key.n, public_key.nsquare
    encodings = [EncodedNumber.encode(public_key, float(x), precision=precision) for x in array]
    plaintexts = _apply_masks(public_key, [e.encoding for e in encodings], masks)
    obfuscators = pool.take(len(encodings))
    cts = [(1 + n * m) * rho % nsquare for m, rho in zip(plaintexts, obfuscators, strict=True)]
    return EncryptedVector(public_key, layout, cts, terms, exponents=[e.exponent for e in encodings])


def decrypt_vector(private_key, encrypted: EncryptedVector, *, workers: int | None = None) -> np.ndarray:
    """Decrypt an (aggregated) encrypted vector to float64.

    ``workers``: threads for the CRT decryptions (None: this host's cores for vectors of at least
    ``PARALLEL_MIN_DECRYPTIONS`` ciphertexts, else the calling thread; 1: the calling thread).

    Raises
    ------
    KeyMismatchError
        If ``encrypted`` was encrypted under another key.
    EncodingOverflowError
        If a slot is out of its range (altered ciphertext or inconsistent layout / term count).
    """
    _check_decryptable(private_key, encrypted)
    if encrypted.layout.integer:
        raise TypeError(_INTEGER_VECTOR)
    return decode_vector(encrypted, raw_decrypt_parallel(private_key, encrypted._ciphertexts, workers))


_INTEGER_VECTOR = ("this vector holds packed integers: open it with decrypt_integers (or "
                   "ehr_fed.crypto.fields.decrypt_fields)")


def check_plaintexts(encrypted: EncryptedVector, plaintexts) -> list:
    """``plaintexts`` as a list after checking there is one integer in ``[0, n)`` per ciphertext of ``encrypted``.

    Raises
    ------
    TypeError
        If ``encrypted`` is not an EncryptedVector or a plaintext is not an integer.
    ValueError
        If the count differs from ``encrypted``'s ciphertexts or a plaintext is outside ``[0, n)``.
    """
    if not isinstance(encrypted, EncryptedVector):
        raise TypeError(f"encrypted must be an EncryptedVector, got {type(encrypted).__name__}")
    plaintexts = list(plaintexts)
    if len(plaintexts) != len(encrypted._ciphertexts):
        raise ValueError(
            f"{len(plaintexts)} plaintexts for a vector of {len(encrypted._ciphertexts)} ciphertexts: decode "
            "the raw decryption of exactly this vector's ciphertexts, in order"
        )
    n = encrypted.public_key.n
    for index, m in enumerate(plaintexts):
        if isinstance(m, bool) or not isinstance(m, (int, np.integer, _MPZ)):
            raise TypeError(f"plaintext {index} must be an integer, got {type(m).__name__}")
        if not 0 <= m < n:
            raise ValueError(f"plaintext {index} is outside [0, n): not a raw decryption under this vector's key")
    return plaintexts


def decode_vector(encrypted: EncryptedVector, plaintexts) -> np.ndarray:
    """Decode the raw plaintexts of a float vector (the second half of :func:`decrypt_vector`).

    Parameters
    ----------
    encrypted : EncryptedVector
        The (aggregated) vector that was decrypted: its layout and term count say how to decode.
    plaintexts : sequence of int, shape (n_ciphertexts,)
        Raw decryptions in ``[0, n)`` of ``encrypted.ciphertexts``, in order (e.g. from
        :func:`ehr_fed.crypto.combine_partials`).

    Returns
    -------
    ndarray of float64, shape (length,)

    Raises
    ------
    EncodingOverflowError
        If a slot is out of its range (altered ciphertext or inconsistent layout / term count).
    """
    plaintexts = check_plaintexts(encrypted, plaintexts)
    layout = encrypted.layout
    if layout.integer:
        raise TypeError("this vector holds packed integers: decode it with decode_integers (or "
                        "ehr_fed.crypto.fields.decode_fields)")
    if layout.packed:
        return raw_decode(raw_unpack(plaintexts, layout), layout, encrypted.n_terms)
    return _decode_unpacked(plaintexts, encrypted)


def _check_decryptable(private_key, encrypted) -> None:
    """A private key and an EncryptedVector under its public key, or the error that says which is wrong."""
    check_private_key(private_key)
    if not isinstance(encrypted, EncryptedVector):
        raise TypeError(f"encrypted must be an EncryptedVector, got {type(encrypted).__name__}")
    if private_key.public_key != encrypted.public_key:
        raise KeyMismatchError(
            f"the vector was encrypted under key {key_fingerprint(encrypted.public_key)[:16]}, not under this "
            f"private key's public key {key_fingerprint(private_key.public_key)[:16]}"
        )


def _decode_unpacked(plaintexts, encrypted: EncryptedVector) -> np.ndarray:
    from phe import EncodedNumber

    limit = encrypted.layout.bound * encrypted.n_terms
    out = np.empty(len(plaintexts), dtype=np.float64)
    for i, (m, e) in enumerate(zip(plaintexts, encrypted._exponents, strict=True)):
        try:
            value = EncodedNumber(encrypted.public_key, int(m), e).decode()
        except OverflowError:
            value = float("inf")
        if not abs(value) <= limit * (1 + 1e-12):
            raise EncodingOverflowError(
                f"entry {i} decodes to {value!r}, beyond n_terms x bound = {limit!r}: the ciphertext was altered"
            )
        out[i] = value
    return out


def encrypt_integers(public_key, values, *, max_terms: int, workers: int | None = None,
                     pool: ObfuscatorPool | None = None,
                     masks: Callable[[int], Sequence[int]] | None = None) -> EncryptedVector:
    """Encrypt signed integers, one per ciphertext (the caller packs many small fields into each).

    Each value must satisfy ``|x| < 2**(bits(n) - 2)``; it is encrypted as ``x mod n`` (plus its mask, see
    ``masks`` in :func:`encrypt_vector`, modulo ``n``). Sums of up to ``max_terms`` such vectors decrypt
    exactly (:func:`decrypt_integers`) as long as every sum stays below ``2**(bits(n) - 2)`` in absolute
    value, which :func:`ehr_fed.crypto.fields.pack_fields` guarantees for fields whose sums respect their
    widths.

    Raises
    ------
    EncodingOverflowError
        If a value is not an integer or is too large for the key (the message names the index).
    """
    check_public_key(public_key)
    values = [int(v) for v in values]
    layout = make_layout(public_key.n, len(values), bound=1.0, max_terms=max_terms, frac_bits=0, integer=True)
    limit = 1 << layout.slot_bits
    for index, v in enumerate(values):
        if not -limit < v < limit:
            raise EncodingOverflowError(
                f"integer {index} has {abs(v).bit_length()} bits; a {public_key.n.bit_length()}-bit key holds at most "
                f"{layout.slot_bits} bits per ciphertext"
            )
    pool = _pool_for(public_key, pool, len(values))
    n = public_key.n
    plaintexts = _apply_masks(public_key, [v % n for v in values], masks)
    ciphertexts = raw_encrypt_plaintexts(public_key, plaintexts, pool=pool, workers=workers)
    return EncryptedVector(public_key, layout, ciphertexts, 1)


def decrypt_integers(private_key, encrypted: EncryptedVector, *, workers: int | None = None) -> list[int]:
    """Decrypt a (summed) vector of :func:`encrypt_integers` to signed Python integers.

    Raises
    ------
    KeyMismatchError
        If ``encrypted`` was encrypted under another key.
    EncodingOverflowError
        If a plaintext lies outside ``(-2**slot_bits, 2**slot_bits)`` (an altered ciphertext, or sums beyond
        the packing's widths).
    """
    _check_decryptable(private_key, encrypted)
    if not encrypted.layout.integer:
        raise TypeError("this vector holds fixed-point floats: open it with decrypt_vector")
    return decode_integers(encrypted, raw_decrypt_parallel(private_key, encrypted._ciphertexts, workers))


def decode_integers(encrypted: EncryptedVector, plaintexts) -> list[int]:
    """Decode the raw plaintexts of an integer vector (the second half of :func:`decrypt_integers`).

    ``plaintexts``: raw decryptions in ``[0, n)`` of ``encrypted.ciphertexts``, in order.

    Raises
    ------
    EncodingOverflowError
        If a plaintext lies outside ``(-2**slot_bits, 2**slot_bits)`` (an altered ciphertext, or sums beyond
        the packing's widths).
    """
    plaintexts = check_plaintexts(encrypted, plaintexts)
    if not encrypted.layout.integer:
        raise TypeError("this vector holds fixed-point floats: decode it with decode_vector")
    n = encrypted.public_key.n
    half, limit = n // 2, 1 << encrypted.layout.slot_bits
    out = []
    for index, m in enumerate(plaintexts):
        v = int(m)
        v = v - n if v > half else v
        if not -limit < v < limit:
            raise EncodingOverflowError(
                f"ciphertext {index} decrypts outside the packed range: the ciphertext was altered or its sum "
                "overflowed"
            )
        out.append(v)
    return out
