"""Errors raised by :mod:`ehr_fed.crypto`.

Every error is a :class:`CryptoError`; each concrete error is also a :class:`ValueError` so that callers
validating inputs generically still catch it.
"""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "KeyMismatchError",
    "LayoutMismatchError",
    "EncodingOverflowError",
    "PayloadError",
    "InsecureKeyError",
]


class CryptoError(Exception):
    """Base class of every error raised by the Paillier engine."""


class KeyMismatchError(CryptoError, ValueError):
    """Two objects that must share one Paillier key do not (different modulus ``n``)."""


class LayoutMismatchError(CryptoError, ValueError):
    """Two encrypted vectors were encoded with different layouts and cannot be added."""


class EncodingOverflowError(CryptoError, ValueError):
    """A value or a sum does not fit the declared layout.

    Raised when a value exceeds ``bound`` or is not finite, when an addition would exceed ``max_terms``,
    and when a decrypted slot lies outside its range (a sign of an altered ciphertext or a wrong layout).
    """


class PayloadError(CryptoError, ValueError):
    """Serialized bytes are not a valid payload (wrong magic or version, truncated, altered, out of range)."""


class InsecureKeyError(CryptoError, ValueError):
    """A key below the 2048-bit minimum was loaded outside the explicit test mode."""
