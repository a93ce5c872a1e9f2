"""Transports: in-process (here) and Flower (``ehr_fed.federation.transports.flower``, imported lazily)."""

from ehr_fed.federation.transports.base import SiteFailure, Transport
from ehr_fed.federation.transports.in_process import InProcessTransport

__all__ = ["InProcessTransport", "SiteFailure", "Transport"]
