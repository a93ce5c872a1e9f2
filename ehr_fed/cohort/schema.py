"""The declared schema of a feature table, and its check.

Columns, in order: ``site_id`` (str), ``person_key`` (str), ``index_time``
(datetime64[ns]), ``label`` (int8 0/1), then the study's features in study order,
all float64 (NaN = missing).
"""

from __future__ import annotations

import difflib

import pandas as pd

from ehr_fed.mapping.study import StudySpec

KEY_COLUMNS = ("site_id", "person_key", "index_time", "label")


class SchemaError(ValueError):
    """A feature table does not match its study's schema (the message holds a column diff)."""


def expected_columns(study: StudySpec) -> list[str]:
    """Column names of ``study``'s feature table, in order."""
    return [*KEY_COLUMNS, *study.feature_names]


def _dtype_problem(name: str, dtype) -> str | None:
    if name in ("site_id", "person_key"):
        ok = pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
        want = "str"
    elif name == "index_time":
        ok, want = str(dtype) == "datetime64[ns]", "datetime64[ns]"
    elif name == "label":
        ok, want = str(dtype) == "int8", "int8"
    else:
        ok, want = str(dtype) == "float64", "float64"
    return None if ok else f"column {name!r} has dtype {dtype}, expected {want}"


def validate_feature_table(df: pd.DataFrame, study: StudySpec) -> pd.DataFrame:
    """Check ``df`` against ``study``'s schema; return it unchanged.

    Raises
    ------
    SchemaError
        When the columns differ (a difflib diff: ``-`` expected but missing, ``+`` unexpected),
        a dtype is wrong, or a label is not 0/1.
    """
    want, got = expected_columns(study), [str(c) for c in df.columns]
    if want != got:
        diff = "\n".join(difflib.unified_diff(want, got, fromfile=f"study {study.study_id}",
                                              tofile="feature table", lineterm="", n=1))
        raise SchemaError(
            f"feature table columns do not match study {study.study_id!r} "
            f"(expected {len(want)}, got {len(got)}):\n{diff}\n"
            "Harmonize this site again with the same study spec version as the other sites."
        )
    problems = [p for name in want if (p := _dtype_problem(name, df[name].dtype))]
    if "label" in df and len(df) and not df["label"].isin([0, 1]).all():
        problems.append("column 'label' holds values other than 0 and 1")
    if problems:
        raise SchemaError(f"feature table does not match study {study.study_id!r}: " + "; ".join(problems))
    return df
