"""Display names, units, outcome groups and variable types derived from the shipped study specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehr_fed.mapping import load_study
from ehr_fed.stats import display

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def readmission():
    return load_study(PROJECT_ROOT / "mappings/studies/readmission_30d.yaml")


@pytest.fixture(scope="module")
def t2d():
    return load_study(PROJECT_ROOT / "mappings/studies/t2d_progression.yaml")


def test_feature_names_carry_units_from_the_spec(readmission):
    names = display.feature_names(readmission, ["age", "los_days", "lab_hemoglobin", "lab_egfr", "sex_female",
                                                "cond_heart_failure", "prior_ed_180d", "charlson", "lace"])
    assert names == {
        "age": "Age (years)", "los_days": "Length of stay (days)", "lab_hemoglobin": "Hemoglobin (g/dL)",
        "lab_egfr": "eGFR (mL/min/1.73 m²)", "sex_female": "Female sex", "cond_heart_failure": "Heart failure",
        "prior_ed_180d": "ED visits, prior 180 days", "charlson": "Charlson comorbidity index",
        "lace": "LACE index"}
    assert display.unit(readmission, "lab_sodium") == "mmol/L" and display.unit(readmission, "charlson") is None


def test_every_shipped_feature_has_a_readable_name(readmission, t2d):
    for study in (readmission, t2d):
        for f in study.feature_names:
            name = display.feature_name(study, f)
            assert name != f and "_" not in name, (study.study_id, f, name)


def test_outcome_groups_follow_the_label(readmission, t2d):
    assert display.outcome_names(readmission) == ("Not readmitted", "Readmitted within 30 days")
    assert display.outcome_names(t2d) == ("No type 2 diabetes within 3 years", "Type 2 diabetes within 3 years")
    assert display.outcome_name(readmission) == "readmission within 30 days"
    assert display.outcome_names(None) == ("label=0", "label=1")


def test_terms_and_variable_types(readmission):
    assert display.term_name(readmission, "missing_lab_hemoglobin") == "Hemoglobin missing"
    assert display.term_name(readmission, "age") == "Age (years)"
    assert display.term_name(None, "x1") == "x1"
    kinds = {f: display.variable_type(readmission, f) for f in ("age", "sex_female", "cond_copd", "los_days",
                                                                 "prior_inpatient_365d", "lab_sodium")}
    assert kinds == {"age": "normal", "sex_female": "binary", "cond_copd": "binary", "los_days": "skewed",
                     "prior_inpatient_365d": "skewed", "lab_sodium": "normal"}
    assert display.integer_valued(readmission, "charlson") and not display.integer_valued(readmission, "los_days")
    assert display.variable_type(None, "age") is None
