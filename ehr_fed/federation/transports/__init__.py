"""Transports: how a coordinator reaches its sites (in-process, Flower)."""

from __future__ import annotations

import importlib

_EXPORTS = {"SiteFailure": "base", "Transport": "base", "InProcessTransport": "in_process"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ehr_fed.federation.transports.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ehr_fed.federation.transports' has no attribute {name!r}")
