"""Quarantine of rejected source records.

Nothing is dropped silently: every record a reader or the mapping rejects is
kept here with the reason, its source location and (when available) the raw
record text, counted by reason and written as JSON lines beside the output.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuarantinedRecord:
    """One rejected record.

    Parameters
    ----------
    reason : str
        Short snake_case reason code (``malformed_json``, ``invalid_resource``,
        ``missing_reference``, ``bad_date``, ``unknown_unit``, ``missing_field``, ...).
    location : str
        Where the record came from (``file:line``, ``file#entry[3]``, ``table:row``).
    resource_type : str
        FHIR resource type or OMOP table name.
    detail : str
        What was wrong, in words a data engineer can act on.
    record : str or None
        The raw record text, when there is one.
    """

    reason: str
    location: str
    resource_type: str
    detail: str
    record: str | None = None


class Quarantine:
    """Collects rejected records; counts them by reason; writes them as JSON lines."""

    def __init__(self) -> None:
        self._records: list[QuarantinedRecord] = []

    def add(
        self,
        reason: str,
        location: str,
        resource_type: str,
        detail: str,
        record: str | None = None,
    ) -> None:
        self._records.append(QuarantinedRecord(reason, location, resource_type, detail, record))

    def extend(self, other: Quarantine) -> None:
        self._records.extend(other._records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(self._records)

    def counts(self) -> dict[str, int]:
        """Number of rejected records by reason code."""
        return dict(sorted(Counter(r.reason for r in self._records).items()))

    def write(self, path: str | Path) -> Path:
        """Write one JSON object per rejected record to ``path`` (always written, possibly empty)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for r in self._records:
                fh.write(
                    json.dumps(
                        {
                            "reason": r.reason,
                            "location": r.location,
                            "resource_type": r.resource_type,
                            "detail": r.detail,
                            "record": r.record,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        return path
