"""Formats and check digits of standard codes: is a "LOINC" or "SNOMED CT" code really one?

A site mapping that labels local identifiers (OpenMRS UUIDs, in-house lab numbers) with the LOINC or SNOMED
CT system URL looks covered but matches no study lab or concept set. These checks catch that before
harmonization:

LOINC
    ``NNNNN-C``: 1 to 5 digits, a hyphen and a mod-10 check digit ``C`` (LOINC's algorithm, the same
    as Luhn's: double every other digit from the right, add the digits, ``C = (10 - sum % 10) % 10``).
SNOMED CT identifiers (SCTID)
    6 to 18 digits, no leading zero; the last digit is a Verhoeff check digit and the two before it
    the partition identifier (``00`` / ``10`` for a concept, ``01`` / ``11`` a description, ``02`` /
    ``12`` a relationship: only concepts are codes).
ICD-10-CM / ICD-9-CM
    Format only (ICD has no check digit): a letter and two characters for ICD-10-CM, three digits (or
    ``V``/``E`` codes) for ICD-9-CM, each with an optional dotted or undotted extension.
"""

from __future__ import annotations

import re

_LOINC = re.compile(r"^(\d{1,5})-(\d)$")
_SCTID = re.compile(r"^[1-9]\d{5,17}$")
_ICD10 = re.compile(r"^[A-Z]\d[0-9A-Z](\.?[0-9A-Z]{1,4})?$")
_ICD9 = re.compile(r"^(\d{3}|V\d{2}|E\d{3})(\.?\d{1,2})?$")

# Verhoeff: multiplication table of the dihedral group D5 and the position permutation
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def loinc_check_digit(number: str) -> int:
    """The mod-10 check digit of a LOINC code's number part (``"2160"`` -> 0, for ``2160-0``)."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 0:  # the rightmost digit and every other one are doubled
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10


def verhoeff_valid(digits: str) -> bool:
    """Whether ``digits`` ends in its Verhoeff check digit."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def loinc_problem(code: str) -> str | None:
    """Why ``code`` is not a LOINC code, or None."""
    m = _LOINC.match(str(code).strip())
    if not m:
        return f"{code!r} is not a LOINC code (expected 1-5 digits, a hyphen and a check digit, e.g. 2160-0)"
    expected = loinc_check_digit(m.group(1))
    if int(m.group(2)) != expected:
        return f"{code!r} fails the LOINC check digit (expected {m.group(1)}-{expected}): a typo or not LOINC"
    return None


def snomed_problem(code: str) -> str | None:
    """Why ``code`` is not a SNOMED CT concept id, or None."""
    code = str(code).strip()
    if not _SCTID.match(code):
        return f"{code!r} is not a SNOMED CT concept id (expected 6-18 digits without a leading zero)"
    if not verhoeff_valid(code):
        return f"{code!r} fails the SNOMED CT (Verhoeff) check digit: a typo or not SNOMED CT"
    partition = code[-3:-1]
    if partition not in ("00", "10"):
        kind = {"01": "a description", "11": "a description", "02": "a relationship", "12": "a relationship"}
        return (f"{code!r} is {kind.get(partition, 'not a concept')} id (partition {partition}), not a "
                "SNOMED CT concept id")
    return None


def icd_problem(vocabulary: str, code: str) -> str | None:
    """Why ``code`` is not formatted as an ``icd10cm`` / ``icd10`` / ``icd9cm`` code, or None."""
    c = "".join(str(code).split()).upper()
    pattern = _ICD9 if vocabulary == "icd9cm" else _ICD10
    if not pattern.match(c):
        return f"{code!r} is not formatted as an {vocabulary} code"
    return None


def code_problem(vocabulary: str | None, code: str) -> str | None:
    """Why ``code`` cannot be a code of ``vocabulary`` (``loinc``, ``snomed``, ICD), or None (valid or unchecked)."""
    if vocabulary == "loinc":
        return loinc_problem(code)
    if vocabulary == "snomed":
        return snomed_problem(code)
    if vocabulary in ("icd10cm", "icd10", "icd9cm"):
        return icd_problem(vocabulary, code)
    return None
