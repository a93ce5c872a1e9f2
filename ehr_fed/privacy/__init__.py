"""Disclosure control enforced at each site: policy, small-cell suppression, audit log."""

from ehr_fed.privacy.audit import AuditLog
from ehr_fed.privacy.cells import merge_histogram, small_cells, suppress
from ehr_fed.privacy.errors import DisclosureError
from ehr_fed.privacy.policy import PolicyError, PrivacyPolicy

__all__ = [
    "AuditLog",
    "DisclosureError",
    "PolicyError",
    "PrivacyPolicy",
    "merge_histogram",
    "small_cells",
    "suppress",
]
