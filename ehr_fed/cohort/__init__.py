"""Cohorts, labels and features: a site's records become the study's feature table.

>>> from ehr_fed.cohort import harmonize
>>> ft = harmonize("fhir", "site/fhir", "mappings/sites/synthea_fhir.yaml",
...                "mappings/studies/readmission_30d.yaml")                    # doctest: +SKIP
>>> ft.table, ft.summary                                                       # doctest: +SKIP
"""

from ehr_fed.cohort.pipeline import (
    QuarantineThresholdError,
    build_feature_table,
    check_quarantine,
    harmonize,
)
from ehr_fed.cohort.schema import SchemaError, expected_columns, validate_feature_table
from ehr_fed.cohort.table import FeatureTable, person_key, person_salt

__all__ = [
    "FeatureTable",
    "QuarantineThresholdError",
    "SchemaError",
    "build_feature_table",
    "check_quarantine",
    "expected_columns",
    "harmonize",
    "person_key",
    "person_salt",
    "validate_feature_table",
]
