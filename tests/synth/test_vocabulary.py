"""The vocabulary subset shipped with the synthetic OMOP files, against the real OHDSI vocabularies
in ../shared/data, and every code synth writes (FHIR and OMOP) against that subset."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import orjson
import pandas as pd
import pytest

from ehr_fed.cohort import harmonize
from ehr_fed.mapping import load_study
from ehr_fed.mapping.units import canonical_ucum
from ehr_fed.synth.codes import ICD10CM, LOINC, RXNORM, SNOMED, UCUM
from ehr_fed.synth.fhir_writer import RESOURCE_TYPES
from ehr_fed.synth.vocabulary import MAPS_TO, concepts, vocabulary_tables

FIELDS = ("concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id", "standard_concept",
          "concept_code")
SYSTEM_VOCABULARY = {SNOMED: "SNOMED", ICD10CM: "ICD10CM", LOINC: "LOINC", RXNORM: "RxNorm"}


def _csv(path):
    return f"read_csv('{path}', header = true, all_varchar = true)"


@pytest.fixture(scope="module")
def real(shared_data):
    con = duckdb.connect()
    omop = shared_data / "omop"
    con.execute(f"CREATE TABLE eunomia AS SELECT * FROM {_csv(omop / 'synthea27nj_v54' / 'CONCEPT.csv.gz')}")
    con.execute("CREATE TABLE eunomia_rel AS SELECT * FROM "
                f"{_csv(omop / 'synthea27nj_v54' / 'CONCEPT_RELATIONSHIP.csv.gz')}")
    for table in ("concept", "domain", "vocabulary", "concept_class", "relationship", "concept_ancestor"):
        con.execute(f"CREATE TABLE synpuf_{table} AS SELECT * FROM {_csv(omop / 'synpuf10_v50' / f'{table}.csv')}")
    con.execute("CREATE TABLE mimic_co AS SELECT * FROM "
                f"{_csv(omop / 'mimic4demo_v53' / 'condition_occurrence.csv.gz')}")
    yield con
    con.close()


def _row(con, table, concept_id):
    cols = ", ".join(FIELDS) + ", valid_start_date, valid_end_date, invalid_reason"
    return con.execute(f"SELECT {cols} FROM {table} WHERE concept_id = ?", [str(concept_id)]).fetchone()


def _shipped(c):
    return tuple("" if v is None else str(v) for v in (*(getattr(c, f) for f in FIELDS), c.valid_start_date,
                                                       c.valid_end_date, c.invalid_reason))


def test_eunomia_and_synpuf_concepts_are_copied_field_by_field(real):
    shipped = concepts()
    for c in shipped.values():
        if c.source in ("eunomia", "synpuf"):
            row = _row(real, "eunomia" if c.source == "eunomia" else "synpuf_concept", c.concept_id)
            assert row is not None, c
            have = tuple("" if v is None else str(v) for v in row)
            n = len(FIELDS) if c.source == "synpuf" else len(have)
            assert _shipped(c)[:n] == have[:n], c


def test_every_code_the_eunomia_vocabulary_holds_has_its_eunomia_id(real):
    rows = real.execute("SELECT vocabulary_id, concept_code, concept_id FROM eunomia").fetchall()
    eunomia = {(v, code): int(cid) for v, code, cid in rows}
    checked = 0
    for c in concepts().values():
        if (c.vocabulary_id, c.concept_code) in eunomia and c.domain_id != "Metadata":
            assert c.concept_id == eunomia[(c.vocabulary_id, c.concept_code)], c
            assert c.source == "eunomia", c
            checked += 1
    assert checked >= 40


def test_icd10cm_ids_and_maps_are_those_of_the_ohdsi_mimic_etl(real):
    mimic = [c for c in concepts().values() if c.source == "mimic"]
    assert len(mimic) >= 10
    for c in mimic:
        pairs = real.execute(
            "SELECT DISTINCT condition_source_concept_id, condition_concept_id FROM mimic_co "
            "WHERE replace(trim(condition_source_value), '.', '') = ?", [c.concept_code.replace(".", "")]).fetchall()
        assert {p[0] for p in pairs} == {str(c.concept_id)}, c
        assert {p[1] for p in pairs} == {str(MAPS_TO[c.concept_id])}, c


def test_maps_in_the_eunomia_relationships_agree(real):
    found = 0
    for source, target in MAPS_TO.items():
        rows = real.execute("SELECT concept_id_2 FROM eunomia_rel WHERE concept_id_1 = ? AND relationship_id = "
                            "'Maps to'", [str(source)]).fetchall()
        if rows:
            assert {r[0] for r in rows} == {str(target)}, source
            found += 1
    assert found >= 7        # 3030354 -> 46236952 among them


def test_metadata_tables_agree_with_the_synpuf_subset(real):
    tables = vocabulary_tables()
    for table in ("domain", "vocabulary", "concept_class", "relationship"):
        ref = {r[0]: r for r in real.execute(f"SELECT * FROM synpuf_{table}").fetchall()}
        for row in tables[table]:
            if row[0] in ref and int(row[-1]) < 2_000_000_000:
                assert str(row[-1]) == ref[row[0]][-1], (table, row)
    ids = {r[0] for r in tables["concept"]}
    assert {r[-1] for t in ("domain", "vocabulary", "concept_class", "relationship") for r in tables[t]} <= ids
    assert {(r[0], r[1]) for r in tables["concept_ancestor"] if r[2] == 1} <= {
        (r[1], r[0]) for r in tables["concept_relationship"] if r[2] == "Is a"}


def _codings(resource):
    rt = resource["resourceType"]
    if rt == "Patient":
        return [e["extension"][0]["valueCoding"] for e in resource["extension"]]
    if rt == "Encounter":
        return [c for r in resource.get("reasonCode", []) for c in r["coding"]]
    if rt == "MedicationRequest":
        return resource["medicationCodeableConcept"]["coding"]
    return resource["code"]["coding"]


def test_every_fhir_code_is_a_shipped_concept_with_its_vocabulary_name(small_federation):
    by_code = {(c.vocabulary_id, c.concept_code): c for c in concepts().values()}
    units = {c.concept_code: c for c in concepts().values() if c.domain_id == "Unit"}
    seen = set()
    for site in ("site_a", "site_b", "site_c"):
        for rt in RESOURCE_TYPES:
            with gzip.open(small_federation.parent / site / "fhir" / f"{rt}.000.ndjson.gz") as f:
                for line in f:
                    res = orjson.loads(line)
                    for coding in _codings(res):
                        vocab = SYSTEM_VOCABULARY.get(coding["system"])
                        if vocab is None:
                            continue              # OMB race/ethnicity, the laboratory's own codes
                        c = by_code[(vocab, coding["code"])]
                        assert coding["display"] == c.concept_name, coding
                        seen.add(c.concept_id)
                    q = res.get("valueQuantity")
                    if q and q.get("system") == UCUM:
                        assert any(canonical_ucum(code) == q["code"] for code in units), q
    assert {40169216, 40163924, 3030354, 35206882, 201826} <= seen     # fluticasone, metformin ER, ...


def test_every_omop_concept_is_shipped_in_its_domain_and_dates_lie_in_visits(small_federation):
    for site in ("site_a", "site_b", "site_c"):
        con = duckdb.connect(str(small_federation.parent / site / "omop.duckdb"), read_only=True)
        cols = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE column_name LIKE '%concept_id' AND table_name NOT IN ('concept', 'domain', "
                           "'vocabulary', 'concept_class', 'relationship')").fetchall()
        for table, col in cols:
            missing = con.execute(f"SELECT DISTINCT t.{col} FROM {table} t LEFT JOIN concept c ON "
                                  f"c.concept_id = t.{col} WHERE t.{col} IS NOT NULL AND c.concept_id IS NULL"
                                  ).fetchall()
            assert not missing, (site, table, col, missing)
        for table, col, domain in (("condition_occurrence", "condition_concept_id", "Condition"),
                                   ("drug_exposure", "drug_concept_id", "Drug"),
                                   ("measurement", "measurement_concept_id", "Measurement"),
                                   ("measurement", "unit_concept_id", "Unit"),
                                   ("procedure_occurrence", "procedure_concept_id", "Procedure"),
                                   ("person", "race_concept_id", "Race"),
                                   ("visit_occurrence", "admitted_from_concept_id", "Visit")):
            domains = con.execute(f"SELECT DISTINCT c.domain_id FROM {table} t JOIN concept c ON "
                                  f"c.concept_id = t.{col}").fetchall()
            assert domains == [(domain,)], (site, table, col)
        for table, start in (("condition_occurrence", "condition_start_datetime"),
                             ("measurement", "measurement_datetime"), ("drug_exposure", "drug_exposure_start_datetime"),
                             ("procedure_occurrence", "procedure_datetime")):
            outside = con.execute(f"""SELECT count(*) FROM {table} t
                JOIN visit_occurrence v USING (visit_occurrence_id)
                JOIN observation_period o ON o.person_id = t.person_id
                WHERE t.{start} NOT BETWEEN v.visit_start_datetime AND v.visit_end_datetime
                   OR CAST(t.{start} AS DATE) NOT BETWEEN o.observation_period_start_date
                                                     AND o.observation_period_end_date""").fetchone()[0]
            assert outside == 0, (site, table)
        admitted = dict(con.execute("SELECT admitted_from_source_value, any_value(admitted_from_concept_id) "
                                    "FROM visit_occurrence WHERE admitted_from_source_value IS NOT NULL "
                                    "GROUP BY 1").fetchall())
        assert admitted == {"emd": 8870, "psych": 8971}
        con.close()


def test_conditions_are_read_by_source_concept_or_by_standard_descendants(small_federation):
    # site_a codes diagnoses in ICD-10-CM: the OMOP file holds SNOMED CT 4193704 ("Type 2 diabetes
    # mellitus without complication") with ICD-10-CM E11.9 as its source concept
    base = small_federation.parent
    study = load_study(base / "readmission_30d.yaml")
    fhir = harmonize("fhir", base / "site_a" / "fhir", base / "site_a" / "mapping_fhir.yaml", study).table
    expected = fhir["cond_diabetes"].to_numpy()
    assert 0 < expected.sum() < len(expected)
    for only in ({"icd10cm": ["E11"]}, {"omop": [201820]}):
        sets = dict(study.concept_sets)
        sets["diabetes"] = type(sets["diabetes"])(**only)
        variant = study.model_copy(update={"concept_sets": sets})
        omop = harmonize("omop", base / "site_a" / "omop.duckdb", base / "site_a" / "mapping_omop.yaml",
                         variant).table
        assert (omop["cond_diabetes"].to_numpy() == expected).all(), only
    sets = dict(study.concept_sets)
    sets["diabetes"] = type(sets["diabetes"])(snomed=["44054006"])      # standard code only, no descendants
    omop = harmonize("omop", base / "site_a" / "omop.duckdb", base / "site_a" / "mapping_omop.yaml",
                     study.model_copy(update={"concept_sets": sets})).table
    assert omop["cond_diabetes"].sum() == 0


def test_the_generic_ohdsi_site_mapping_reads_a_synthetic_site(small_federation):
    # site_a uses the standard Visit concepts: the shipped mapping of any standard OMOP CDM reads it
    # (person ids from person_id instead of person_source_value, so only person_key differs)
    base = small_federation.parent
    study = base / "readmission_30d.yaml"
    generic = Path(__file__).resolve().parents[2] / "mappings" / "sites" / "omop_default.yaml"
    own = harmonize("omop", base / "site_a" / "omop.duckdb", base / "site_a" / "mapping_omop.yaml", study).table
    other = harmonize("omop", base / "site_a" / "omop.duckdb", generic, study).table
    cols = [c for c in own.columns if c not in ("site_id", "person_key")]
    a = own[cols].sort_values(cols).reset_index(drop=True)
    b = other[cols].sort_values(cols).reset_index(drop=True)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
