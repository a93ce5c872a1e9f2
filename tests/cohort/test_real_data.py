"""The counts of ../shared/data/SOURCES.md, reproduced from the real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehr_fed.cohort import harmonize, validate_feature_table
from ehr_fed.mapping import load_study

ROOT = Path(__file__).resolve().parents[2]
READMISSION = ROOT / "mappings/studies/readmission_30d.yaml"

CASES = [
    ("fhir", "fhir/mimic4demo", "mimic_fhir.yaml", 263, 48),
    ("fhir", "fhir/synthea_bulk10", "synthea_fhir.yaml", 49, 12),
    ("fhir", "fhir/synthea_bundles12", "synthea_fhir.yaml", 94, 27),
    ("omop", "omop/synthea27nj_v54", "omop_default.yaml", 13, 1),
    ("omop", "omop/mimic4demo_v53", "mimic_omop.yaml", 270, 52),
    ("omop", "omop/synpuf10_v50", "omop_default.yaml", 6, 0),
]


@pytest.mark.parametrize("kind,folder,mapping,index_events,positives", CASES, ids=[c[1] for c in CASES])
def test_readmission_counts(shared_data, kind, folder, mapping, index_events, positives):
    ft = harmonize(kind, shared_data / folder, ROOT / "mappings/sites" / mapping, READMISSION)
    assert (ft.summary["index_events"], ft.summary["positives"]) == (index_events, positives)
    validate_feature_table(ft.table, load_study(READMISSION))
    assert ft.table["age"].notna().all()
    assert ft.table["person_key"].str.fullmatch(r"[0-9a-f]{32}").all()


def test_mimic_fhir_details(shared_data):
    ft = harmonize("fhir", shared_data / "fhir/mimic4demo", ROOT / "mappings/sites/mimic_fhir.yaml", READMISSION)
    t = ft.table
    assert ft.summary["persons"] == 100
    # conditions take their encounter's date, so the stay's own diagnoses count
    assert t["charlson"].notna().all() and t["charlson"].mean() > 1
    assert t["cond_ckd"].sum() > 0
    # no ED visits, labs or medications in this source: missing, not zero
    for name in ("prior_ed_180d", "lace", "lab_creatinine", "n_active_meds"):
        assert t[name].isna().all(), name
    assert ft.summary["source_records"]["Encounter"] == 263 + 138


def test_synthea_bundles_units_and_t2d(shared_data):
    ft = harmonize("fhir", shared_data / "fhir/synthea_bundles12", ROOT / "mappings/sites/synthea_fhir.yaml",
                   ROOT / "mappings/studies/t2d_progression.yaml")
    # eGFR in mL/min cannot be converted to mL/min/{1.73_m2}: quarantined, not dropped or mis-converted
    assert ft.summary["quarantined"] == {"unknown_unit": 4}
    assert [q.detail.split(" ")[0] for q in ft.quarantine] == ["egfr"] * 4
    # 5 persons with prediabetes; 2 had type 2 diabetes first; the 2 progressions happen after 3 years
    assert ft.summary["exclusions"] == {"prior_outcome": 2}
    assert (ft.summary["index_events"], ft.summary["positives"]) == (3, 0)
