"""Federated descriptive statistics, through ``Federation.secure_sum`` and the sites' policy.

>>> from ehr_fed.stats import describe, table_one, federated_standardization, federated_bin_edges
"""

from ehr_fed.stats import tasks as _tasks  # noqa: F401  (registers the stats.* site tasks)
from ehr_fed.stats.describe import describe, describe_by_site, missingness, table_one
from ehr_fed.stats.federated import (
    Histogram,
    coarse_grid,
    federated_bin_edges,
    federated_standardization,
    fine_histograms,
    histogram,
    moments,
    per_site,
    quantiles,
    robust_range,
    site_counts,
)

__all__ = [
    "Histogram", "coarse_grid", "describe", "describe_by_site", "federated_bin_edges",
    "federated_standardization", "fine_histograms", "histogram", "missingness", "moments", "per_site",
    "quantiles", "robust_range", "site_counts", "table_one",
]
