"""Disclosure control enforced at each site: policy, small-cell suppression, audit log, differential privacy."""

from ehr_fed.privacy.audit import AuditLog
from ehr_fed.privacy.budget import BudgetLedger
from ehr_fed.privacy.cells import merge_histogram, small_cells, suppress
from ehr_fed.privacy.dp import DPConfig, DPError, ReleasePlan, epsilon_spent, rho_for_epsilon
from ehr_fed.privacy.errors import DisclosureError
from ehr_fed.privacy.policy import PolicyError, PrivacyPolicy

__all__ = [
    "AuditLog",
    "BudgetLedger",
    "DPConfig",
    "DPError",
    "DisclosureError",
    "PolicyError",
    "PrivacyPolicy",
    "ReleasePlan",
    "epsilon_spent",
    "merge_histogram",
    "rho_for_epsilon",
    "small_cells",
    "suppress",
]
