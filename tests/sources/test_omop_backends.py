"""One OMOP CDM through every backend: CSV folder, Parquet folder, DuckDB file and PostgreSQL.

The same synthea27nj extract must give identical record tables whatever holds it; table names
in any case and ids written as floats are accepted.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ehr_fed.sources.omop import OmopSourceError, read_omop
from ehr_fed.sources.records import TABLES

#: the CDM tables the reader reads (as the conftest loads them into PostgreSQL)
PG_TABLES = (
    "person", "death", "visit_occurrence", "visit_detail", "condition_occurrence", "measurement",
    "drug_exposure", "procedure_occurrence", "concept", "concept_ancestor",
)


def snapshot(records) -> dict[str, pd.DataFrame]:
    """Every record table (and concept_ancestor), rows sorted, for comparisons."""
    out = {}
    for name in [*TABLES, "concept_ancestor"]:
        df = records.con.execute(f'SELECT * FROM "{name}"').df()
        out[name] = df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)
    return out


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


@pytest.fixture(scope="module")
def synthea_dir(omop_data) -> Path:
    return omop_data / "synthea27nj_v54"


@pytest.fixture(scope="module")
def synthea_csv(synthea_dir):
    with read_omop(synthea_dir) as records:
        yield snapshot(records), dict(records.source_records)


@pytest.fixture(scope="module")
def synthea_duckdb(synthea_dir, tmp_path_factory) -> Path:
    """The extract as a DuckDB file: typed columns, UPPER-CASE table names, schema ``cdm``."""
    path = tmp_path_factory.mktemp("omop_duckdb") / "synthea27nj.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA cdm")
    for table in PG_TABLES:
        src = synthea_dir / f"{table.upper()}.csv.gz"
        con.execute(f"CREATE TABLE cdm.\"{table.upper()}\" AS SELECT * FROM read_csv('{src}', header = true)")
    con.close()
    return path


def test_duckdb_file_equals_csv_folder(synthea_csv, synthea_duckdb):
    expected, counts = synthea_csv
    with read_omop(synthea_duckdb, {"schema": "cdm"}) as records:
        assert records.source_records == counts
        assert_same(snapshot(records), expected)
    # one schema holds a person table: found without being named
    with read_omop(synthea_duckdb) as records:
        assert records.count("person") == 28


def test_parquet_folder_equals_csv_folder(synthea_csv, synthea_dir, tmp_path):
    expected, _ = synthea_csv
    con = duckdb.connect()
    for table in PG_TABLES:
        src = synthea_dir / f"{table.upper()}.csv.gz"
        con.execute(f"COPY (SELECT * FROM read_csv('{src}', header = true)) TO '{tmp_path / (table + '.parquet')}'")
    con.close()
    with read_omop(tmp_path) as records:
        assert_same(snapshot(records), expected)


@pytest.mark.postgres
def test_postgresql_equals_csv_folder(synthea_csv, postgres_url):
    expected, counts = synthea_csv
    with read_omop(postgres_url, {"chunk_rows": 1000}) as records:   # several chunks per table
        assert records.source_records == counts
        assert_same(snapshot(records), expected)


@pytest.mark.postgres
def test_postgresql_schema_from_options_and_errors(synthea_csv, postgres_url):
    base = postgres_url.split("?")[0]
    with read_omop(base, {"schema": "cdm"}) as records:
        assert records.count("visit") == 1791
    with read_omop(f"{base}?options=-csearch_path%3Dcdm") as records:    # the search path
        assert records.count("person") == 28
    with pytest.raises(OmopSourceError, match=r"has no schema 'nope'.*set omop.schema"):
        read_omop(base, {"schema": "nope"})
    with pytest.raises(OmopSourceError, match="cannot connect to PostgreSQL"):
        read_omop("postgresql://postgres@127.0.0.1:1/postgres")


# --------------------------------------------------------------------------- CSV layouts


def copy_synpuf(src: Path, dst: Path, *, upper: bool = False, gzip_files: bool = False, edit=None) -> Path:
    """Copy the synpuf10 CSV files to ``dst`` (names upper-cased / gzipped; ``edit(table, rows)``)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*.csv"):
        table = path.stem
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if edit is not None:
            rows = edit(table, rows)
            if rows is None:
                continue
        name = (table.upper() if upper else table) + (".csv.gz" if gzip_files else ".csv")
        opener = gzip.open if gzip_files else open
        with opener(dst / name, "wt", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return dst


@pytest.fixture(scope="module")
def synpuf_dir(omop_data) -> Path:
    return omop_data / "synpuf10_v50"


@pytest.fixture(scope="module")
def synpuf_snapshot(synpuf_dir):
    with read_omop(synpuf_dir) as records:
        yield snapshot(records)


def test_upper_case_gzipped_files(synpuf_dir, synpuf_snapshot, tmp_path):
    folder = copy_synpuf(synpuf_dir, tmp_path / "upper", upper=True, gzip_files=True)
    assert (folder / "VISIT_OCCURRENCE.csv.gz").exists()
    with read_omop(folder) as records:
        assert_same(snapshot(records), synpuf_snapshot)


def test_ids_written_as_floats(synpuf_dir, synpuf_snapshot, tmp_path):
    def floats(table, rows):
        header = rows[0]
        idcols = [i for i, c in enumerate(header) if c.endswith("_id")]
        for row in rows[1:]:
            for i in idcols:
                if row[i].lstrip("-").isdigit():
                    row[i] = f"{row[i]}.0"
        return rows

    folder = copy_synpuf(synpuf_dir, tmp_path / "floats", edit=floats)
    assert "88179.0,1780.0,9201.0" in (folder / "visit_occurrence.csv").read_text()
    with read_omop(folder) as records:
        assert_same(snapshot(records), synpuf_snapshot)
        assert records.con.execute("SELECT count(*) FROM visit WHERE class_code = '9201'").fetchall()[0][0] == 6


def test_missing_optional_table_gives_empty_records(synpuf_dir, tmp_path):
    folder = copy_synpuf(synpuf_dir, tmp_path / "nodrug", edit=lambda t, r: None if t == "drug_exposure" else r)
    with read_omop(folder) as records:
        assert records.count("medication") == 0
        assert records.source_records["drug_exposure"] == 0
        assert records.count("condition") == 26


def test_missing_required_table(synpuf_dir, tmp_path):
    folder = copy_synpuf(synpuf_dir, tmp_path / "novisit", edit=lambda t, r: None if t == "visit_occurrence" else r)
    with pytest.raises(OmopSourceError, match=r"has no 'visit_occurrence' table.*needs person and visit_occurrence"):
        read_omop(folder)
    folder = copy_synpuf(synpuf_dir, tmp_path / "noperson", edit=lambda t, r: None if t == "person" else r)
    with pytest.raises(OmopSourceError, match=r"OMOP folder .*noperson has no 'person' table"):
        read_omop(folder)


def test_missing_required_column(synpuf_dir, tmp_path):
    def drop_concept(table, rows):
        if table != "visit_occurrence":
            return rows
        i = rows[0].index("visit_concept_id")
        return [r[:i] + r[i + 1:] for r in rows]

    folder = copy_synpuf(synpuf_dir, tmp_path / "nocol", edit=drop_concept)
    with pytest.raises(OmopSourceError, match=r"'visit_occurrence' at .*visit_occurrence.csv lacks column\(s\) "
                                              r"\['visit_concept_id'\]"):
        read_omop(folder)
    folder = copy_synpuf(synpuf_dir, tmp_path / "nosv",
                         edit=lambda t, r: [x[:11] + x[12:] for x in r] if t == "person" else r)
    with pytest.raises(OmopSourceError, match=r"lacks column\(s\) \['person_source_value'\].*person_id_field"):
        read_omop(folder, {"person_id_field": "person_source_value"})


def test_bad_paths(tmp_path):
    with pytest.raises(OmopSourceError, match="does not exist"):
        read_omop(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OmopSourceError, match="holds no table files"):
        read_omop(tmp_path / "empty")
    (tmp_path / "x.duckdb").write_text("not a database")
    with pytest.raises(OmopSourceError, match="is not a DuckDB database file"):
        read_omop(tmp_path / "x.duckdb")


def test_duplicate_table_files(synpuf_dir, tmp_path):
    folder = copy_synpuf(synpuf_dir, tmp_path / "dup")
    shutil.copy(folder / "person.csv", folder / "Person.csv")
    with pytest.raises(OmopSourceError, match="holds table 'person' twice"):
        read_omop(folder)
