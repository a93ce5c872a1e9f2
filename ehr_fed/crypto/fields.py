"""Exact integer fields of varying widths, packed bit-tight into Paillier plaintexts.

Histograms of integer sums (counts, quantised gradients) need few bits per entry, and the bits they need
vary from entry to entry (a gradient sum needs more than a row count; a small tree node less than the
root). A fixed-point slot per entry wastes most of a plaintext; here every field ``i`` gets exactly
``widths[i]`` bits.

Encoding
--------
Field ``i`` holds a signed integer with ``|x_i| < 2**(w_i - 1)`` (``w_i = widths[i]``, at most
``MAX_FIELD_BITS``). Fields are laid out in order, each one whole in one plaintext, filling a plaintext
up to ``capacity = bits(n) - 2`` bits. A plaintext holds the signed integer ``K = sum_i x_i 2**o_i``
(``o_i`` the field's bit offset), encrypted as ``K mod n`` (:func:`ehr_fed.crypto.encrypt_integers`).

Invariant: adding ciphertexts adds the ``K``; the sum ``sum_t K_t = sum_i X_i 2**o_i`` of field sums
``X_i = sum_t x_ti`` decodes exactly as long as every ``|X_i| < 2**(w_i - 1)``: adding the bias
``B = sum_i 2**(w_i - 1) 2**o_i`` gives ``sum_i (X_i + 2**(w_i - 1)) 2**o_i`` whose terms lie in
``[1, 2**w_i)``, i.e. plain bit fields with no carries. Widths are therefore sized from the bound of the
*pooled* sum, which every partial sum of sites also respects.

Widths are described by segments ``[[repeat, [w_1, ..., w_k]], ...]``: the pattern ``w_1..w_k`` repeated
``repeat`` times, segments concatenated (e.g. ``[[1281, [27, 25, 16]]]`` for the gradient, Hessian and
count fields of 1,281 histogram bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import EncodingOverflowError
from .keys import check_private_key, check_public_key
from .vector import EncryptedVector, decode_integers, decrypt_integers, encrypt_integers

__all__ = [
    "MAX_FIELD_BITS",
    "FieldPlan",
    "expand_segments",
    "field_plan",
    "check_fields",
    "pack_fields",
    "unpack_fields",
    "encrypt_fields",
    "decrypt_fields",
    "decode_fields",
]

#: widest field: sums stay exact in int64 and in float64 (the plaintext federation adds floats)
MAX_FIELD_BITS = 54


def expand_segments(segments) -> np.ndarray:
    """Field widths (int64 array) from ``[[repeat, [w, ...]], ...]``; raises ValueError on a bad spec."""
    try:
        parts = [np.tile(np.asarray(pattern, dtype=np.int64), int(repeat)) for repeat, pattern in segments]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field widths must be [[repeat, [width, ...]], ...], got {segments!r}: {exc}") from None
    if any(int(repeat) < 0 for repeat, _ in segments):
        raise ValueError(f"a segment repeats a negative number of times: {segments!r}")
    widths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if widths.size and (widths.min() < 2 or widths.max() > MAX_FIELD_BITS):
        raise ValueError(f"field widths must lie in [2, {MAX_FIELD_BITS}] bits, got {int(widths.min())}.."
                         f"{int(widths.max())}")
    return widths


@dataclass(frozen=True)
class FieldPlan:
    """Where every field sits: its plaintext (chunk) and the chunks' bit ranges."""

    widths: np.ndarray  # (n_fields,)
    capacity: int
    field_starts: tuple[int, ...]  # first field of each chunk, plus n_fields
    bit_starts: tuple[int, ...]  # first bit (in the concatenation of all fields) of each chunk, plus total
    biases: tuple[int, ...]  # B of each chunk

    @property
    def n_chunks(self) -> int:
        return len(self.field_starts) - 1


def field_plan(widths: np.ndarray, capacity: int) -> FieldPlan:
    """Assign fields, in order, to plaintexts of at most ``capacity`` bits."""
    widths = np.asarray(widths, dtype=np.int64)
    return _plan(widths.tobytes(), int(capacity))


@lru_cache(maxsize=64)
def _plan(widths_bytes: bytes, capacity: int) -> FieldPlan:
    widths = np.frombuffer(widths_bytes, dtype=np.int64)
    if widths.size and widths.max() > capacity:
        raise EncodingOverflowError(f"a field of {int(widths.max())} bits does not fit a {capacity}-bit plaintext")
    ends = np.cumsum(widths)
    field_starts, bit_starts = [0], [0]
    while field_starts[-1] < widths.size:
        # the last field whose end stays within capacity bits of the chunk's first bit
        last = int(np.searchsorted(ends, bit_starts[-1] + capacity, side="right"))
        field_starts.append(last)
        bit_starts.append(int(ends[last - 1]))
    biases = _chunk_ints(_field_bits(np.left_shift(np.uint64(1), (widths - 1).astype(np.uint64)), widths), bit_starts)
    return FieldPlan(widths.copy(), capacity, tuple(field_starts), tuple(bit_starts), tuple(biases))


def _chunk_ints(flat: np.ndarray, bit_starts: list[int] | tuple[int, ...]) -> list[int]:
    """The integers whose little-endian bits are ``flat[bit_starts[c]:bit_starts[c + 1]]``."""
    return [int.from_bytes(np.packbits(flat[a:b], bitorder="little").tobytes(), "little")
            for a, b in zip(bit_starts[:-1], bit_starts[1:], strict=True)]


_SHIFTS = np.arange(64, dtype=np.uint64)


