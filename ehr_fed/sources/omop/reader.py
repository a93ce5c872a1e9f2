"""``read_omop``: an OMOP CDM source -> :class:`~ehr_fed.sources.records.SourceRecords`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import duckdb

from ehr_fed.sources.omop.backends import open_backend
from ehr_fed.sources.omop.build import STAGE, Build
from ehr_fed.sources.omop.clinical import build_clinical, stage_clinical
from ehr_fed.sources.omop.errors import OmopSourceError
from ehr_fed.sources.omop.options import CLINICAL_TABLES, OmopOptions
from ehr_fed.sources.omop.person import build_person
from ehr_fed.sources.omop.sql import literal
from ehr_fed.sources.omop.visit import build_visit
from ehr_fed.sources.omop.vocabulary import stage_vocabulary
from ehr_fed.sources.records import SourceRecords, create_tables

ProgressHook = Callable[[str, int, int], Any]


def _progress_hook(progress: Any, total: int) -> tuple[ProgressHook, Callable[[], None]]:
    """A ``(step, done, total)`` callback and a closer, from ``progress`` (None, bool or callable)."""
    if callable(progress):
        return progress, lambda: None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="omop", unit="table")

        def hook(step: str, done: int, total: int) -> None:
            bar.set_postfix_str(step)
            bar.update(done - bar.n)

        return hook, bar.close
    return (lambda step, done, total: None), lambda: None


def read_omop(
    path: str | Path,
    options: OmopOptions | dict | None = None,
    *,
    known_systems: Iterable[str] | None = None,
    strict: bool = False,
    workdir: str | Path | None = None,
    progress: Any = None,
) -> SourceRecords:
    """Read an OMOP CDM source into the record tables of ``docs/internals.md`` section 1.

    Parameters
    ----------
    path : str or Path
        A DuckDB database file; a folder of ``<table>.csv``, ``.csv.gz`` or ``.parquet`` files
        (table names in any case); or a ``postgresql://user:pw@host:port/db?schema=cdm`` URL
        (schema: ``options.schema``, else ``?schema=``, else the connection's search path).
    options : OmopOptions or dict, optional
        Reader options (the ``omop:`` key of a site mapping). Default: standard OMOP.
    known_systems : iterable of str, optional
        Accepted for the common reader signature and not used: an OMOP record carries one code.
    strict : bool
        Stop with :class:`~ehr_fed.sources.omop.errors.OmopSourceError` when any row is
        quarantined, instead of reading on.
    workdir : str or Path, optional
        Directory for the DuckDB database holding the records (and for spilling); default: memory.
    progress : bool or callable, optional
        ``True`` shows a progress bar; a callable is called as ``progress(step, done, total)``.

    Returns
    -------
    SourceRecords
        ``kind="omop"``; ``source_records`` counts the rows of each OMOP table read
        (``person``, ``death``, ``visit_occurrence``, ``condition_occurrence``, ``measurement``,
        ``drug_exposure``, ``procedure_occurrence``; 0 for an absent optional table).

    Raises
    ------
    OmopSourceError
        The path is not an OMOP source, or a required table (``person``, ``visit_occurrence``)
        or column is missing; the message names the file or table and what to do.
    """
    if options is None:
        options = OmopOptions()
    elif isinstance(options, dict):
        options = OmopOptions.model_validate(options)
    con, database_path = _connect(options, workdir)
    try:
        create_tables(con)
        con.execute(f"CREATE SCHEMA {STAGE}")
        backend = open_backend(con, path, schema=options.db_schema, chunk_rows=options.chunk_rows)
        b = Build(con=con, backend=backend, options=options)
        try:
            _read_tables(b, progress)
        finally:
            backend.close(con)
        con.execute(f"DROP SCHEMA {STAGE} CASCADE")
        if strict and len(b.quarantine):
            first = next(iter(b.quarantine))
            raise OmopSourceError(
                f"strict mode: {len(b.quarantine)} OMOP rows rejected {b.quarantine.counts()}, first at "
                f"{first.location}: {first.detail}. Fix the source or read without --strict to quarantine them."
            )
    except BaseException:
        con.close()
        if database_path is not None:
            database_path.unlink(missing_ok=True)
        raise
    return SourceRecords(
        con,
        kind="omop",
        quarantine=b.quarantine,
        source_records=b.source_records,
        database_path=database_path,
    )


def _connect(
    options: OmopOptions, workdir: str | Path | None
) -> tuple[duckdb.DuckDBPyConnection, Path | None]:
    """The records' DuckDB connection: a new file in ``workdir``, else in memory."""
    database_path = None
    if workdir is not None:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="omop-records-", suffix=".duckdb", dir=wd)
        os.close(fd)
        database_path = Path(name)
        database_path.unlink()  # DuckDB creates the file itself
    con = duckdb.connect(str(database_path) if database_path else ":memory:")
    try:
        con.execute(f"SET memory_limit = {literal(options.memory_limit)}")
        if workdir is not None:
            con.execute(f"SET temp_directory = {literal(str(Path(workdir).resolve()))}")
    except BaseException:
        con.close()
        raise
    return con, database_path


def _read_tables(b: Build, progress: Any) -> None:
    """Person, visits, then the clinical tables with the vocabulary subset they use."""
    steps = ["person", "visit_occurrence", *CLINICAL_TABLES, "vocabulary"]
    hook, close_bar = _progress_hook(progress, len(steps))
    try:
        build_person(b)
        hook("person", 1, len(steps))
        build_visit(b)
        hook("visit_occurrence", 2, len(steps))
        staged = {}
        for i, table in enumerate(CLINICAL_TABLES, start=3):
            stg = stage_clinical(b, table)
            if stg is not None:
                staged[table] = stg
            hook(table, i, len(steps))
        stage_vocabulary(b, staged)
        for table in CLINICAL_TABLES:
            build_clinical(b, table, staged.get(table))
        hook("vocabulary", len(steps), len(steps))
    finally:
        close_bar()
