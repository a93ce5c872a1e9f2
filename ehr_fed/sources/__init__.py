"""Source adapters: a site's FHIR or OMOP records as DuckDB record tables.

``read_source(kind, path, ...)`` is the one entry point the other stages call; only this
package knows file and database formats (see ``docs/internals.md`` section 1).
"""

from __future__ import annotations

from pathlib import Path

from ehr_fed.sources.quarantine import Quarantine
from ehr_fed.sources.records import TABLES, SourceRecords, create_tables

#: source kinds read_source understands
SOURCE_KINDS = ("fhir", "omop")


def read_source(
    kind: str,
    path: str | Path,
    *,
    options=None,
    known_systems=None,
    strict: bool = False,
    workdir: str | Path | None = None,
    progress: bool | None = None,
) -> SourceRecords:
    """Read a site's source into :class:`SourceRecords`.

    Parameters
    ----------
    kind : {"fhir", "omop"}
        Source kind.
    path : str or Path
        FHIR: a Bundle/NDJSON file or a folder of them. OMOP: a DuckDB file, a folder of
        CSV/Parquet tables, or a ``postgresql://`` URL.
    options : FhirOptions, OmopOptions or dict, optional
        The reader's options (a site mapping's ``fhir:`` / ``omop:`` key).
    known_systems : iterable of str, optional
        FHIR only: code-system URLs the mapping knows (first coding in one of them is taken).
    strict : bool
        FHIR only: validate every resource with fhir.resources.
    workdir : str or Path, optional
        Folder for the DuckDB working database (a temporary one when omitted).
    progress : bool, optional
        Progress bar on stderr; None: only for large inputs.

    Raises
    ------
    ValueError
        When ``kind`` is not one of :data:`SOURCE_KINDS`.
    """
    if kind == "fhir":
        from ehr_fed.sources.fhir import read_fhir

        return read_fhir(
            path, options=options, known_systems=known_systems, strict=strict,
            workdir=workdir, progress=progress,
        )
    if kind == "omop":
        from ehr_fed.sources.omop import read_omop

        return read_omop(
            path, options=options, known_systems=known_systems, strict=strict, workdir=workdir, progress=progress
        )
    raise ValueError(
        f"unknown source kind {kind!r}; expected one of {', '.join(repr(k) for k in SOURCE_KINDS)}"
    )


__all__ = ["SOURCE_KINDS", "TABLES", "Quarantine", "SourceRecords", "create_tables", "read_source"]