def _field_mask(widths: np.ndarray) -> np.ndarray:
    """``(n_fields, 64)``: which of the 64 bit positions of each field belong to it."""
    return _SHIFTS[None, :] < widths[:, None].astype(np.uint64)


def _field_bits(u: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Bits of each unsigned field, least significant first, concatenated."""
    bits = ((u[:, None] >> _SHIFTS[None, :]) & np.uint64(1)).astype(np.uint8)
    return bits[_field_mask(widths)]


def check_fields(values, widths: np.ndarray) -> np.ndarray:
    """``values`` as int64 after checking there is one integer per field, each within its width.

    Raises
    ------
    EncodingOverflowError
        Naming the first value that is not an integer or does not fit its width.
    """
    x = np.asarray(values).ravel()
    if x.size != widths.size:
        raise EncodingOverflowError(f"{x.size} values, but the layout declares {widths.size} integer fields")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x) | (x != np.rint(x))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise EncodingOverflowError(f"field {i} is {float(x[i])!r}, not an integer")
    x = x.astype(np.int64)
    half = np.left_shift(np.int64(1), widths - 1)
    over = np.abs(x) >= half
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise EncodingOverflowError(
            f"field {i} = {int(x[i])} does not fit its {int(widths[i])}-bit width (|x| < {int(half[i])}); "
            f"{int(over.sum())} fields over their widths"
        )
    return x


def pack_fields(values, plan: FieldPlan) -> list[int]:
    """Signed integer fields -> one signed integer ``K`` per plaintext (see the module docstring).

    Raises
    ------
    EncodingOverflowError
        If a value is not an integer or does not fit its width (see :func:`check_fields`).
    """
    x = check_fields(values, plan.widths)
    half = np.left_shift(np.int64(1), plan.widths - 1)
    flat = _field_bits((x + half).astype(np.uint64), plan.widths)
    return [u - b for u, b in zip(_chunk_ints(flat, plan.bit_starts), plan.biases, strict=True)]


def unpack_fields(packed: list[int], plan: FieldPlan) -> np.ndarray:
    """Summed plaintexts ``K`` -> int64 field sums, inverting :func:`pack_fields`.

    Raises
    ------
    EncodingOverflowError
        If a plaintext is outside the range of its fields (an altered ciphertext, or a sum beyond the widths).
    """
    if len(packed) != plan.n_chunks:
        raise EncodingOverflowError(f"{len(packed)} packed integers for a plan of {plan.n_chunks} plaintexts")
    parts = []
    for c, k in enumerate(packed):
        n_bits = plan.bit_starts[c + 1] - plan.bit_starts[c]
        u = int(k) + plan.biases[c]
        if not 0 <= u < (1 << n_bits):
            raise EncodingOverflowError(
                f"plaintext {c} does not decode into its {plan.field_starts[c + 1] - plan.field_starts[c]} "
                "fields: the ciphertext was altered or a field sum left its width"
            )
        raw = np.frombuffer(u.to_bytes((n_bits + 7) // 8, "little"), dtype=np.uint8)
        parts.append(np.unpackbits(raw, bitorder="little")[:n_bits])
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    mask = _field_mask(plan.widths)
    bits = np.zeros(mask.shape, dtype=np.uint64)
    bits[mask] = flat
    u = (bits << _SHIFTS[None, :]).sum(axis=1, dtype=np.uint64)
    return u.astype(np.int64) - np.left_shift(np.int64(1), plan.widths - 1)


def encrypt_fields(public_key, values, widths, *, max_terms: int, workers: int | None = None,
                   masks=None) -> EncryptedVector:
    """Encrypt integer fields of the given widths (sums of up to ``max_terms`` vectors decrypt exactly).

    ``masks``: as in :func:`ehr_fed.crypto.encrypt_vector`, one residue per packed plaintext, added before
    encryption.
    """
    check_public_key(public_key)
    plan = field_plan(np.asarray(widths, dtype=np.int64), public_key.n.bit_length() - 2)
    return encrypt_integers(public_key, pack_fields(values, plan), max_terms=max_terms, workers=workers,
                            masks=masks)


def decrypt_fields(private_key, encrypted: EncryptedVector, widths, *, workers: int | None = None) -> np.ndarray:
    """Decrypt a (summed) vector of :func:`encrypt_fields` to its int64 field sums."""
    check_private_key(private_key)
    plan = field_plan(np.asarray(widths, dtype=np.int64), private_key.public_key.n.bit_length() - 2)
    return unpack_fields(decrypt_integers(private_key, encrypted, workers=workers), plan)


def decode_fields(encrypted: EncryptedVector, plaintexts, widths) -> np.ndarray:
    """Decode raw plaintexts of a (summed) vector of :func:`encrypt_fields` to its int64 field sums.

    The second half of :func:`decrypt_fields`: ``plaintexts`` are the raw decryptions in ``[0, n)`` of
    ``encrypted.ciphertexts``, in order (e.g. from :func:`ehr_fed.crypto.combine_partials`).

    Raises
    ------
    EncodingOverflowError
        If a plaintext is outside the range of its fields (an altered ciphertext, or a sum beyond the widths).
    """
    if not isinstance(encrypted, EncryptedVector):
        raise TypeError(f"encrypted must be an EncryptedVector, got {type(encrypted).__name__}")
    plan = field_plan(np.asarray(widths, dtype=np.int64), encrypted.public_key.n.bit_length() - 2)
    return unpack_fields(decode_integers(encrypted, plaintexts), plan)
