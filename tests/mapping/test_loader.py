"""Loading study specs and site mappings: every problem, with its line and code, in one pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ehr_fed.mapping import ConfigError, load_mapping, load_study, model_to_yaml, validate_file
from ehr_fed.mapping.schema import json_schema_text

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "mappings" / "studies").glob("*.yaml"))
SITES = sorted((ROOT / "mappings" / "sites").glob("*.yaml"))

BAD_STUDY = """\
study_id: bad
index_event:
  kind: inpatient_discharge
label:
  kind: readmission
  window_days: thirty
windows:
  prior_ed_dayz: 3
concept_sets:
  diabetes:
    icd10cm: [E11]
    icd11: [5A11]
    icd9cm: [250]
labs:
  creatinine: {loinc: ["2160-0"], unit: mg/dL}
features:
  - {name: age, kind: age}
  - {name: age, kind: sex_female}
  - {name: x, kind: condition_flagg, concept_set: diabetes}
  - {name: y, kind: condition_flag, concept_set: diabetis}
  - {name: z, kind: last_lab, lab: creatinin, unit: mg/dL}
  - {name: w, kind: last_lab, lab: creatinine, unit: umol/L}
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_study_problem_in_one_pass_with_line_and_code(tmp_path):
    path = _write(tmp_path, BAD_STUDY)
    with pytest.raises(ConfigError, match=r"9 problems in config") as info:
        load_study(path)
    got = [(p.line, p.code) for p in info.value.problems]
    assert got == [
        (6, "wrong_type"),
        (8, "unknown_key"),
        (12, "unknown_vocabulary"),
        (13, "wrong_type"),
        (18, "duplicate_name"),
        (19, "unknown_feature_kind"),
        (20, "unknown_concept_set"),
        (21, "unknown_lab"),
        (22, "unit_mismatch"),
    ]
    assert all(p.file == str(path) and p.fix for p in info.value.problems)


def test_problem_messages_list_valid_names(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, BAD_STUDY))
    text = str(info.value)
    assert "did you mean 'prior_ed_days'?" in text
    assert "did you mean 'condition_flag'? valid: active_medications, age, charlson" in text
    assert "did you mean 'diabetes'?" in text
    assert "quote codes" in text
    assert f"{tmp_path / 'cfg.yaml'}:21: unknown_lab lab 'creatinin' is not defined" in text


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = _write(tmp_path, "site_id: a\nsource: fhir\nvisits: [1,\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:4: yaml_syntax YAML syntax error, column 1"):
        load_mapping(path)


def test_duplicate_yaml_key_is_reported(tmp_path):
    path = _write(tmp_path, "site_id: a\nsource: fhir\nsite_id: b\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: duplicate_key key 'site_id' appears twice"):
        load_mapping(path)


def test_site_mapping_problems(tmp_path):
    text = """\
site_id: s
source: fhir
visits:
  inpatient:
    - {system: "urn:x", code: IMP}
  emergency:
    - {system: "urn:x", code: IMP}
  emergency_admission: ["no-bar"]
code_systems:
  "http://snomed.info/sct": snomed-ct
units:
  "mg/dl": mg/dl
local_codes:
  - {system: "urn:lab", code: CREA, to: {vocabulary: loinc, code: "2160-0"}, unit: umol/L}
  - {system: "urn:lab", code: CREA, to: {vocabulary: lonic, code: "2160-0"}}
dates:
  condition: [onsetDateTime]
fhir:
  condition_dates: [onsetDateTime]
"""
    with pytest.raises(ConfigError) as info:
        load_mapping(_write(tmp_path, text))
    got = [(p.line, p.code) for p in info.value.problems]
    assert got == [
        (7, "duplicate_name"), (8, "invalid_value"), (10, "unknown_vocabulary"), (12, "unknown_unit"),
        (15, "duplicate_name"), (15, "unknown_vocabulary"), (16, "moved_key"), (19, "unknown_key"),
    ]
    assert "did you mean 'condition_date'?" in str(info.value)


def test_missing_and_wrong_kind(tmp_path):
    text = "study_id: s\nlabel: {kind: readmission}\nfeatures: []\n"
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, text))
    assert [(p.line, p.code) for p in info.value.problems] == [(1, "missing_key"), (3, "invalid_value")]
    assert "missing required key 'index_event'" in str(info.value)


MINIMAL = """\
study_id: s
index_event: {kind: inpatient_discharge}
label: {kind: progression, concept_set: dm}
concept_sets:
  dm: {icd10cm: [E11]}
features:
  - {name: los, kind: length_of_stay}
"""


def test_incompatible_label_and_stay_features(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, MINIMAL))
    assert info.value.codes == ["incompatible_label"]
    assert "use label kind 'readmission'" in str(info.value)
    text = MINIMAL.replace("{kind: inpatient_discharge}", "{kind: first_finding, concept_set: dm}")
    with pytest.raises(ConfigError, match=r"cfg.yaml:7: feature_needs_stay feature kind 'length_of_stay'"):
        load_study(_write(tmp_path, text))


def test_study_built_in_python_checks_references():
    from ehr_fed.mapping import StudySpec

    with pytest.raises(ValueError, match=r"unknown_concept_set: concept set 'nope' is not defined"):
        StudySpec.model_validate({
            "study_id": "s", "index_event": {"kind": "inpatient_discharge"}, "label": {"kind": "readmission"},
            "features": [{"name": "f", "kind": "condition_flag", "concept_set": "nope"}]})


@pytest.mark.parametrize("path", STUDIES + SITES, ids=lambda p: p.name)
def test_shipped_configs_are_valid_and_round_trip(path, tmp_path):
    kind, problems = validate_file(path)
    assert problems == []
    load = load_study if kind == "study" else load_mapping
    obj = load(path)
    again = load(_write(tmp_path, model_to_yaml(obj), name=path.name))
    assert again == obj
    assert model_to_yaml(again) == model_to_yaml(obj)


def test_shipped_study_feature_names():
    readmission = load_study(ROOT / "mappings/studies/readmission_30d.yaml")
    assert readmission.feature_names == [
        "age", "sex_female", "los_days", "prior_inpatient_365d", "prior_ed_180d", "charlson",
        "cond_diabetes", "cond_heart_failure", "cond_copd", "cond_ckd", "cond_hypertension", "cond_cancer",
        "lab_creatinine", "lab_hemoglobin", "lab_sodium", "lab_glucose", "lab_hba1c", "lab_egfr",
        "n_active_meds", "lace",
    ]
    t2d = load_study(ROOT / "mappings/studies/t2d_progression.yaml")
    assert t2d.feature_names == [n for n in readmission.feature_names if n not in ("los_days", "lace")]
    assert t2d.label.horizon_years == 3


@pytest.mark.parametrize("kind,name", [("mapping", "site_mapping"), ("study", "study")])
def test_committed_json_schema_is_current(kind, name):
    committed = (ROOT / "mappings" / "schema" / f"{name}.schema.json").read_text(encoding="utf-8")
    assert json.loads(committed) == json.loads(json_schema_text(kind)), (
        "regenerate with: ehr-fed mapping schema --kind " + kind + f" --out mappings/schema/{name}.schema.json")
