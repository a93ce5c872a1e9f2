"""State shared by the OMOP table builders: staging, counting and quarantining rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from ehr_fed.sources.omop.backends import OmopBackend
from ehr_fed.sources.omop.errors import OmopSourceError
from ehr_fed.sources.omop.options import OmopOptions
from ehr_fed.sources.quarantine import Quarantine

#: DuckDB schema holding the staged source tables while reading (dropped at the end)
STAGE = "_omop_stage"


@dataclass
class Build:
    """One read of an OMOP source into a DuckDB connection."""

    con: duckdb.DuckDBPyConnection
    backend: OmopBackend
    options: OmopOptions
    quarantine: Quarantine = field(default_factory=Quarantine)
    source_records: dict[str, int] = field(default_factory=dict)

    def staged(self, table: str) -> str:
        return f"{STAGE}.{table}"

    def require(self, table: str, columns: list[str], *, why: str = "") -> None:
        """Fail with a clear message when ``table`` or one of ``columns`` is missing."""
        if not self.backend.has(table):
            raise OmopSourceError(
                f"{self.backend.description} has no {table!r} table (looked for "
                f"{self.backend.location(table)}); an OMOP CDM source needs person and visit_occurrence. "
                "Point --input at the folder, DuckDB file or schema holding the CDM tables."
            )
        missing = [c for c in columns if c not in self.backend.columns[table]]
        if missing:
            hint = f" ({why})" if why else ""
            raise OmopSourceError(
                f"OMOP table {table!r} at {self.backend.location(table)} lacks column(s) {missing}{hint}; "
                f"its columns are {self.backend.columns[table]}. Add the column(s) or change the omop: "
                "options of the site mapping."
            )

    def present(self, table: str, columns: list[str]) -> list[str]:
        """Those of ``columns`` that ``table`` has, in order."""
        have = self.backend.columns.get(table, [])
        return [c for c in columns if c in have]

    def stage(self, table: str, columns: list[str], *, id_filter: tuple[str, str] | None = None) -> str:
        """Stage ``columns`` of ``table`` (missing ones as NULL); count its rows."""
        target = self.staged(table)
        wanted = list(dict.fromkeys(columns))
        n = self.backend.stage(self.con, table, wanted, target, id_filter=id_filter)
        if id_filter is None:
            self.source_records[table] = n
        return target

    def quarantine_checked(self, checked: str, table: str) -> int:
        """Move rows of ``checked`` whose ``_reason`` is set to the quarantine.

        ``checked`` has ``_row``, ``_reason`` and ``_detail``; the raw record is the staged row.
        """
        rows = self.con.execute(
            f"SELECT c._row, c._reason, c._detail, CAST(to_json(s) AS VARCHAR) FROM {checked} c "
            f"JOIN {self.staged(table)} s USING (_row) WHERE c._reason IS NOT NULL ORDER BY c._row"
        ).fetchall()
        for row, reason, detail, record in rows:
            self.quarantine.add(reason, f"{table}:{row}", table, detail, record)
        return len(rows)
