"""Units: local spellings -> UCUM, and analyte-specific conversions to the canonical unit."""

from __future__ import annotations

import pytest

from ehr_fed.mapping.units import canonical_ucum, conversion_table


@pytest.mark.parametrize("analyte,canonical,unit,value,expected", [
    ("creatinine", "mg/dL", "umol/L", 88.42, 1.0),
    ("creatinine", "mg/dL", "mg/dL", 1.3, 1.3),
    ("glucose", "mg/dL", "mmol/L", 5.0, 90.08),
    ("hemoglobin", "g/dL", "g/L", 135.0, 13.5),
    ("hba1c", "%", "mmol/mol", 48.0, 48 / 10.929 + 2.15),
    ("sodium", "mmol/L", "mEq/L", 140.0, 140.0),
])
def test_conversions(analyte, canonical, unit, value, expected):
    assert conversion_table(analyte, canonical)[unit].apply(value) == pytest.approx(expected)


def test_no_cross_analyte_conversion():
    assert "mmol/L" not in conversion_table("creatinine", "mg/dL")
    assert "umol/L" not in conversion_table("glucose", "mg/dL")
    assert list(conversion_table("egfr", "mL/min/{1.73_m2}")) == ["mL/min/{1.73_m2}"]


def test_spellings():
    site = {"mg/dl": "mg/dL", "µmol/L": "umol/L"}
    assert canonical_ucum("mg/dl", site) == "mg/dL"
    assert canonical_ucum(" MG/DL ", site) == "mg/dL"
    assert canonical_ucum("µmol/L", site) == "umol/L"
    assert canonical_ucum("mmol/l") == "mmol/L"
    assert canonical_ucum("furlongs", site) is None
    assert canonical_ucum(None) is None
