"""The transport interface: how a coordinator reaches its sites.

A transport delivers one :class:`~ehr_fed.federation.messages.TaskMessage` per site and collects the
replies. It does not interpret messages; the coordinator checks replies (round, nonce, study, site) and
the sites enforce their policies. Implementations: :class:`InProcessTransport` (threads or worker
processes) and the Flower transport (``ehr_fed.federation.transports.flower``).

Messages convert to plain dicts (``to_dict``/``from_dict``) or flat dicts of leaves
(``to_flat``/``from_flat``: numpy arrays, bytes, str, int, float, bool, None) for record-based wires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ehr_fed.federation.messages import Reply, TaskMessage

FAILURE_KINDS = ("timeout", "unreachable", "transport_error")


@dataclass(frozen=True)
class SiteFailure:
    """A site that did not answer: ``kind`` in :data:`FAILURE_KINDS` (or a site error kind), ``detail``."""

    site_id: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.site_id} ({self.kind}: {self.detail})"


@runtime_checkable
class Transport(Protocol):
    """What the coordinator needs from a transport."""

    def site_ids(self) -> list[str]:
        """The ids of the sites this transport reaches, in a stable order."""
        ...

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        """Deliver ``messages[site_id]`` to each site; wait at most ``timeout`` seconds in total.

        Returns one entry per site in ``messages``: the site's :class:`Reply` (possibly an error reply)
        or a :class:`SiteFailure` when it timed out or could not be reached. Never raises for one site's
        failure.
        """
        ...

    def close(self) -> None:
        """Release connections / workers."""
        ...
