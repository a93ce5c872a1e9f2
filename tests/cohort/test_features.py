"""Features use only data known at the index time; missing stays missing."""

from __future__ import annotations

import math

import pytest

from ehr_fed.cohort import build_feature_table

SCT, ICD10, LOINC, RX = ("http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm", "http://loinc.org",
                         "http://www.nlm.nih.gov/research/umls/rxnorm")


@pytest.fixture
def one_stay(builder):
    """Person p (born 1950-06-15, female); stay s 2020-03-01 08:00 -> 2020-03-05 08:00."""
    b = builder.person("p", birth="1950-06-15", sex="female")
    b.visit("s", "p", "2020-03-01 08:00", "2020-03-05 08:00")
    return b


def _row(b, mapping, study) -> dict:
    ft = build_feature_table(b.records, mapping, study)
    assert len(ft.table) >= 1
    return ft.table.iloc[0].to_dict()


def test_demographics_and_stay(one_stay, mapping, readmission):
    row = _row(one_stay, mapping, readmission)
    assert row["age"] == 69.0                    # 69 completed years at discharge
    assert row["sex_female"] == 1.0
    assert row["los_days"] == 4.0


def test_labs_before_discharge_only_in_canonical_units(one_stay, mapping, readmission):
    b = one_stay
    # creatinine: 88.42 umol/L during the stay (1 mg/dL), later 3 mg/dL after discharge: ignored
    b.add("measurement", person_id="p", visit_id="s", time="2020-03-02", system=LOINC, code="2160-0",
          value=88.42, unit="umol/l")
    b.add("measurement", person_id="p", time="2020-03-06", system=LOINC, code="2160-0", value=3.0, unit="mg/dL")
    # glucose: 5 mmol/L a month before; an older value in mg/dL beyond the 365-day lookback
    b.add("measurement", person_id="p", time="2020-02-01", system=LOINC, code="2345-7", value=5.0,
          unit="mmol/L")
    b.add("measurement", person_id="p", time="2018-01-01", system=LOINC, code="2345-7", value=300.0,
          unit="mg/dL")
    # hemoglobin 140 g/L; HbA1c 53 mmol/mol
    b.add("measurement", person_id="p", time="2020-03-03", system=LOINC, code="718-7", value=140.0, unit="g/L")
    b.add("measurement", person_id="p", time="2020-03-03", system=LOINC, code="4548-4", value=53.0,
          unit="mmol/mol")
    row = _row(b, mapping, readmission)
    assert row["lab_creatinine"] == pytest.approx(1.0)
    assert row["lab_glucose"] == pytest.approx(90.08)
    assert row["lab_hemoglobin"] == pytest.approx(14.0)
    assert row["lab_hba1c"] == pytest.approx(53 / 10.929 + 2.15)
    assert math.isnan(row["lab_sodium"]) and math.isnan(row["lab_egfr"])


def test_unknown_unit_is_quarantined_not_converted(one_stay, mapping, readmission):
    b = one_stay
    b.add("measurement", person_id="p", visit_id="s", time="2020-03-02", system=LOINC, code="2160-0",
          value=1.2, unit="mg/dL")
    b.add("measurement", person_id="p", visit_id="s", time="2020-03-03", system=LOINC, code="2160-0",
          value=7.0, unit="furlongs")
    b.add("measurement", person_id="p", visit_id="s", time="2020-03-03", system=LOINC, code="2345-7",
          value=7.0, unit="g/dL")         # a known UCUM unit with no conversion for glucose
    tolerant = readmission.model_copy(update={"quarantine": readmission.quarantine.model_copy(
        update={"max_fraction": 0.5})})
    ft = build_feature_table(b.records, mapping, tolerant)
    assert ft.summary["quarantined"] == {"unknown_unit": 2}
    assert ft.table.loc[0, "lab_creatinine"] == 1.2
    assert math.isnan(ft.table.loc[0, "lab_glucose"])
    details = [q.detail for q in ft.quarantine]
    assert any("unit 'furlongs'" in d and "accepted: mg/dL, umol/L" in d for d in details)


