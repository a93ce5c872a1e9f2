"""The data-generating process: realistic rates and a known, non-linear risk model."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from ehr_fed.synth import describe, true_risk
from ehr_fed.synth.model import readmission_logit
from ehr_fed.synth.patients import simulate_patient
from ehr_fed.synth.profiles import default_profiles, site_sizes


@pytest.fixture(scope="module")
def truth():
    rows = []
    for prof in default_profiles(3):
        for i in range(1500):
            p = simulate_patient(random.Random(f"t:{prof.site_id}:{i}"), prof, f"{prof.site_id}-{i}")
            rows += [dict(r, site_id=prof.site_id) for r in p.truth]
    return pd.DataFrame(rows)


def test_readmission_rates_are_realistic_and_differ_by_site(truth):
    r = truth[truth.study == "readmission_30d"]
    rates = r.groupby("site_id")["label"].mean()
    assert ((rates > 0.08) & (rates < 0.25)).all(), rates.to_dict()
    assert rates.max() - rates.min() > 0.02
    assert abs(r["label"].mean() - r["risk"].mean()) < 0.03        # labels are drawn from the risks
    assert 2 < r["los_days"].median() < 6 and 60 < r["age"].mean() < 85


def test_t2d_progression_rate_is_realistic(truth):
    t = truth[truth.study == "t2d_progression"]
    assert len(t) > 300
    assert 0.15 < t["label"].mean() < 0.45
    assert t.groupby("site_id")["label"].size().min() > 50


def test_true_risk_recomputes_the_generated_risk(truth):
    r = truth[truth.study == "readmission_30d"]
    np.testing.assert_allclose(true_risk(r, site_shift=r["site_shift"].to_numpy()), r["risk"], rtol=1e-12)
    t = truth[truth.study == "t2d_progression"]
    np.testing.assert_allclose(true_risk(t, "t2d_progression", t["site_shift"].to_numpy()), t["risk"], rtol=1e-12)


def test_risk_has_interactions_and_non_linear_terms():
    base = {"age": 70.0, "prior_inpatient_365d": 0.0, "prior_ed_180d": 0.0, "charlson": 2.0,
            "cond_heart_failure": 0.0, "cond_copd": 0.0, "cond_ckd": 0.0, "cond_cancer": 0.0,
            "cond_diabetes": 0.0, "los_days": 4.0, "lab_creatinine": 1.0, "lab_hemoglobin": 13.5,
            "lab_sodium": 140.0, "lab_hba1c": np.nan, "n_active_meds": 2.0}
    z = lambda **kw: float(readmission_logit({**base, **kw}))  # noqa: E731
    # heart failure and CKD together add more than their separate effects (cardiorenal interaction)
    both = z(cond_heart_failure=1, cond_ckd=1) - z()
    assert both == pytest.approx((z(cond_heart_failure=1) - z()) + (z(cond_ckd=1) - z()) + 0.7)
    # sodium is U-shaped: low and high both raise the risk
    assert z(lab_sodium=128) > z() < z(lab_sodium=152)
    # a missing lab counts as its reference value
    assert z(lab_hemoglobin=np.nan) == z(lab_hemoglobin=13.5)


def test_true_risk_names_missing_columns_and_unknown_studies():
    with pytest.raises(ValueError, match="lack the columns"):
        true_risk(pd.DataFrame({"age": [70.0]}))
    with pytest.raises(ValueError, match="unknown study 'sepsis'"):
        true_risk(pd.DataFrame({"age": [70.0]}), study="sepsis")


def test_describe_documents_the_process():
    d = describe(4)
    assert set(d["sites"]) == {"site_a", "site_b", "site_c", "site_d"}
    assert [s["archetype"] for s in d["sites"].values()] == ["academic", "community", "community", "rural"]
    assert "heart_failure * ckd" in d["models"]["readmission_30d"]["formula"]
    assert d["t2d_horizon_years"] == 3.0
    assert sum(site_sizes(default_profiles(4), 1000)) == pytest.approx(4000, abs=2)
