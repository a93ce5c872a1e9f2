"""The FHIR and OMOP forms of every synthetic hospital harmonize to the same feature table,
and that table matches the generator's ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ehr_fed.cohort import harmonize
from ehr_fed.synth import generate_federation, true_risk
from ehr_fed.synth.model import READMISSION_FEATURES

KEYS = ["person_key", "index_time"]


def _sites(fed_file):
    cfg = yaml.safe_load(fed_file.read_text())
    base = fed_file.parent
    return base / cfg["study"], [
        (s["id"], base / s["input"], base / s["mapping"], base / s["omop_input"], base / s["omop_mapping"])
        for s in cfg["sites"]]


def _assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a[["site_id", *KEYS, "label"]], b[["site_id", *KEYS, "label"]])
    features = a.columns[4:]
    np.testing.assert_allclose(a[features].to_numpy(float), b[features].to_numpy(float), rtol=0, atol=1e-9)


def _truth(site_dir, study):
    t = pd.read_parquet(site_dir / "truth.parquet")
    return t[t["study"] == study].reset_index(drop=True)


def test_fhir_and_omop_give_identical_feature_tables_at_every_site(small_federation):
    study, sites = _sites(small_federation)
    for site_id, fhir_in, fhir_map, omop_in, omop_map in sites:
        a = harmonize("fhir", fhir_in, fhir_map, study).table
        b = harmonize("omop", omop_in, omop_map, study).table
        assert (a["site_id"] == site_id).all()
        _assert_same_tables(a, b)

        truth = _truth(fhir_in.parent, "readmission_30d")
        joined = a.merge(truth, on=KEYS, how="outer", suffixes=("", "_truth"), indicator=True)
        assert (joined["_merge"] == "both").all(), f"{site_id}: index events differ from truth.parquet"
        np.testing.assert_array_equal(joined["label"], joined["label_truth"])
        for col in READMISSION_FEATURES:
            np.testing.assert_allclose(joined[col], joined[f"{col}_truth"], rtol=0, atol=1e-9, err_msg=col)
        risk = true_risk(joined[list(READMISSION_FEATURES)], site_shift=joined["site_shift"].to_numpy())
        np.testing.assert_allclose(risk, joined["risk"], rtol=1e-12)


def test_t2d_progression_forms_agree_and_match_truth(tmp_path):
    fed = generate_federation(tmp_path / "t2d", n_sites=2, n_patients=120, seed=5, format="both",
                              study="t2d_progression")
    study, sites = _sites(fed)
    for site_id, fhir_in, fhir_map, omop_in, omop_map in sites:
        a = harmonize("fhir", fhir_in, fhir_map, study).table
        b = harmonize("omop", omop_in, omop_map, study).table
        _assert_same_tables(a, b)
        truth = _truth(fhir_in.parent, "t2d_progression")
        joined = a.merge(truth, on=KEYS, how="outer", suffixes=("", "_truth"), indicator=True)
        assert (joined["_merge"] == "both").all(), site_id
        np.testing.assert_array_equal(joined["label"], joined["label_truth"])
        for col in ("age", "sex_female", "cond_hypertension", "charlson"):
            np.testing.assert_allclose(joined[col], joined[f"{col}_truth"], rtol=0, atol=1e-9, err_msg=col)


@pytest.mark.parametrize("column", ["lab_creatinine", "lab_glucose", "lab_hemoglobin"])
def test_local_units_are_converted_to_the_same_canonical_values(small_federation, column):
    # site_b reports creatinine in umol/L and glucose in mmol/L, site_c uses local codes and units:
    # after harmonization their values are on the canonical scale of the academic site
    study, sites = _sites(small_federation)
    medians = {}
    for site_id, fhir_in, fhir_map, *_ in sites:
        medians[site_id] = harmonize("fhir", fhir_in, fhir_map, study).table[column].median()
    lo, hi = {"lab_creatinine": (0.6, 2.5), "lab_glucose": (80, 200), "lab_hemoglobin": (9, 16)}[column]
    assert all(lo < m < hi for m in medians.values()), medians