def test_quarantine_threshold_stops_the_run(one_stay, mapping, readmission):
    from ehr_fed.cohort import QuarantineThresholdError

    b = one_stay
    for i in range(3):
        b.add("measurement", person_id="p", time=f"2020-03-0{i + 1}", system=LOINC, code="2160-0",
              value=1.0, unit="bogus")
    with pytest.raises(QuarantineThresholdError, match=r"3 of 5 source records \(60.0%\) were quarantined, "
                                                       r"more than the study's quarantine.max_fraction of 5.0%"):
        build_feature_table(b.records, mapping, readmission)


def test_conditions_flags_and_charlson(one_stay, mapping, readmission):
    b = one_stay
    b.add("condition", person_id="p", visit_id="s", system=ICD10, code="I50.9")                   # stay diagnosis
    b.add("condition", person_id="p", onset_time="2019-01-01", system=ICD10, code="e11.22")     # complicated DM
    b.add("condition", person_id="p", onset_time="2019-01-01", system=SCT, code="44054006")      # T2D
    b.add("condition", person_id="p", onset_time="2020-04-01", system=ICD10, code="C78.0")      # after: ignored
    row = _row(b, mapping, readmission)
    assert row["cond_heart_failure"] == 1.0 and row["cond_diabetes"] == 1.0
    assert row["cond_cancer"] == 0.0 and row["cond_copd"] == 0.0
    assert row["charlson"] == 3.0          # heart failure 1 + complicated diabetes 2 (supersedes 1)


def test_missing_domains_are_nan_not_zero(one_stay, mapping, readmission):
    row = _row(one_stay, mapping, readmission)
    for name in ("charlson", "cond_diabetes", "n_active_meds", "prior_ed_180d", "lace", "lab_sodium"):
        assert math.isnan(row[name]), name
    assert row["prior_inpatient_365d"] == 0.0


def test_visit_counts_medications_and_lace(one_stay, mapping, readmission):
    b = one_stay
    b.visit("old", "p", "2019-06-01", "2019-06-03")
    b.visit("older", "p", "2019-01-01", "2019-01-03")           # > 365 days before admission
    b.visit("ed1", "p", "2020-01-10", "2020-01-10 05:00", code="EMER")
    b.visit("ed0", "p", "2020-03-01 02:00", "2020-03-01 07:00", code="EMER")   # led to the admission
    b.visit("later", "p", "2020-04-01", "2020-04-02")
    b.add("condition", person_id="p", onset_time="2019-01-01", system=SCT, code="84114007")
    b.add("medication", person_id="p", start_time="2020-01-01", system=RX, code="1", status="active")
    b.add("medication", person_id="p", start_time="2020-02-01", system=RX, code="1", status="active")
    b.add("medication", person_id="p", start_time="2020-02-01", end_time="2020-03-10", system=RX, code="2")
    b.add("medication", person_id="p", start_time="2019-01-01", system=RX, code="3")       # too old
    b.add("medication", person_id="p", start_time="2020-03-06", system=RX, code="4")       # after
    b.add("medication", person_id="p", start_time="2020-02-01", system=RX, code="5", status="entered-in-error")
    ft = build_feature_table(b.records, mapping, readmission)
    row = ft.table.set_index("index_time").loc["2020-03-05 08:00"].to_dict()
    assert row["prior_inpatient_365d"] == 1.0
    assert row["prior_ed_180d"] == 2.0
    assert row["n_active_meds"] == 2.0
    # L: 4 days -> 4; A: ED visit in the 24 h before admission -> 3; C: heart failure -> 1; E: 2
    assert row["lace"] == 4 + 3 + 1 + 2


def test_emergency_admission_code_sets_acuity(builder, readmission, mapping):
    m = mapping.model_copy(update={"visits": mapping.visits.model_copy(
        update={"emergency_admission": ["urn:adm|ER"]})})
    b = builder.person("p")
    b.visit("s", "p", "2020-03-01", "2020-03-01 12:00", admit_source="urn:adm|ER")
    b.visit("e", "p", "2019-01-01", "2019-01-01", code="EMER")
    b.add("condition", person_id="p", onset_time="2019-01-01", system=SCT, code="1")
    row = build_feature_table(b.records, m, readmission).table.iloc[-1].to_dict()
    assert row["lace"] == 0 + 3 + 0 + 0
