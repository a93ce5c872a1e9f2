"""Fixed-point encoding of float vectors into packed Paillier plaintexts.

Encoding
--------
Let ``e = ceil(log2(bound))`` (so ``bound <= 2**e``) and ``f = frac_bits``. An entry ``x`` with
``|x| <= bound`` becomes the integer ``q = round(x * 2**(f - e))``, so ``|q| <= 2**f``, stored in a slot as
``s = q + 2**f`` (the sign offset), so ``0 <= s <= 2**(f + 1)``. ``slots_per_ciphertext`` slots of
``slot_bits`` bits each are concatenated (slot 0 least significant) into one plaintext ``m < 2**(bits(n) - 1)
< n``.

Invariant
---------
Adding Paillier ciphertexts adds plaintexts; since no slot ever carries into the next one, the plaintext of a
sum of ``T`` vectors holds in slot ``j`` exactly ``S_j = sum_t s_tj = sum_t q_tj + T * 2**f``, hence::

    Decode(Encode(a) + Encode(b)) = Decode(Encode(a)) + Decode(Encode(b))   (exactly, as integers)

with ``Decode(S, T) = (S - T * 2**f) * 2**(e - f)``. The slot width is
``slot_bits = f + 2 + bit_length(max_terms)``: ``T * 2**(f + 1) < 2**(f + 1 + bit_length(max_terms))`` for
every ``T <= max_terms``, plus one guard bit.

Overflow detection
------------------
Overflow is prevented, not wrapped: encoding refuses ``|x| > bound`` and non-finite entries; adding refuses
sums of more than ``max_terms`` terms (``EncryptedVector.n_terms`` is tracked with the ciphertexts). At
decoding every slot is checked to lie in ``[0, T * 2**(f + 1)]``, padding slots to decode to 0 and the bits
above the last slot to be 0; a slot outside its range (an altered ciphertext, a wrong layout or a wrong term
count) raises :class:`EncodingOverflowError`.

Precision
---------
Rounding moves each entry by at most half a quantum, ``2**(e - f - 1) < bound * 2**-f``. A decoded sum of
``T`` entries is therefore within ``T * bound * 2**-f`` of the exact sum of the inputs. With the default
``f = 53`` that is ``T * 1.11e-16 * bound``: below ``1e-10 * bound`` for up to 900,000 terms. Entries that
are multiples of the quantum ``2**(e - f)`` (integers whenever ``2**e <= 2**f``; every float in
``[bound / 2, bound]``) are encoded exactly and their sums are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gmpy2
import numpy as np

from .errors import EncodingOverflowError

__all__ = [
    "DEFAULT_FRAC_BITS",
    "MAX_FRAC_BITS",
    "Layout",
    "make_layout",
    "check_values",
    "raw_encode",
    "raw_pack",
    "raw_unpack",
    "raw_decode",
]

#: default number of fractional bits below the bound's binary exponent (float64 resolution at the bound)
DEFAULT_FRAC_BITS = 53
#: largest ``frac_bits``: keeps ``q + 2**f`` inside int64 for vectorized encoding
MAX_FRAC_BITS = 61


@dataclass(frozen=True)
class Layout:
    """How a vector is laid out in Paillier plaintexts.

    Attributes
    ----------
    bound : float
        Largest absolute value of one entry of one term.
    max_terms : int
        Largest number of terms (fresh vectors, or rows when ``terms=`` is used) a sum may hold.
    frac_bits : int
        Fractional bits below ``2**ceil(log2(bound))``; the quantum is ``2**(ceil(log2(bound)) - frac_bits)``.
        0 for an unpacked vector (phe's own encoding).
    slots_per_ciphertext : int
        Entries per ciphertext (1 when unpacked).
    slot_bits : int
        Width of one slot in bits (0 when unpacked).
    length : int
        Number of entries of the vector.
    packed : bool
        False for a vector of ordinary ``phe.EncryptedNumber`` (one value per ciphertext).
    integer : bool
        True for a vector of signed integers, one per ciphertext (``|x| < 2**slot_bits``, ``slot_bits =
        bits(n) - 2``), already packed by the caller (see :mod:`ehr_fed.crypto.fields`); no fixed-point
        encoding, and the caller guarantees that sums stay below ``2**slot_bits`` in absolute value.
    """

    bound: float
    max_terms: int
    frac_bits: int
    slots_per_ciphertext: int
    slot_bits: int
    length: int
    packed: bool = True
    integer: bool = False

    @property
    def bound_exponent(self) -> int:
        """``e = ceil(log2(bound))``: the smallest ``e`` with ``bound <= 2**e``."""
        return bound_exponent(self.bound)

    @property
    def n_ciphertexts(self) -> int:
        """Number of ciphertexts that hold the vector."""
        return -(-self.length // self.slots_per_ciphertext) if self.length else 0

    @property
    def quantum(self) -> float:
        """Spacing of the fixed-point grid, ``2**(e - frac_bits)``."""
        return math.ldexp(1.0, self.bound_exponent - self.frac_bits)

    def error_bound(self, n_terms: int) -> float:
        """Largest absolute error of a decoded sum of ``n_terms`` terms (packed layouts)."""
        return n_terms * self.quantum / 2


def bound_exponent(bound: float) -> int:
    """Return ``ceil(log2(bound))`` exactly, for a positive finite float."""
    mantissa, exponent = math.frexp(bound)  # bound = mantissa * 2**exponent, 0.5 <= mantissa < 1
    return exponent - 1 if mantissa == 0.5 else exponent


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_bound(bound: object) -> float:
    """Return ``bound`` as a positive finite float, else raise ``ValueError``."""
    try:
        value = float(bound)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"bound must be a positive number, got {type(bound).__name__}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    return value


def make_layout(
    n: int,
    length: int,
    *,
    bound: float,
    max_terms: int,
    frac_bits: int = DEFAULT_FRAC_BITS,
    pack: bool = True,
    integer: bool = False,
) -> Layout:
    """Build the layout of a vector of ``length`` entries for a key with modulus ``n``.

    Raises
    ------
    EncodingOverflowError
        If one slot does not fit in a plaintext of this key.
    """
    bound = check_bound(bound)
    max_terms = _check_int(max_terms, "max_terms", 1)
    length = _check_int(length, "length", 0)
    frac_bits = _check_int(frac_bits, "frac_bits", 0)
    if frac_bits > MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be <= {MAX_FRAC_BITS}, got {frac_bits}")
    if integer:
        if bound != 1.0 or frac_bits != 0 or not pack:
            raise ValueError("an integer layout has bound 1.0, frac_bits 0 and is packed")
        return Layout(1.0, max_terms, 0, 1, n.bit_length() - 2, length, packed=True, integer=True)
    if not pack:
        return Layout(bound, max_terms, 0, 1, 0, length, packed=False)
    slot_bits = frac_bits + 2 + max_terms.bit_length()
    slots = (n.bit_length() - 1) // slot_bits
    if slots < 1:
        raise EncodingOverflowError(
            f"a slot of {slot_bits} bits (frac_bits={frac_bits}, max_terms={max_terms}) does not fit in a "
            f"plaintext of this {n.bit_length()}-bit key; lower frac_bits or max_terms"
        )
    return Layout(bound, max_terms, frac_bits, slots, slot_bits, length, packed=True)


def check_values(values: object, bound: float) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array after checking it is finite and within ``bound``.

    Raises
    ------
    EncodingOverflowError
        Naming the index and value of the first non-finite entry or the first entry with ``|x| > bound``.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values must be a 1-D array of numbers: {exc}") from None
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got an array of shape {array.shape}; pass values.ravel()")
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise EncodingOverflowError(
            f"values[{index}] is {array[index]}: only finite values can be encrypted; "
            f"{int((~finite).sum())} non-finite entries in total"
        )
    over = np.abs(array) > bound
    if over.any():
        index = int(np.flatnonzero(over)[0])
        raise EncodingOverflowError(
            f"values[{index}] = {float(array[index])!r} exceeds bound={bound!r} ({int(over.sum())} entries over the "
            "bound); encrypt with a larger bound"
        )
    return array


def raw_encode(values: np.ndarray, layout: Layout, terms: int = 1) -> list[int]:
    """Fixed-point encode checked values into offset slot integers ``q + terms * 2**f`` (unchecked).

    ``values`` must already satisfy ``|x| <= layout.bound * terms`` (see :func:`check_values`); the result is
    padded with encodings of 0 up to a whole number of ciphertexts.
    """
    f = layout.frac_bits
    padded = np.zeros(layout.n_ciphertexts * layout.slots_per_ciphertext, dtype=np.float64)
    padded[: len(values)] = values
    q = np.rint(np.ldexp(padded, f - layout.bound_exponent))
    offset = terms << f
    if offset < 1 << 62:  # |q| <= offset, so q + offset < 2**63: stay vectorized
        return (q.astype(np.int64) + np.int64(offset)).tolist()
    return [int(v) + offset for v in q.tolist()]  # q holds exact integers; Python ints do not overflow


def raw_pack(slots: list[int], layout: Layout) -> list[int]:
    """Concatenate slot integers into one plaintext per ciphertext (slot 0 least significant). Unchecked."""
    per, width = layout.slots_per_ciphertext, layout.slot_bits
    return [gmpy2.pack(slots[i : i + per], width) for i in range(0, len(slots), per)]


def raw_unpack(plaintexts: list[int], layout: Layout) -> list[int]:
    """Split plaintexts into slot integers; checks that no bits lie above the last slot."""
    per, width = layout.slots_per_ciphertext, layout.slot_bits
    top = per * width
    out: list[int] = []
    for index, m in enumerate(plaintexts):
        m = gmpy2.mpz(m)
        if m >> top:
            raise EncodingOverflowError(
                f"ciphertext {index} decrypts to a plaintext with bits above its {per} slots: the ciphertext "
                "was altered or the layout is wrong"
            )
        parts = gmpy2.unpack(m, width)
        parts.extend([gmpy2.mpz(0)] * (per - len(parts)))
        out.extend(parts)
    return out


def raw_decode(slots: list[int], layout: Layout, n_terms: int) -> np.ndarray:
    """Decode summed slot integers ``S_j`` into floats ``(S_j - T 2**f) 2**(e - f)``, checking ranges.

    Raises
    ------
    EncodingOverflowError
        If a slot lies outside ``[0, T * 2**(f + 1)]`` or a padding slot does not decode to 0.
    """
    f, T = layout.frac_bits, n_terms
    offset, top = T << f, T << (f + 1)
    centered = []
    for index, s in enumerate(slots):
        if not 0 <= s <= top:
            raise EncodingOverflowError(
                f"slot {index} holds {int(s)}, outside [0, {top}] for {T} terms: the ciphertext was altered, "
                "or the vector was decrypted with the wrong layout or term count"
            )
        centered.append(int(s) - offset)
    if any(centered[layout.length :]):
        raise EncodingOverflowError("a padding slot does not decode to 0: the ciphertext was altered")
    values = np.array([float(c) for c in centered[: layout.length]], dtype=np.float64)
    return np.ldexp(values, layout.bound_exponent - f)
