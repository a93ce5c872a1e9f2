"""The records a source adapter hands to the mapping stage.

A :class:`SourceRecords` is a DuckDB connection holding the six tables below,
in the site's local codes (see ``docs/internals.md``). Readers fill them; the
mapping and cohort stages query them with SQL, so a site's data never has to
fit in memory at once.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ehr_fed.sources.quarantine import Quarantine

#: the tables every adapter fills, with their columns and DuckDB types
TABLES: dict[str, dict[str, str]] = {
    "person": {
        "person_id": "VARCHAR",
        "birth_date": "DATE",
        "sex": "VARCHAR",
        "death_time": "TIMESTAMP",
    },
    "visit": {
        "visit_id": "VARCHAR",
        "person_id": "VARCHAR",
        "start_time": "TIMESTAMP",
        "end_time": "TIMESTAMP",
        "class_system": "VARCHAR",
        "class_code": "VARCHAR",
        "admit_source": "VARCHAR",
        "discharge_disposition": "VARCHAR",
        "priority": "VARCHAR",
        "part_of": "VARCHAR",
    },
    "condition": {
        "person_id": "VARCHAR",
        "visit_id": "VARCHAR",
        "onset_time": "TIMESTAMP",
        "system": "VARCHAR",
        "code": "VARCHAR",
        "concept_id": "BIGINT",
    },
    "measurement": {
        "person_id": "VARCHAR",
        "visit_id": "VARCHAR",
        "time": "TIMESTAMP",
        "system": "VARCHAR",
        "code": "VARCHAR",
        "concept_id": "BIGINT",
        "value": "DOUBLE",
        "unit": "VARCHAR",
    },
    "medication": {
        "person_id": "VARCHAR",
        "visit_id": "VARCHAR",
        "start_time": "TIMESTAMP",
        "end_time": "TIMESTAMP",
        "system": "VARCHAR",
        "code": "VARCHAR",
        "concept_id": "BIGINT",
        "status": "VARCHAR",
    },
    "procedure": {
        "person_id": "VARCHAR",
        "visit_id": "VARCHAR",
        "time": "TIMESTAMP",
        "system": "VARCHAR",
        "code": "VARCHAR",
        "concept_id": "BIGINT",
    },
}


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the empty record tables in ``con`` (quoted names: ``procedure`` is a keyword)."""
    for name, columns in TABLES.items():
        cols = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" ({cols})')


class SourceRecords:
    """A site's records in local codes, held in DuckDB.

    Attributes
    ----------
    con : duckdb.DuckDBPyConnection
        Connection holding the tables of :data:`TABLES`.
    quarantine : Quarantine
        Records rejected while reading.
    source_records : dict of str to int
        Records read per resource type or OMOP table.
    kind : str
        ``"fhir"`` or ``"omop"``.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        kind: str,
        quarantine: Quarantine | None = None,
        source_records: dict[str, int] | None = None,
        database_path: Path | None = None,
    ) -> None:
        self.con = con
        self.kind = kind
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self.source_records = dict(source_records or {})
        self.database_path = database_path
        #: a ``tempfile.TemporaryDirectory`` holding the database, removed on close()
        self._tempdir = None

    def table(self, name: str):
        """The table ``name`` as a pandas DataFrame (for small sources and tests)."""
        if name not in TABLES:
            raise KeyError(f"unknown record table {name!r}; expected one of {sorted(TABLES)}")
        return self.con.execute(f'SELECT * FROM "{name}"').df()

    def count(self, name: str) -> int:
        return int(self.con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0])

    def close(self) -> None:
        self.con.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> SourceRecords:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
