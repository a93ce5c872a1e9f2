"""LOINC and SNOMED CT check digits and formats, ICD formats."""

from __future__ import annotations

import re

import pytest

from ehr_fed.mapping.codecheck import (
    code_problem,
    loinc_check_digit,
    loinc_problem,
    snomed_problem,
    verhoeff_valid,
)

#: codes of the shipped study specs and well-known concepts (all valid)
LOINC = ["2160-0", "38483-4", "2345-7", "2339-0", "4548-4", "17856-6", "718-7", "2951-2", "2947-0",
         "33914-3", "48642-3", "48643-1", "62238-1", "77147-7", "98979-8"]
SNOMED = ["44054006", "73211009", "84114007", "13645005", "709044004", "38341003", "1551000119108",
          "90781000119102", "422034002"]


@pytest.mark.parametrize("code", LOINC)
def test_real_loinc_codes_pass(code):
    assert loinc_problem(code) is None
    assert loinc_check_digit(code.split("-")[0]) == int(code[-1])


@pytest.mark.parametrize("code, match", [
    ("2160-1", r"fails the LOINC check digit \(expected 2160-0\)"),
    ("5089AAAA-AAAA-4ABC-9DEF-1234567890AB", "is not a LOINC code"),
    ("216000-0", "is not a LOINC code"),
    ("2160", "is not a LOINC code"),
])
def test_fake_or_mistyped_loinc_codes_fail(code, match):
    assert re.search(match, loinc_problem(code))


@pytest.mark.parametrize("code", SNOMED)
def test_real_snomed_concepts_pass(code):
    assert snomed_problem(code) is None and verhoeff_valid(code)


@pytest.mark.parametrize("code, fragment", [
    ("44054007", "Verhoeff"),                     # last digit changed
    ("45054006", "Verhoeff"),                     # a middle digit changed
    ("123", "is not a SNOMED CT concept id"),
    ("0123456", "is not a SNOMED CT concept id"),
    ("c2f1e0b4-1111", "is not a SNOMED CT concept id"),
])
def test_fake_or_mistyped_snomed_codes_fail(code, fragment):
    assert fragment in snomed_problem(code)


def test_every_single_digit_change_of_a_snomed_id_is_caught():
    code = "84114007"
    for i in range(len(code)):
        for d in "0123456789":
            if d != code[i]:
                assert snomed_problem(code[:i] + d + code[i + 1:]) is not None


def test_a_description_id_is_not_a_concept():
    # a valid SCTID with the description partition (01): Verhoeff digit computed for the test
    body = "1234501"
    digit = next(d for d in "0123456789" if verhoeff_valid(body + d))
    assert "is a description id" in snomed_problem(body + digit)


def test_code_problem_dispatches_by_vocabulary():
    assert code_problem("loinc", "2160-1") and code_problem("snomed", "123")
    assert code_problem("icd10cm", "E11.9") is None and code_problem("icd10cm", "11.9")
    assert code_problem("icd10cm", "hello")
    assert code_problem("icd9cm", "250.00") is None and code_problem("icd9cm", "25")
    assert code_problem("rxnorm", "anything") is None and code_problem(None, "x") is None
