"""The federation runtime: coordinator, sites, protocol messages, transports, key ceremony.

Contract (docs/internals.md section 5)::

    from ehr_fed.federation import Federation, site_task, SiteContext
    fed = Federation.in_process({"site_a": df_a, ...}, encrypted=True, key_bits=2048)
    fed.site_ids; fed.query(task, params); fed.secure_sum(task, params, layout)
"""

from ehr_fed.federation.coordinator import Federation, FederationError
from ehr_fed.federation.keys import CoordinatorKeys, KeyCeremonyError, SiteKeys, run_ceremony
from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.payload import PayloadTypeError
from ehr_fed.federation.results import QueryResult, SecureSumResult
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.tasks import SiteContext, UnknownTaskError, get_task, registered_tasks, site_task
from ehr_fed.federation.transports.base import SiteFailure, Transport
from ehr_fed.privacy import DisclosureError, PrivacyPolicy

__all__ = [
    "CoordinatorKeys", "DisclosureError", "Federation", "FederationError", "KeyCeremonyError",
    "PayloadTypeError", "PrivacyPolicy", "ProtocolError", "QueryResult", "Reply", "SecureSumResult",
    "SiteContext", "SiteFailure", "SiteKeys", "SiteNode", "TaskMessage", "Transport", "UnknownTaskError",
    "get_task", "registered_tasks", "run_ceremony", "site_task",
]
