"""SQL fragments shared by the OMOP table builders.

Every source table is first staged as VARCHAR columns (see :mod:`.backends`), so the same
expressions parse CSV text, DuckDB/Parquet values and PostgreSQL values alike.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def text(expr: str) -> str:
    """Trimmed text, NULL when empty."""
    return f"NULLIF(trim({expr}), '')"


def norm_id(expr: str) -> str:
    """An id as text, with a float spelling normalised (``'9201.0'`` -> ``'9201'``)."""
    return f"NULLIF(regexp_replace(trim({expr}), '\\.0+$', ''), '')"


def bigint(expr: str) -> str:
    """An id as BIGINT (NULL when absent or not an integer)."""
    return f"TRY_CAST({norm_id(expr)} AS BIGINT)"


def timestamp(expr: str) -> str:
    """A date or datetime as TIMESTAMP (a date becomes midnight; NULL when unparseable)."""
    return f"TRY_CAST({text(expr)} AS TIMESTAMP)"


def bad_timestamp(expr: str) -> str:
    """True when ``expr`` holds text that is not a date or datetime."""
    return f"({text(expr)} IS NOT NULL AND {timestamp(expr)} IS NULL)"


def first_timestamp(columns: list[str], alias: str = "s") -> str:
    """The first parseable of ``columns`` (already known to exist), or NULL."""
    if not columns:
        return "CAST(NULL AS TIMESTAMP)"
    parts = [timestamp(f"{alias}.{ident(c)}") for c in columns]
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def any_bad_timestamp(columns: list[str], alias: str = "s") -> str:
    """True when one of ``columns`` holds an unparseable date."""
    if not columns:
        return "false"
    return "(" + " OR ".join(bad_timestamp(f"{alias}.{ident(c)}") for c in columns) + ")"
