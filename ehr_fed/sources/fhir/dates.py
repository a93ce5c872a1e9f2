"""FHIR date, dateTime and instant values as naive UTC datetimes.

A value with a UTC offset is converted to UTC; a value without one is taken as it
is; a date-only value (``2011-10-14``) becomes midnight, a partial date (``2011``,
``2011-10``) the first day of its year or month.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
US_PER_DAY = 86_400_000_000


class BadDate(ValueError):
    """A value that is not a FHIR date, dateTime or instant."""


@lru_cache(maxsize=65536)
def parse_fhir_datetime(value: str) -> datetime:
    """Parse a FHIR date/dateTime/instant into a naive UTC :class:`datetime`.

    Raises
    ------
    BadDate
        When ``value`` is not a string in one of the FHIR formats.
    """
    if not isinstance(value, str):
        raise BadDate(f"expected a FHIR date string, got {type(value).__name__} {value!r}")
    n = len(value)
    try:
        if n == 4:
            return datetime(int(value), 1, 1)
        if n == 7 and value[4] == "-":
            return datetime(int(value[:4]), int(value[5:7]), 1)
        if n < 10 or value[4] != "-" or value[7] != "-":
            raise ValueError
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadDate(
            f"{value!r} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm))"
        ) from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


@lru_cache(maxsize=65536)
def fhir_micros(value: str) -> int:
    """:func:`parse_fhir_datetime` as microseconds since 1970-01-01 (Arrow ``timestamp[us]``)."""
    return (parse_fhir_datetime(value) - EPOCH) // _US
