"""Packing a bin's quantised gradient, Hessian and count sums into few exact 52-bit words.

The federation encrypts float vectors with a fixed-point encoding of 53 fractional bits below the bound
(``ehr_fed.crypto``), i.e. about 53 bits of information per slot whatever the value. A histogram entry
needs far fewer: with ``N`` pooled rows and gradients on the grid ``2**-p``, the pooled sums are bounded by
``|G| <= N 2**p``, ``0 <= H <= N 2**(p-2)``, ``0 <= C <= N`` (integers). Several such fields are therefore
concatenated into one integer word ``K = sum_i f_i 2**o_i`` and sent as the float ``K * 2**-53`` with
bound 1, which the encoding represents exactly; sums of words are sums of fields as long as no field sum
leaves its width. Widths are sized from the *pooled* bounds (signed, balanced: a field of ``w`` bits holds
``|sum| < 2**(w-1)``), so any partial or total sum of sites fits, and a word's total width is at most 52
bits, so ``|sum K| < 2**52`` and every float in the pipeline (plaintext sums, decoded sums) is exact.

Invariant: ``unpack(sum_t pack(x_t)) == sum_t x_t`` for integer fields whose pooled sums respect the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WORD_BITS", "WordLayout", "field_widths", "word_layout", "choose_precision", "pack", "unpack"]

WORD_BITS = 52
_SCALE = 2.0**-53


def field_widths(n_total: int, precision: int, channels: int) -> list[int]:
    """Bits of the (G, H[, C]) fields for ``n_total`` pooled rows and gradients on ``2**-precision``."""
    n = max(int(n_total), 1)
    widths = [
        (n << precision).bit_length() + 1,  # |G| <= n 2**p
        ((n << precision) >> 2).bit_length() + 1,  # H <= n 2**(p-2)
    ]
    if channels == 3:
        widths.append(n.bit_length() + 1)  # C <= n
    return widths


@dataclass(frozen=True)
class WordLayout:
    """Which field sits in which word, at which bit offset."""

    widths: tuple[int, ...]
    word: tuple[int, ...]  # word index of each field
    offset: tuple[int, ...]  # bit offset of each field in its word
    n_words: int


def word_layout(widths: list[int]) -> WordLayout:
    """First-fit-decreasing assignment of fields to words of at most ``WORD_BITS`` bits."""
    if max(widths) > WORD_BITS:
        raise ValueError(f"a histogram field needs {max(widths)} bits, more than a word's {WORD_BITS}; "
                         "lower the precision")
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    used: list[int] = []
    word = [0] * len(widths)
    offset = [0] * len(widths)
    for i in order:
        for k, u in enumerate(used):
            if u + widths[i] <= WORD_BITS:
                word[i], offset[i] = k, u
                used[k] += widths[i]
                break
        else:
            word[i], offset[i] = len(used), 0
            used.append(widths[i])
    return WordLayout(tuple(widths), tuple(word), tuple(offset), len(used))


def choose_precision(n_total: int, channels: int, lo: int = 8, hi: int = 16) -> int:
    """The largest precision in ``[lo, hi]`` that needs the fewest words per bin."""
    best = min(word_layout(field_widths(n_total, p, channels)).n_words for p in range(lo, hi + 1))
    return max(p for p in range(lo, hi + 1)
               if word_layout(field_widths(n_total, p, channels)).n_words == best)


def pack(fields: np.ndarray, layout: WordLayout) -> np.ndarray:
    """Integer fields (..., n_fields) -> float words (..., n_words), each ``K * 2**-53`` with ``|K| < 2**52``."""
    fields = np.asarray(fields, dtype=np.int64)
    words = np.zeros(fields.shape[:-1] + (layout.n_words,), dtype=np.int64)
    for i, (w, o) in enumerate(zip(layout.word, layout.offset, strict=True)):
        lim = 1 << (layout.widths[i] - 1)
        if fields[..., i].size and np.abs(fields[..., i]).max() >= lim:
            raise OverflowError(f"histogram field {i} exceeds its {layout.widths[i]}-bit width")
        words[..., w] += fields[..., i] << o
    return words.astype(np.float64) * _SCALE


def unpack(words: np.ndarray, layout: WordLayout) -> np.ndarray:
    """Float words (..., n_words) (summed) -> int64 fields (..., n_fields), inverting :func:`pack`."""
    K = np.rint(np.asarray(words, dtype=np.float64) / _SCALE).astype(np.int64)
    out = np.zeros(K.shape[:-1] + (len(layout.widths),), dtype=np.int64)
    for k in range(layout.n_words):
        rest = K[..., k].copy()
        members = sorted((o, i) for i, (w, o) in enumerate(zip(layout.word, layout.offset, strict=True)) if w == k)
        for _o, i in members:
            width = layout.widths[i]
            half = 1 << (width - 1)
            low = ((rest + half) & ((1 << width) - 1)) - half  # balanced residue
            out[..., i] = low
            rest = (rest - low) >> width
        if np.any(rest != 0):
            raise OverflowError("a packed histogram word does not decode: a field sum left its width")
    return out
