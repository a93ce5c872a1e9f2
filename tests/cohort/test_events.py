"""Index events and labels on small hand-made record tables."""

from __future__ import annotations

import pytest

from ehr_fed.cohort import build_feature_table


def _labels(ft) -> list[tuple[str, int]]:
    return [(str(t), int(y)) for t, y in zip(ft.table["index_time"], ft.table["label"], strict=True)]


def test_readmission_rule_exactly(builder, mapping, readmission):
    b = builder.person("p1").person("p2").person("p3")
    # p1: readmitted exactly 30 days after discharge, then again 30 days + 1 second later
    b.visit("a", "p1", "2020-01-01 08:00", "2020-01-05 10:00")
    b.visit("b", "p1", "2020-02-04 10:00", "2020-02-06 10:00")
    b.visit("c", "p1", "2020-03-07 10:00:01", None)             # no end: not an index event, but a next stay
    # p2: next stay starts at the discharge time (label 1); an overlapping stay (label 0)
    b.visit("d", "p2", "2020-01-01", "2020-01-10")
    b.visit("e", "p2", "2020-01-10", "2020-01-20")
    b.visit("f", "p2", "2020-01-15", "2020-01-16")
    # p3: the ICU part of a stay is no stay; an ED visit and outpatient visits are no stays
    b.visit("g", "p3", "2020-01-01", "2020-01-09")
    b.visit("g-icu", "p3", "2020-01-02", "2020-01-03", code="ACUTE", part_of="g")
    b.visit("g-icu2", "p3", "2020-01-12", "2020-01-13", part_of="g")
    b.visit("h", "p3", "2020-01-20", "2020-01-21", code="EMER")
    b.visit("i", "p3", "2020-01-22", "2020-01-23", code="AMB")
    ft = build_feature_table(b.records, mapping, readmission)
    assert dict(_labels(ft)) == {
        "2020-01-05 10:00:00": 1,     # a -> b starts 30 days after a's end, exactly
        "2020-02-06 10:00:00": 0,     # b -> c starts 30 days + 1 s after b's end
        "2020-01-10 00:00:00": 1,     # d -> e starts at d's end
        "2020-01-20 00:00:00": 0,     # e -> f starts before e's end
        "2020-01-16 00:00:00": 0,     # f: no next stay
        "2020-01-09 00:00:00": 0,     # g: its ICU parts are not stays
    }
    assert ft.summary["index_events"] == 6
    assert ft.summary["positives"] == 2
    assert ft.summary["persons"] == 3
    assert ft.summary["exclusions"] == {}


def test_next_stay_is_the_next_by_start(builder, mapping, readmission):
    # e starts before d ends (overlap): d's next stay is e, so d is not readmitted even though
    # f starts 3 days after d's end
    b = builder.person("p")
    b.visit("d", "p", "2020-01-01", "2020-01-10")
    b.visit("e", "p", "2020-01-05", "2020-01-06")
    b.visit("f", "p", "2020-01-13", "2020-01-14")
    ft = build_feature_table(b.records, mapping, readmission)
    assert _labels(ft) == [("2020-01-06 00:00:00", 1), ("2020-01-10 00:00:00", 0), ("2020-01-14 00:00:00", 0)]


def test_opt_in_exclusions_are_counted(builder, mapping, readmission):
    study = readmission.model_copy(update={"exclusions": readmission.exclusions.model_copy(update={
        "death_during_stay": True, "transfer_out": True, "planned_readmission": True, "min_followup_days": 30})})
    b = builder.person("dead", death="2020-01-04").person("t").person("pl").person("f")
    b.visit("d1", "dead", "2020-01-01", "2020-01-04")
    b.visit("t1", "t", "2020-01-01", "2020-01-02", discharge_disposition="urn:dd|transfer")
    b.visit("t2", "t", "2020-06-01", "2020-06-02")
    b.visit("p1", "pl", "2020-01-01", "2020-01-02")
    b.visit("p2", "pl", "2020-01-10", "2020-01-12", priority="urn:prio|elective")
    b.visit("p3", "pl", "2020-05-10", "2020-05-12")
    b.visit("f1", "f", "2020-01-01", "2020-01-02")
    b.visit("f2", "f", "2020-01-20", "2020-01-21", code="AMB")
    ft = build_feature_table(b.records, mapping, study)
    assert ft.summary["exclusions"] == {
        "death_during_stay": 1, "transfer_out": 1, "planned_readmission": 1, "min_followup_days": 3}
    # short follow-up: t2, p3, f1 (f2 ends 19 days after f1); kept: p2 (followed up to p3)
    assert _labels(ft) == [("2020-01-12 00:00:00", 0)]


