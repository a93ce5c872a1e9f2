"""Layout, configs, determinism and caching of generated federations."""

from __future__ import annotations

import gzip
import json

import duckdb
import orjson
import pandas as pd
import pytest
import yaml

from ehr_fed.cli.main import main
from ehr_fed.mapping import load_mapping
from ehr_fed.synth import generate_federation
from ehr_fed.synth.fhir_writer import RESOURCE_TYPES
from ehr_fed.synth.generate import MANIFEST, is_generated
from ehr_fed.synth.omop_writer import CDM

CLINICAL = {"condition_occurrence": "condition_concept_id", "measurement": "measurement_concept_id",
            "drug_exposure": "drug_concept_id", "procedure_occurrence": "procedure_concept_id",
            "visit_occurrence": "visit_concept_id", "person": "gender_concept_id"}


def test_federation_file_lists_every_site_with_relative_paths(small_federation):
    cfg = yaml.safe_load(small_federation.read_text())
    base = small_federation.parent
    assert (base / cfg["study"]).is_file()
    assert cfg["transport"] == {"kind": "in_process"}
    assert cfg["privacy"]["min_cell_count"] == 10 and cfg["keys"]["n_length"] == 2048
    assert [s["id"] for s in cfg["sites"]] == ["site_a", "site_b", "site_c"]
    for s in cfg["sites"]:
        assert s["source"] == "fhir"
        for key in ("input", "mapping", "omop_input", "omop_mapping"):
            assert not s[key].startswith("/") and (base / s[key]).exists(), key


def test_mapping_configs_validate_and_differ_between_sites(small_federation):
    base = small_federation.parent
    mappings = {s: (load_mapping(base / s / "mapping_fhir.yaml"), load_mapping(base / s / "mapping_omop.yaml"))
                for s in ("site_a", "site_b", "site_c")}
    for site, (fhir, omop) in mappings.items():
        assert fhir.site_id == omop.site_id == site
        assert omop.omop.person_id_field == "person_source_value"
    inpatient = {s: m[0].visits.inpatient[0].code for s, m in mappings.items()}
    assert inpatient == {"site_a": "IMP", "site_b": "ACUTE", "site_c": "I"}
    # the FHIR form carries the laboratory's own codes; the OMOP form holds their LOINC concepts
    assert mappings["site_c"][0].local_codes and not mappings["site_c"][1].local_codes
    assert mappings["site_b"][0].units["umol/l"] == "umol/L"
    assert mappings["site_c"][1].visits.inpatient[0].code == "8717"


def test_fhir_files_hold_r4_resources_with_site_coding(small_federation):
    site = small_federation.parent / "site_b" / "fhir"
    counts = {}
    for rt in RESOURCE_TYPES:
        with gzip.open(site / f"{rt}.000.ndjson.gz") as f:
            lines = [orjson.loads(x) for x in f]
        assert lines and all(r["resourceType"] == rt and r["id"] for r in lines)
        counts[rt] = lines
    systems = {c["code"]["coding"][0]["system"] for c in counts["Condition"]}
    assert systems == {"http://snomed.info/sct"}         # site_b codes diagnoses in SNOMED CT
    units = {o["valueQuantity"]["unit"] for o in counts["Observation"] if o["code"]["coding"][0]["code"] == "2160-0"}
    assert units == {"umol/l"}
    assert all(e["period"]["start"].endswith("-06:00") for e in counts["Encounter"])


