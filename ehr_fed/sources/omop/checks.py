"""Row checks written once as (condition, reason, detail) and compiled to SQL ``CASE``s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """A row is rejected with ``reason`` when ``condition`` (SQL) holds.

    ``detail`` is an SQL expression giving the message (a data engineer's words: what is wrong,
    where to look).
    """

    condition: str
    reason: str
    detail: str


def checked_select(inner: str, checks: list[Check]) -> str:
    """``SELECT *, _reason, _detail FROM (inner)``: the first failing check names the reason."""
    if not checks:
        return f"SELECT *, CAST(NULL AS VARCHAR) AS _reason, CAST(NULL AS VARCHAR) AS _detail FROM ({inner})"
    reason = " ".join(f"WHEN {c.condition} THEN '{c.reason}'" for c in checks)
    detail = " ".join(f"WHEN {c.condition} THEN {c.detail}" for c in checks)
    return f"SELECT *, CASE {reason} END AS _reason, CASE {detail} END AS _detail FROM ({inner})"
