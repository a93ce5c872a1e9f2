"""Input layouts of the FHIR reader give the same record tables; fields and times are right."""

from __future__ import annotations

import pandas as pd
import pytest
from fhir_samples import (
    LOINC,
    RXNORM,
    bundle,
    encounter,
    medication_request,
    observation,
    patient,
    small_site,
    write_json,
    write_ndjson,
)

from ehr_fed.sources import SOURCE_KINDS, read_source
from ehr_fed.sources.fhir import FhirOptions, read_fhir
from ehr_fed.sources.records import TABLES


def tables(records) -> dict[str, pd.DataFrame]:
    out = {}
    for name in TABLES:
        df = records.table(name)
        out[name] = df.sort_values(list(df.columns), ignore_index=True)
    return out


def assert_same_tables(a, b):
    ta, tb = tables(a), tables(b)
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_dtype=True, obj=name)


@pytest.fixture
def ndjson_site(tmp_path):
    return write_ndjson(tmp_path / "ndjson" / "all.ndjson", small_site())


def test_bundle_and_ndjson_give_the_same_tables(tmp_path, ndjson_site):
    write_json(tmp_path / "bundles" / "site.json", bundle(small_site(), urn=True))
    write_json(tmp_path / "collection" / "site.json", bundle(small_site(), kind="collection", urn=False))
    with read_fhir(ndjson_site) as nd, read_fhir(tmp_path / "bundles") as bu, \
            read_fhir(tmp_path / "collection") as co:
        assert nd.count("visit") == 2 and nd.count("measurement") == 2
        assert_same_tables(nd, bu)
        assert_same_tables(nd, co)
        assert nd.source_records == bu.source_records == {
            "Condition": 2, "Encounter": 2, "MedicationRequest": 1, "Observation": 2,
            "Patient": 2, "Procedure": 1,
        }
        # the urn:uuid fullUrls are not the ids: references were resolved through the Bundle
        assert set(bu.table("condition").person_id) == {"p1", "p2"}
        assert set(bu.table("measurement").visit_id) == {"e1", "e2"}


def test_gzip_and_plain_and_recursive_folders(tmp_path, ndjson_site):
    site = small_site()
    write_ndjson(tmp_path / "gz" / "a" / "Patient.ndjson.gz", site[:2])
    write_ndjson(tmp_path / "gz" / "b" / "c" / "rest.000.ndjson.gz", site[2:])
    write_json(tmp_path / "gzb" / "site.json.gz", bundle(site))
    with read_fhir(ndjson_site) as plain, read_fhir(tmp_path / "gz") as gz, read_fhir(tmp_path / "gzb") as gzb:
        assert_same_tables(plain, gz)
        assert_same_tables(plain, gzb)


def test_searchset_and_single_resource_documents(tmp_path, ndjson_site):
    site = small_site()
    write_json(tmp_path / "mixed" / "patients.json", bundle(site[:2], kind="searchset", urn=False))
    for r in site[2:]:
        write_json(tmp_path / "mixed" / f"{r['resourceType']}-{r['id']}.json", r)
    with read_fhir(ndjson_site) as nd, read_fhir(tmp_path / "mixed") as mixed:
        assert_same_tables(nd, mixed)


def test_offsets_become_utc_and_dates_midnight(ndjson_site):
    with read_fhir(ndjson_site) as rec:
        visits = rec.table("visit").set_index("visit_id")
        # 2020-01-01T10:00:00+02:00 -> 08:00 UTC; 2021-03-01T00:30:00-05:00 -> 05:30 UTC
        assert visits.loc["e1", "start_time"] == pd.Timestamp("2020-01-01 08:00:00")
        assert visits.loc["e2", "start_time"] == pd.Timestamp("2021-03-01 05:30:00")
        assert visits.loc["e2", "end_time"] == pd.Timestamp("2021-03-02 00:00:00")
        conditions = rec.table("condition").set_index("person_id")
        assert conditions.loc["p1", "onset_time"] == pd.Timestamp("2020-01-02")
        assert conditions.loc["p2", "onset_time"] == pd.Timestamp("2021-01-01")  # partial date "2021"
        assert rec.table("procedure").time[0] == pd.Timestamp("2020-01-02 14:30:00")
        assert rec.table("measurement").set_index("code").loc["2160-0", "time"] == pd.Timestamp("2020-01-03 08:00")
        person = rec.table("person").set_index("person_id")
        assert pd.Timestamp(person.loc["p2", "birth_date"]) == pd.Timestamp("1961-11-30")
        assert person.loc["p2", "sex"] == "male"
        types = dict(rec.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'visit'"
        ).fetchall())
        assert types["start_time"] == "TIMESTAMP"


def test_known_systems_choose_the_coding(tmp_path):
    local = "http://hospital.example/labs"
    obs = observation(code="CREA")
    obs["code"]["coding"] = [{"system": local, "code": "CREA"}, {"system": LOINC, "code": "2160-0"}]
    path = write_ndjson(tmp_path / "o.ndjson", [patient(), encounter(), obs])
    with read_fhir(path) as rec:
        assert rec.table("measurement")[["system", "code"]].values.tolist() == [[local, "CREA"]]
    with read_fhir(path, known_systems=[LOINC]) as rec:
        assert rec.table("measurement")[["system", "code"]].values.tolist() == [[LOINC, "2160-0"]]