def test_t2d_progression(builder, mapping, t2d):
    sct, loinc = "http://snomed.info/sct", "http://loinc.org"
    b = builder.person("a").person("b").person("c").person("d")
    # a: prediabetes by HbA1c 6.0 %, T2D diagnosis 2 years later -> 1
    b.add("measurement", person_id="a", time="2010-01-01", system=loinc, code="4548-4", value=6.0, unit="%")
    b.add("condition", person_id="a", onset_time="2012-01-01", system=sct, code="44054006")
    # b: prediabetes diagnosis; HbA1c 48 mmol/mol (6.54 %) 3 years + 1 day later -> 0 (outside horizon)
    b.add("condition", person_id="b", onset_time="2010-01-01", system=sct, code="15777000")
    b.add("measurement", person_id="b", time="2013-01-02", system=loinc, code="4548-4", value=48.0,
          unit="mmol/mol")
    # c: T2D before any prediabetes finding -> excluded
    b.add("condition", person_id="c", onset_time="2009-01-01", system=sct, code="44054006")
    b.add("condition", person_id="c", onset_time="2010-01-01", system=sct, code="15777000")
    # d: HbA1c 5.6 % is no finding; 6.5 % is an outcome but there is no index
    b.add("measurement", person_id="d", time="2010-01-01", system=loinc, code="4548-4", value=5.6, unit="%")
    b.add("measurement", person_id="d", time="2011-01-01", system=loinc, code="4548-4", value=6.5, unit="%")
    ft = build_feature_table(b.records, mapping, t2d)
    assert ft.summary["index_events"] == 2
    assert ft.summary["exclusions"] == {"prior_outcome": 1}
    assert sorted(_labels(ft)) == [("2010-01-01 00:00:00", 0), ("2010-01-01 00:00:00", 1)]
    # the index finding itself is not a feature (strictly before the index time)
    assert ft.table["lab_hba1c"].isna().all()


def test_t2d_progression_within_horizon(builder, mapping, t2d):
    loinc = "http://loinc.org"
    b = builder.person("b")
    b.add("measurement", person_id="b", time="2010-01-01", system=loinc, code="4548-4", value=5.8, unit="%")
    b.add("measurement", person_id="b", time="2013-01-01", system=loinc, code="4548-4", value=48.0,
          unit="mmol/mol")
    ft = build_feature_table(b.records, mapping, t2d)
    assert _labels(ft) == [("2010-01-01 00:00:00", 1)]
    assert ft.table["lab_hba1c"].isna().all()


@pytest.mark.parametrize("salt", [None, "short", "s3cret-of-this-site-only"])
def test_person_key_salt(builder, mapping, readmission, monkeypatch, salt):
    import hashlib
    import hmac

    from ehr_fed.cohort.table import PersonKeyError

    if salt:
        monkeypatch.setenv("EHR_FED_PERSON_SALT", salt)
    else:
        monkeypatch.delenv("EHR_FED_PERSON_SALT", raising=False)
    b = builder.person("p1")
    b.visit("a", "p1", "2020-01-01", "2020-01-02")
    if salt in (None, "short"):  # no silent fallback to the public site id
        with pytest.raises(PersonKeyError, match="site test_site: .*EHR_FED_PERSON_SALT"):
            build_feature_table(b.records, mapping, readmission)
        return
    ft = build_feature_table(b.records, mapping, readmission)
    want = hmac.new(salt.encode(), b"p1", hashlib.sha256).hexdigest()[:32]
    assert ft.table["person_key"].tolist() == [want]
    assert ft.table["site_id"].tolist() == ["test_site"]
