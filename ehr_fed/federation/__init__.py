"""The federation runtime: coordinator, sites, protocol messages, transports, key ceremony.

Contract (docs/internals.md section 5)::

    from ehr_fed.federation import Federation, site_task, SiteContext
    fed = Federation.in_process({"site_a": df_a, ...}, encrypted=True, key_bits=2048)
    fed.site_ids; fed.query(task, params); fed.secure_sum(task, params, layout)

Names are imported on first use, so a light process (a Flower ClientApp that only relays messages to
the site's service) does not pay for pandas, the crypto engine or the models.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Federation": "coordinator", "FederationError": "coordinator",
    "CoordinatorKeys": "keys", "KeyCeremonyError": "keys", "SiteKeys": "keys", "run_ceremony": "keys",
    "ProtocolError": "messages", "Reply": "messages", "TaskMessage": "messages",
    "PayloadTypeError": "payload",
    "QueryResult": "results", "SecureSumResult": "results",
    "SiteNode": "site",
    "SiteContext": "tasks", "UnknownTaskError": "tasks", "get_task": "tasks",
    "registered_tasks": "tasks", "site_task": "tasks",
    "SiteFailure": "transports.base", "Transport": "transports.base",
}
_PRIVACY = ("DisclosureError", "PrivacyPolicy")

__all__ = sorted([*_EXPORTS, *_PRIVACY])


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"ehr_fed.federation.{_EXPORTS[name]}")
        return getattr(module, name)
    if name in _PRIVACY:
        return getattr(importlib.import_module("ehr_fed.privacy"), name)
    raise AttributeError(f"module 'ehr_fed.federation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