def test_medication_reference_resolved_to_medication(tmp_path):
    med = {"resourceType": "Medication", "id": "med9",
           "code": {"coding": [{"system": RXNORM, "code": "197361"}]}}
    by_ref = medication_request("m1", medicationReference={"reference": "Medication/med9"})
    del by_ref["medicationCodeableConcept"]
    contained = medication_request(
        "m2", contained=[{**med, "id": "x"}], medicationReference={"reference": "#x"}
    )
    del contained["medicationCodeableConcept"]
    # the Medication comes after the request that names it
    path = write_ndjson(tmp_path / "m.ndjson", [patient(), encounter(), by_ref, contained, med])
    with read_fhir(path) as rec:
        meds = rec.table("medication")
        assert meds[["system", "code"]].values.tolist() == [[RXNORM, "197361"]] * 2
        assert set(meds.end_time) == {pd.Timestamp("2020-07-04")}
        assert rec.source_records["Medication"] == 1
    write_json(tmp_path / "b" / "b.json", bundle([patient(), encounter(), by_ref, med]))
    with read_fhir(tmp_path / "b") as rec:
        assert rec.table("medication")[["system", "code"]].values.tolist() == [[RXNORM, "197361"]]


def test_observation_components_are_measurements(tmp_path):
    bp = observation("bp", code="85354-9", value=None)
    del bp["valueQuantity"]
    bp["component"] = [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": {"value": 80, "unit": "mm[Hg]"}},
    ]
    path = write_ndjson(tmp_path / "bp.ndjson", [patient(), encounter(), bp])
    with read_fhir(path) as rec:
        m = rec.table("measurement").set_index("code")
        assert m.loc["8480-6", "value"] == 120.0 and m.loc["8462-4", "value"] == 80.0
        assert m.loc["8480-6", "unit"] == "mm[Hg]"
        assert pd.isna(m.loc["85354-9", "value"])
    with read_fhir(path, options=FhirOptions(observation_components=False)) as rec:
        assert rec.table("measurement").code.tolist() == ["85354-9"]


def test_resource_types_option_limits_the_tables(ndjson_site):
    with read_fhir(ndjson_site, options={"resource_types": ["Patient", "Encounter"]}) as rec:
        assert rec.count("visit") == 2 and rec.count("condition") == 0
        assert rec.source_records["Condition"] == 2  # still counted


def test_workdir_holds_a_duckdb_file(tmp_path, ndjson_site):
    with read_fhir(ndjson_site, workdir=tmp_path / "work") as rec:
        assert rec.database_path == tmp_path / "work" / "fhir_records.duckdb"
        assert rec.database_path.exists()
        assert rec.count("person") == 2
        staging = rec.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '\\_fhir\\_%' ESCAPE '\\'"
        ).fetchone()[0]
        assert staging == 0


def test_large_input_goes_to_a_temporary_database_removed_on_close(ndjson_site, capsys):
    rec = read_fhir(ndjson_site, options={"large_input_bytes": 0})
    folder = rec.database_path.parent
    assert folder.exists() and rec.count("visit") == 2
    rec.close()
    assert not folder.exists()
    # large input: a progress bar on stderr unless progress=False
    assert "reading FHIR" in capsys.readouterr().err
    with read_fhir(ndjson_site, options={"large_input_bytes": 0}, progress=False):
        pass
    assert "reading FHIR" not in capsys.readouterr().err


def test_unknown_kind_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match=r"unknown source kind 'csv'; expected one of 'fhir', 'omop'"):
        read_source("csv", tmp_path)
    assert SOURCE_KINDS == ("fhir", "omop")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_source("fhir", tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no .json, .json.gz, .ndjson or .ndjson.gz files"):
        read_source("fhir", tmp_path)
    with pytest.raises(ValueError, match="is not a .json, .json.gz, .ndjson or .ndjson.gz file"):
        read_source("fhir", tmp_path / "notes.txt")


def test_options_validation():
    assert FhirOptions().condition_date == ["onsetDateTime", "onsetPeriod.start"]
    with pytest.raises(ValueError, match=r"resource_types \['Claim'\] are not read into records"):
        FhirOptions(resource_types=["Patient", "Claim"])
    with pytest.raises(ValueError, match="condition_date"):
        FhirOptions(condition_date=["onsetAge"])
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        FhirOptions(conditon_date=["recordedDate"])
    with pytest.raises(TypeError, match="options must be a FhirOptions or a dict"):
        read_fhir(".", options=3)


def test_ndjson_line_holding_a_bundle(tmp_path, ndjson_site):
    path = write_ndjson(tmp_path / "b" / "bundles.ndjson", [bundle(small_site()[:5]), bundle(small_site()[5:])])
    with read_fhir(ndjson_site) as nd, read_fhir(path, workdir=tmp_path / "w") as bu:
        assert_same_tables(nd, bu)
        assert bu.con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0] is True