def test_omop_file_has_cdm_tables_and_resolvable_concepts(small_federation):
    con = duckdb.connect(str(small_federation.parent / "site_a" / "omop.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(CDM) <= tables
    for table, col in CLINICAL.items():
        unresolved = con.execute(f"SELECT count(*) FROM {table} t LEFT JOIN concept c ON c.concept_id = t.{col} "
                                 "WHERE c.concept_id IS NULL").fetchone()[0]
        assert unresolved == 0, table
    # OHDSI conventions: standard SNOMED CT concepts in condition_concept_id, ICD-10-CM as the source
    standard = con.execute("SELECT DISTINCT c.vocabulary_id, c.standard_concept FROM condition_occurrence o "
                           "JOIN concept c ON c.concept_id = o.condition_concept_id").fetchall()
    assert standard == [("SNOMED", "S")]
    source = con.execute("SELECT DISTINCT c.vocabulary_id FROM condition_occurrence o "
                         "JOIN concept c ON c.concept_id = o.condition_source_concept_id ORDER BY 1").fetchall()
    assert source == [("ICD10CM",), ("SNOMED",)]    # cancer and prediabetes are problem-list SNOMED CT
    maps = con.execute("""SELECT count(*) FROM condition_occurrence o LEFT JOIN concept_relationship r
        ON r.concept_id_1 = o.condition_source_concept_id AND r.concept_id_2 = o.condition_concept_id
        AND r.relationship_id = 'Maps to' WHERE r.concept_id_1 IS NULL""").fetchone()[0]
    assert maps == 0
    for table, col in {**CLINICAL, "measurement": "unit_concept_id"}.items():
        nonstandard = con.execute(f"SELECT count(*) FROM {table} t JOIN concept c ON c.concept_id = t.{col} "
                                  "WHERE c.standard_concept IS DISTINCT FROM 'S'").fetchone()[0]
        assert nonstandard == 0, table
    egfr = con.execute("SELECT DISTINCT m.measurement_concept_id, m.measurement_source_concept_id, c.concept_name "
                       "FROM measurement m JOIN concept c ON c.concept_id = m.unit_concept_id "
                       "WHERE m.measurement_source_value = '33914-3'").fetchall()
    assert egfr == [(46236952, 3030354, "milliliter per minute per 1.73 square meter")]
    n_person, n_src = con.execute("SELECT count(*), count(DISTINCT person_source_value) FROM person").fetchone()
    assert n_person == n_src > 0
    con.close()


def test_sites_differ_in_size_case_mix_and_missing_labs(small_federation):
    base = small_federation.parent
    manifest = json.loads((base / MANIFEST).read_text())
    sizes = {s["site_id"]: s["patients"] for s in manifest["sites"]}
    assert sizes["site_a"] > sizes["site_b"] > sizes["site_c"]
    truth = {s: pd.read_parquet(base / s / "truth.parquet") for s in sizes}
    ages = {s: t.loc[t.study == "readmission_30d", "age"].mean() for s, t in truth.items()}
    assert ages["site_c"] > ages["site_b"]
    missing = {s: t.loc[t.study == "readmission_30d", "lab_hemoglobin"].isna().mean() for s, t in truth.items()}
    assert missing["site_c"] > missing["site_a"]


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".duckdb"}


def _omop_tables(path):
    con = duckdb.connect(str(path), read_only=True)
    out = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").df() for t in CDM}
    con.close()
    return out


def test_same_seed_gives_identical_outputs_and_another_seed_does_not(tmp_path):
    a = generate_federation(tmp_path / "a", n_sites=2, n_patients=40, seed=3, format="both").parent
    b = generate_federation(tmp_path / "b", n_sites=2, n_patients=40, seed=3, format="both").parent
    c = generate_federation(tmp_path / "c", n_sites=2, n_patients=40, seed=4, format="both").parent
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)     # byte-identical
    assert fa[next(k for k in fa if k.name == "Patient.000.ndjson.gz")] != \
        fc[next(k for k in fc if k.name == "Patient.000.ndjson.gz")]
    ta, tb = _omop_tables(a / "site_a" / "omop.duckdb"), _omop_tables(b / "site_a" / "omop.duckdb")
    for name in CDM:
        pd.testing.assert_frame_equal(ta[name], tb[name])


def test_if_missing_skips_an_identical_federation_and_redoes_a_different_one(tmp_path):
    out = tmp_path / "fed"
    fed = generate_federation(out, n_sites=1, n_patients=20, seed=1, format="fhir")
    patient = out / "site_a" / "fhir" / "Patient.000.ndjson.gz"
    stamp = patient.stat().st_mtime_ns
    assert generate_federation(out, n_sites=1, n_patients=20, seed=1, format="fhir", if_missing=True) == fed
    assert patient.stat().st_mtime_ns == stamp
    assert is_generated(out, 1, 20, 1, "fhir", "readmission_30d")
    assert not is_generated(out, 1, 21, 1, "fhir", "readmission_30d")
    generate_federation(out, n_sites=1, n_patients=21, seed=1, format="omop", if_missing=True)
    assert not (out / "site_a" / "fhir").exists() and (out / "site_a" / "omop.duckdb").is_file()
    cfg = yaml.safe_load(fed.read_text())
    assert cfg["sites"][0]["source"] == "omop" and "omop_input" not in cfg["sites"][0]


def test_cli_writes_a_federation_and_reports_each_site(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--sites", "2", "--patients", "30", "--seed", "2", "--format", "omop", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "site_a:" in printed and "site_b:" in printed and "federation.yaml" in printed
    assert main([*args, "--if-missing"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "csv"}, "format must be one of"),
    ({"study": "sepsis"}, "study must be one of"),
    ({"n_sites": 0}, "at least 1 site"),
])
def test_bad_parameters_are_rejected_with_the_valid_choices(tmp_path, kwargs, message):
    params = {"n_sites": 1, "n_patients": 5, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_federation(tmp_path / "bad", **params)
