"""Where the OMOP CDM tables come from: a CSV/Parquet folder, a DuckDB file or PostgreSQL.

A backend lists the CDM tables and their columns (table and column names lower-cased, whatever
case the source uses) and *stages* a table into the reader's DuckDB connection: the columns the
reader needs, all as VARCHAR, plus ``_row`` (1-based row number in the source, used in
quarantine locations). Columns a CDM version lacks are staged as NULL.

PostgreSQL tables are streamed in chunks through SQLAlchemy/psycopg (no DuckDB extension is
needed); file and DuckDB sources are read by DuckDB directly.
"""

from __future__ import annotations

import csv
import gzip
import re
from abc import ABC, abstractmethod
from pathlib import Path

import duckdb
import pyarrow as pa

from ehr_fed.sources.omop.errors import OmopSourceError
from ehr_fed.sources.omop.sql import ident, literal

#: file name endings of table files in a folder, longest first
TABLE_FILE_SUFFIXES: tuple[str, ...] = (".csv.gz", ".csv", ".parquet")
_DUCKDB_MAGIC = b"DUCK"


class OmopBackend(ABC):
    """The CDM tables of one source.

    Attributes
    ----------
    description : str
        What and where the source is, for messages (``CSV folder /data/omop``).
    columns : dict of str to list of str
        Lower-case table name -> its lower-case column names.
    """

    description: str
    columns: dict[str, list[str]]

    def has(self, table: str) -> bool:
        return table in self.columns

    @abstractmethod
    def location(self, table: str) -> str:
        """Where ``table`` is (a file path or ``schema.table``), for messages."""

    @abstractmethod
    def stage(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        columns: list[str],
        target: str,
        *,
        id_filter: tuple[str, str] | None = None,
    ) -> int:
        """Copy ``columns`` of ``table`` into the new DuckDB table ``target`` as VARCHAR.

        Parameters
        ----------
        id_filter : (column, query) or None
            Keep only rows whose integer ``column`` is among the ids returned by ``query``
            (a one-column SQL query on ``con``).

        Returns
        -------
        int
            Number of rows staged.
        """

    def close(self, con: duckdb.DuckDBPyConnection) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds."""


def _select_list(present: list[str], wanted: list[str], alias: str = "src") -> str:
    cols = []
    for c in wanted:
        if c in present:
            cols.append(f"CAST({alias}.{ident(c)} AS VARCHAR) AS {ident(c)}")
        else:
            cols.append(f"CAST(NULL AS VARCHAR) AS {ident(c)}")
    return ", ".join(cols)


class _LazyColumns(dict):
    """Table -> columns, looked up on first use (a folder may hold dozens of unused tables)."""

    def __init__(self, tables, describe) -> None:
        super().__init__()
        self._tables = tables
        self._describe = describe

    def __contains__(self, table: object) -> bool:
        return table in self._tables

    def __missing__(self, table: str) -> list[str]:
        if table not in self._tables:
            raise KeyError(table)
        value = self._describe(table)
        self[table] = value
        return value

    def get(self, table, default=None):
        return self[table] if table in self._tables else default

    def __bool__(self) -> bool:
        return bool(self._tables)


class _DuckDBRelations(OmopBackend):
    """Backends whose tables DuckDB reads itself (files, attached DuckDB databases)."""

    @abstractmethod
    def relation(self, table: str) -> str:
        """SQL ``FROM`` text of ``table``."""

    def stage(self, con, table, columns, target, *, id_filter=None):
        where = ""
        if id_filter is not None:
            col, query = id_filter
            where = (
                f" WHERE TRY_CAST(regexp_replace(trim(CAST(src.{ident(col)} AS VARCHAR)), '\\.0+$', '') "
                f"AS BIGINT) IN ({query})"
            )
        sql = (
            f"CREATE OR REPLACE TABLE {target} AS SELECT row_number() OVER () AS _row, "
            f"{_select_list(self.columns[table], columns)} FROM {self.relation(table)} AS src{where}"
        )
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise OmopSourceError(
                f"cannot read OMOP table {table!r} from {self.location(table)}: {exc}. "
                "Check that the file is a complete CSV (header line, comma separated) or Parquet file."
            ) from exc
        return int(con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0])


class FolderBackend(_DuckDBRelations):
    """A folder of ``<table>.csv``, ``.csv.gz`` or ``.parquet`` files, table names in any case."""

    def __init__(self, con: duckdb.DuckDBPyConnection, folder: Path) -> None:
        self.folder = folder
        self.description = f"OMOP folder {folder}"
        self.files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            name = path.name.lower()
            suffix = next((s for s in TABLE_FILE_SUFFIXES if name.endswith(s)), None)
            if suffix is None or not path.is_file():
                continue
            table = name[: -len(suffix)]
            if table in self.files:
                raise OmopSourceError(
                    f"OMOP folder {folder} holds table {table!r} twice ({self.files[table].name} and "
                    f"{path.name}); keep one file per table"
                )
            self.files[table] = path
        self._con = con
        self.columns = _LazyColumns(self.files, self._describe)

    def _describe(self, table: str) -> list[str]:
        """Column names of a table file (a CSV header is read directly: no type sniffing)."""
        path = self.files[table]
        try:
            if path.name.lower().endswith(".parquet"):
                desc = self._con.execute(f"DESCRIBE SELECT * FROM {self.relation(table)}").fetchall()
                return [row[0].lower() for row in desc]
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
                header = fh.readline()
        except (OSError, UnicodeDecodeError, EOFError, duckdb.Error) as exc:
            raise OmopSourceError(
                f"cannot read the columns of {path}: {exc}. Check that it is a CSV file with a "
                "header line or a Parquet file."
            ) from exc
        delimiter = max(",;\t|", key=header.count)
        return [c.strip().lower() for c in next(csv.reader([header], delimiter=delimiter))]

    def location(self, table: str) -> str:
        path = self.files.get(table)
        return str(path) if path else f"{self.folder}/{table}.csv"

    def relation(self, table: str) -> str:
        path = self.files[table]
        if path.name.lower().endswith(".parquet"):
            return f"read_parquet({literal(str(path))})"
        return f"read_csv({literal(str(path))}, header = true, all_varchar = true)"


class DuckDBFileBackend(_DuckDBRelations):
    """A DuckDB database file holding the CDM tables in one schema (attached read-only)."""

    ALIAS = "_omop_source"

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, schema: str | None) -> None:
        self.path = path
        try:
            con.execute(f"ATTACH {literal(str(path))} AS {self.ALIAS} (READ_ONLY)")
        except duckdb.Error as exc:
            raise OmopSourceError(f"cannot open the DuckDB file {path}: {exc}") from exc
        rows = con.execute(
            "SELECT table_schema, lower(table_name), lower(column_name) FROM information_schema.columns "
            f"WHERE table_catalog = {literal(self.ALIAS)} ORDER BY table_schema, table_name, ordinal_position"
        ).fetchall()
        by_schema: dict[str, dict[str, list[str]]] = {}
        self._names: dict[tuple[str, str], str] = {}
        for sch, table, column in rows:
            by_schema.setdefault(sch, {}).setdefault(table, []).append(column)
        real = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            f"WHERE table_catalog = {literal(self.ALIAS)}"
        ).fetchall()
        for sch, name in real:
            self._names[(sch, name.lower())] = name
        self.schema = _choose_schema(schema, by_schema, f"DuckDB file {path}", default="main")
        self.columns = by_schema.get(self.schema, {})
        self.description = f"DuckDB file {path} (schema {self.schema})"

    def location(self, table: str) -> str:
        return f"{self.path}:{self.schema}.{table}"

    def relation(self, table: str) -> str:
        name = self._names.get((self.schema, table), table)
        return f"{self.ALIAS}.{ident(self.schema)}.{ident(name)}"

    def close(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute(f"DETACH {self.ALIAS}")
        except duckdb.Error:
            pass


def _choose_schema(
    wanted: str | None, by_schema: dict[str, dict[str, list[str]]], where: str, *, default: str
) -> str:
    if wanted is not None:
        if wanted not in by_schema:
            raise OmopSourceError(
                f"{where} has no schema {wanted!r} (schemas with tables: {sorted(by_schema) or 'none'}); "
                "set omop.schema in the site mapping to one of them"
            )
        return wanted
    with_person = [s for s, tables in by_schema.items() if "person" in tables]
    if default in with_person or (not with_person and default in by_schema):
        return default
    if len(with_person) == 1:
        return with_person[0]
    if not with_person:
        return default
    raise OmopSourceError(
        f"{where} has a person table in several schemas {sorted(with_person)}; "
        "set omop.schema in the site mapping to say which one holds the CDM"
    )


class PostgresBackend(OmopBackend):
    """CDM tables in a PostgreSQL schema, streamed into DuckDB in chunks.

    The schema is ``OmopOptions.schema``, else the URL's ``?schema=NAME`` query parameter
    (removed before connecting), else the connection's ``current_schema()`` (so
    ``?options=-csearch_path%3Dcdm`` works too).
    """

    def __init__(self, url: str, schema: str | None, chunk_rows: int) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        self._text = text
        self.chunk_rows = chunk_rows
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy.exc.ArgumentError
            raise OmopSourceError(
                f"{url!r} is not a PostgreSQL URL (postgresql://user@host:port/db): {exc}"
            ) from exc
        query = dict(parsed.query)
        url_schema = query.pop("schema", None)
        if isinstance(url_schema, tuple):
            url_schema = url_schema[-1]
        parsed = parsed.set(drivername="postgresql+psycopg", query=query)
        self.engine = create_engine(parsed, poolclass=NullPool)
        safe = parsed.render_as_string(hide_password=True)
        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT current_schema()")).scalar()
                rows = conn.execute(
                    text(
                        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                        "ORDER BY table_schema, table_name, ordinal_position"
                    )
                ).fetchall()
        except Exception as exc:
            self.engine.dispose()
            raise OmopSourceError(
                f"cannot connect to PostgreSQL at {safe}: {exc}. Check host, port, database, user and "
                "password in the URL, and that the server is running."
            ) from exc
        by_schema: dict[str, dict[str, list[str]]] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._cols: dict[tuple[str, str], dict[str, str]] = {}
        for sch, table, column in rows:
            by_schema.setdefault(sch, {}).setdefault(table.lower(), []).append(column.lower())
            self._names[(sch, table.lower())] = table
            self._cols.setdefault((sch, table.lower()), {})[column.lower()] = column
        wanted = schema or url_schema or None
        if wanted is None and current in by_schema:
            wanted = current
        self.schema = _choose_schema(wanted, by_schema, f"PostgreSQL database {safe}", default="public")
        self.columns = by_schema.get(self.schema, {})
        self.description = f"PostgreSQL {safe} (schema {self.schema})"

    def location(self, table: str) -> str:
        return f"PostgreSQL {self.schema}.{table}"

    def stage(self, con, table, columns, target, *, id_filter=None):
        text = self._text
        present = self._cols[(self.schema, table)]
        select = ", ".join(
            f"CAST({ident(present[c])} AS text) AS {ident(c)}"
            if c in present
            else f"NULL::text AS {ident(c)}"
            for c in columns
        )
        sql = f"SELECT {select} FROM {ident(self.schema)}.{ident(self._names[(self.schema, table)])}"
        params: dict = {}
        if id_filter is not None:
            col, query = id_filter
            ids = [int(r[0]) for r in con.execute(query).fetchall() if r[0] is not None]
            if ids:
                sql += f" WHERE CAST({ident(present[col])} AS numeric) = ANY(:ids)"
                params["ids"] = ids
            else:
                sql += " WHERE false"
        cols = ", ".join(f"{ident(c)} VARCHAR" for c in columns)
        con.execute(f"CREATE OR REPLACE TABLE {target} (_row BIGINT, {cols})")
        schema = pa.schema([("_row", pa.int64())] + [(c, pa.string()) for c in columns])
        n = 0
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=self.chunk_rows).execute(
                    text(sql), params
                )
                for part in result.partitions(self.chunk_rows):
                    arrays = [pa.array(range(n + 1, n + 1 + len(part)), pa.int64())]
                    arrays += [pa.array([row[i] for row in part], pa.string()) for i in range(len(columns))]
                    chunk = pa.Table.from_arrays(arrays, schema=schema)  # noqa: F841 - read by DuckDB
                    con.execute(f"INSERT INTO {target} SELECT * FROM chunk")
                    n += len(part)
        except OmopSourceError:
            raise
        except Exception as exc:
            raise OmopSourceError(f"cannot read {self.location(table)}: {exc}") from exc
        return n

    def close(self, con: duckdb.DuckDBPyConnection) -> None:
        self.engine.dispose()


def is_postgres_url(path: object) -> bool:
    return isinstance(path, str) and re.match(r"^postgres(ql)?(\+\w+)?://", path) is not None


def open_backend(
    con: duckdb.DuckDBPyConnection, path: str | Path, *, schema: str | None, chunk_rows: int
) -> OmopBackend:
    """The backend for ``path``: a ``postgresql://`` URL, a DuckDB file or a folder of table files."""
    if is_postgres_url(path):
        return PostgresBackend(str(path), schema, chunk_rows)
    p = Path(path)
    if p.is_dir():
        backend = FolderBackend(con, p)
        if not backend.columns:
            raise OmopSourceError(
                f"OMOP folder {p} holds no table files; expected files named after the CDM tables "
                f"(person.csv, VISIT_OCCURRENCE.csv.gz, measurement.parquet, ...: {', '.join(TABLE_FILE_SUFFIXES)})"
            )
        return backend
    if p.is_file():
        with p.open("rb") as fh:
            head = fh.read(16)
        if head[8:12] == _DUCKDB_MAGIC:
            return DuckDBFileBackend(con, p, schema)
        raise OmopSourceError(
            f"{p} is not a DuckDB database file; an OMOP input is a DuckDB file, a folder of "
            "CSV/CSV.GZ/Parquet table files, or a postgresql:// URL"
        )
    raise OmopSourceError(
        f"OMOP input {str(path)!r} does not exist; give a DuckDB file, a folder of CSV/Parquet table "
        "files, or a postgresql://user@host:port/db?schema=NAME URL"
    )
