"""Federated evaluation: discrimination and calibration from aggregates, per-site and external validation,
local-only and LACE baselines, reports.

>>> from ehr_fed.evaluation import evaluate
>>> result = evaluate(fed, model)                      # doctest: +SKIP
>>> result.to_frame(); result.plot_roc(); result.plot_calibration()   # doctest: +SKIP

Importing this package registers the ``evaluation.*`` site tasks (:mod:`ehr_fed.evaluation.tasks`).
"""

from ehr_fed.evaluation import tasks as _tasks  # noqa: F401  (registers the evaluation.* site tasks)
from ehr_fed.evaluation.external import (
    SubsetTransport,
    compare_local_only,
    leave_one_site_out,
    subset_federation,
)
from ehr_fed.evaluation.federated import EvaluationError, evaluate, lace_baseline, site_table
from ehr_fed.evaluation.modeljson import model_from_json, model_to_json
from ehr_fed.evaluation.result import EvaluationResult

__all__ = [
    "EvaluationError", "EvaluationResult", "SubsetTransport", "compare_local_only", "evaluate",
    "lace_baseline", "leave_one_site_out", "model_from_json", "model_to_json", "site_table",
    "subset_federation",
]
