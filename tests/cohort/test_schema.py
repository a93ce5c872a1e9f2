"""The declared schema of a feature table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr_fed.cohort import SchemaError, expected_columns, validate_feature_table


def _table(study) -> pd.DataFrame:
    df = pd.DataFrame({"site_id": ["a"], "person_key": ["k"], "index_time": pd.to_datetime(["2020-01-01"]).astype("datetime64[ns]"),
                       "label": np.array([1], dtype=np.int8)})
    for name in study.feature_names:
        df[name] = np.nan
    return df


def test_valid_table_passes(readmission):
    df = _table(readmission)
    assert validate_feature_table(df, readmission) is df
    assert list(df.columns) == expected_columns(readmission)


def test_column_diff(readmission):
    df = _table(readmission).drop(columns=["charlson"]).rename(columns={"lace": "lace_score"})
    with pytest.raises(SchemaError, match=r"(?s)expected 24, got 23.*-charlson.*-lace\n\+lace_score"):
        validate_feature_table(df, readmission)


def test_dtypes_and_labels(readmission):
    df = _table(readmission)
    df["age"] = df["age"].astype("float32")
    df["label"] = np.array([2], dtype=np.int8)
    with pytest.raises(SchemaError, match=r"column 'age' has dtype float32, expected float64; "
                                          r"column 'label' holds values other than 0 and 1"):
        validate_feature_table(df, readmission)
