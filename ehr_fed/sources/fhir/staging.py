"""Staging tables: extracted rows are buffered, turned into Arrow batches and appended to DuckDB.

Each record table has a staging twin ``_fhir_<table>`` with the same columns plus the row's
source (``_src``: file index, ``_pos``: line or entry index), so that checks made after reading
(a subject Patient missing from the source, an unresolved medicationReference) can quarantine
the offending records with their location.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from ehr_fed.sources.records import TABLES

_ARROW = {
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
}

#: extra staging columns, per table, before ``_src, _pos``
EXTRA: dict[str, dict[str, str]] = {
    "person": {},
    "visit": {},
    "condition": {"_onset_fallback": "TIMESTAMP"},
    "measurement": {},
    "medication": {"_med_ref": "VARCHAR"},
    "procedure": {},
}
SOURCE_COLUMNS = {"_src": "INTEGER", "_pos": "BIGINT"}
#: Medication resources, to resolve MedicationRequest.medicationReference
MED_CODES = {"med_id": "VARCHAR", "system": "VARCHAR", "code": "VARCHAR"}


def staging_columns(table: str) -> dict[str, str]:
    if table == "_med_codes":
        return dict(MED_CODES)
    return {**TABLES[table], **EXTRA[table], **SOURCE_COLUMNS}


def staging_name(table: str) -> str:
    return f"_fhir_{table}"


def create_staging(con: duckdb.DuckDBPyConnection) -> None:
    for table in [*TABLES, "_med_codes"]:
        cols = ", ".join(f'"{c}" {t}' for c, t in staging_columns(table).items())
        con.execute(f'CREATE OR REPLACE TABLE "{staging_name(table)}" ({cols})')


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    for table in [*TABLES, "_med_codes"]:
        con.execute(f'DROP TABLE IF EXISTS "{staging_name(table)}"')


class StagingWriter:
    """Row buffers per staging table, flushed to DuckDB as Arrow record batches.

    Rows are tuples in :func:`staging_columns` order. At most ``batch_rows`` rows per table
    are held in memory.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, batch_rows: int = 50_000) -> None:
        self.con = con
        self.batch_rows = batch_rows
        self.rows: dict[str, list[tuple]] = {t: [] for t in [*TABLES, "_med_codes"]}
        self._schemas = {
            t: pa.schema([(c, _ARROW[ty]) for c, ty in staging_columns(t).items()]) for t in self.rows
        }

    def append(self, table: str, row: tuple) -> None:
        buf = self.rows[table]
        buf.append(row)
        if len(buf) >= self.batch_rows:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for t in [table] if table else list(self.rows):
            buf = self.rows[t]
            if not buf:
                continue
            schema = self._schemas[t]
            columns = list(zip(*buf, strict=True))
            batch = pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
            )
            self.rows[t] = []
            self.con.register("_fhir_batch", batch)
            try:
                self.con.execute(f'INSERT INTO "{staging_name(t)}" SELECT * FROM _fhir_batch')
            finally:
                self.con.unregister("_fhir_batch")
