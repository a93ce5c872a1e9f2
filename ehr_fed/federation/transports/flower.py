"""The Flower transport: ehr-fed's protocol over a Flower SuperLink.

Deployment (see ``docs/deployment.md``): the coordinator runs a Flower SuperLink with SuperNode
authentication; every hospital runs a Flower SuperNode with ``--isolation process`` that connects
*outbound* to it, its own long-lived ClientApp
(:mod:`~ehr_fed.federation.transports.flower_clientapp`, which runs only the FAB of the site's
installed ehr-fed) and its site service (:mod:`~ehr_fed.federation.transports.flower_site`, which alone
holds the site's data and keys). A federated computation is a Flower run of ehr-fed's app:

- :data:`serverapp` connects back to the coordinator's process (:class:`FlowerRelayTransport`) and
  carries out its requests on the Flower ``Grid`` through :class:`GridTransport`;
- every site answers two message types: ``query.ehrfed_identify`` (the site signs, with its ceremony
  Ed25519 key, that this SuperNode is that site; the coordinator checks the signature) and
  ``query.ehrfed`` (one ehr-fed :class:`~ehr_fed.federation.messages.TaskMessage`);
- :data:`clientapp`, the FAB's ClientApp component, refuses to run: ehr-fed's site code runs only in
  the site's own processes, never in a process Flower starts from a FAB.

A message travels as one :mod:`~ehr_fed.federation.transports.flower_wire` blob (a ``bytes`` value of a
``ConfigRecord``; a chunked uint8 ``Array`` above 4 MB): Flower moves three objects per message whatever
its payload, where one object per array cost dozens of fetches per boosting message.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.transports import flower_wire as wire
from ehr_fed.federation.transports.base import SiteFailure

log = logging.getLogger(__name__)

QUERY = "query.ehrfed"
IDENTIFY = "query.ehrfed_identify"
_BLOB = "ehrfed"


class SiteIdentityError(RuntimeError):
    """A SuperNode's claim to be a site could not be verified."""


# -- records ----------------------------------------------------------------------------------------
#: blobs up to this size travel as one ConfigRecord value (3 Flower objects per message); larger ones
#: as a uint8 Array, which Flower splits into chunks of 5 MB
_INLINE_MAX = 4 * 1024 * 1024


def blob_record(blob: bytes) -> RecordDict:
    """A wire blob as a Flower ``RecordDict`` (one bytes value, or one uint8 array when large)."""
    if len(blob) <= _INLINE_MAX:
        return RecordDict({_BLOB: ConfigRecord({"m": blob})})
    return RecordDict({_BLOB: ArrayRecord({"m": Array.from_numpy_ndarray(np.frombuffer(blob, dtype=np.uint8))})})


def blob_of(content: RecordDict) -> bytes:
    """The wire blob of a record made by :func:`blob_record`."""
    try:
        value = content[_BLOB]["m"]
    except (KeyError, TypeError):
        raise ProtocolError("Flower message without the ehr-fed record") from None
    if isinstance(value, bytes):
        return value
    if isinstance(value, Array):
        return value.numpy().tobytes()
    raise ProtocolError(f"the ehr-fed record holds a {type(value).__name__}, not bytes")


def config_record(values: Mapping[str, Any]) -> RecordDict:
    return RecordDict({"config": ConfigRecord(dict(values))})


def to_recorddict(flat: Mapping[str, Any]) -> RecordDict:
    """A flat ehr-fed message (``{path: leaf}``) as a Flower ``RecordDict``."""
    return blob_record(wire.pack(flat))


def from_recorddict(content: RecordDict) -> dict[str, Any]:
    """Inverse of :func:`to_recorddict`."""
    try:
        return wire.unpack(blob_of(content))
    except wire.WireError as exc:
        raise ProtocolError(f"malformed ehr-fed record: {exc}") from None


# -- coordinator side --------------------------------------------------------------------------------
Verifier = Callable[[str, int, str, bytes], bool]
#: seconds between the ServerApp's pulls for replies: each pull is one request that the SuperLink
#: serves (a few ms of its CPU), so a shorter poll buys latency with the SuperLink's CPU
REPLY_POLL = 0.03


def bundle_verifier(bundles: Mapping[str, Any]) -> Verifier:
    """Check identify signatures against the sites' ceremony keys (``CoordinatorKeys.sites``)."""
    from ehr_fed.federation.transports.flower_site import identify_statement

    def verify(site_id: str, node_id: int, challenge: str, signature: bytes) -> bool:
        bundle = bundles.get(site_id)
        return bundle is not None and bundle.verify(signature, identify_statement(site_id, node_id, challenge))

    return verify


class GridTransport:
    """:class:`~ehr_fed.federation.transports.base.Transport` over a Flower ``Grid``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
    expected_sites : int, optional
        Wait (up to ``connect_timeout``) until this many sites have identified themselves.
    verify : callable, optional
        ``verify(site_id, node_id, challenge, signature) -> bool`` (see :func:`bundle_verifier`). A
        SuperNode whose signature fails is refused (logged, listed in :attr:`refused`) and the
        federation goes on with the nodes that proved who they are. Without it, claims are taken as
        they come (plaintext pilots without a key ceremony only).
    poll : float
        Seconds between pulls for the replies of an exchange (each pull is one request to the
        SuperLink; :data:`REPLY_POLL` by default).
    """

    def __init__(self, grid: Grid, *, expected_sites: int | None = None, connect_timeout: float = 120.0,
                 verify: Verifier | None = None, poll: float | None = None):
        self.grid = grid
        self.verify = verify
        self.poll = REPLY_POLL if poll is None else float(poll)
        self._nodes: dict[str, int] = {}
        self.refused: dict[int, str] = {}
        self.last_exchange: dict[str, Any] = {}
        if verify is None:
            log.warning("no ceremony keys given: SuperNodes' site claims are taken unverified (pilots only)")
        self._discover(expected_sites, connect_timeout)

    def _discover(self, expected: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        asked: set[int] = set()
        while True:
            new = [n for n in self.grid.get_node_ids() if n not in asked]
            if new:
                asked.update(new)
                self._identify(new, max(1.0, deadline - time.monotonic()))
            if self._nodes and (expected is None or len(self._nodes) >= expected):
                return
            if time.monotonic() > deadline:
                refused = "; ".join(f"node {n}: {why}" for n, why in self.refused.items())
                raise RuntimeError(
                    f"only {len(self._nodes)} site(s) identified themselves to the SuperLink within {timeout:.0f} s, "
                    f"expected {expected} (identified: {sorted(self._nodes)}"
                    + (f"; refused: {refused}" if refused else "")
                    + "): check that every site's SuperNode, ClientApp and site service are running"
                )
            time.sleep(0.2)

    def _identify(self, node_ids: list[int], timeout: float) -> None:
        challenges = {n: secrets.token_hex(32) for n in node_ids}
        messages = [Message(content=config_record({"challenge": challenges[n]}), message_type=IDENTIFY,
                            dst_node_id=n) for n in node_ids]
        for reply in self._exchange(messages, timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.refused[node] = f"did not identify itself ({reply.error.reason})"
                log.warning("SuperNode %s %s", node, self.refused[node])
                continue
            try:
                cfg = reply.content["config"]
                site_id, signature = str(cfg["site-id"]), bytes(cfg.get("signature", b""))
            except (KeyError, TypeError, ValueError):
                self.refused[node] = "sent a malformed identify reply"
                log.warning("SuperNode %s %s", node, self.refused[node])
                continue
            if self.verify is not None and not self.verify(site_id, node, challenges[node], signature):
                self.refused[node] = (f"claims to be site {site_id!r} but its identify signature does not verify "
                                      f"against that site's ceremony key: refused")
                log.warning("SuperNode %s %s", node, self.refused[node])
                continue
            if site_id in self._nodes and self._nodes[site_id] != node:
                if self.verify is None:
                    raise RuntimeError(
                        f"two SuperNodes claim to be site {site_id!r} and no ceremony keys were given to tell "
                        "them apart: pass the coordinator keys (transport.coordinator_keys)"
                    )
                log.warning("SuperNode %s also proved to be site %r; keeping the newest", node, site_id)
            self._nodes[site_id] = node

    def site_ids(self) -> list[str]:
        return sorted(self._nodes)

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        out: dict[str, Reply | SiteFailure] = {}
        flower_messages = []
        by_node: dict[int, str] = {}
        packed: dict[int, bytes] = {}  # a broadcast is one message object for every site: packed once
        for site_id, msg in messages.items():
            node = self._nodes.get(site_id)
            if node is None:
                out[site_id] = SiteFailure(site_id, "unreachable", "no identified SuperNode for this site")
                continue
            by_node[node] = site_id
            blob = packed.get(id(msg))
            if blob is None:
                blob = packed[id(msg)] = wire.pack(msg.to_flat())
            flower_messages.append(Message(content=blob_record(blob), message_type=QUERY, dst_node_id=node))
        for reply in self._exchange(flower_messages, timeout):
            site_id = by_node.get(reply.metadata.src_node_id)
            if site_id is None:
                continue
            if reply.has_error():
                out[site_id] = SiteFailure(site_id, "transport_error", str(reply.error.reason))
                continue
            try:
                out[site_id] = Reply.from_flat(from_recorddict(reply.content))
            except (ProtocolError, ValueError, TypeError) as exc:
                out[site_id] = SiteFailure(site_id, "transport_error", f"malformed reply: {exc}")
        for site_id in messages:
            out.setdefault(site_id, SiteFailure(site_id, "timeout", f"no reply within {timeout} s"))
        return out

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """Push, then pull the replies every ``poll`` seconds (the Grid's own ``send_and_receive``
        sleeps 3 s between pulls, which would dominate every exchange)."""
        t0 = time.time()
        pending = {m for m in self.grid.push_messages(messages) if m}
        t_pushed = time.time()
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(self.poll)
        self.last_exchange = {"start": t0, "pushed": t_pushed, "done": time.time(),
                              "replies": [float(r.metadata.created_at) for r in replies]}
        return replies

    def close(self) -> None:
        pass


# -- the FAB's ClientApp component: refuses to run -----------------------------------------------------
clientapp = ClientApp()
_REFUSAL = (
    "ehr-fed does not run site code in a ClientApp process started from a FAB: start this SuperNode with "
    "'--isolation process' beside 'ehr-fed site clientapp' and 'ehr-fed site serve' (docs/deployment.md)"
)


@clientapp.query("ehrfed_identify")
def identify(msg: Message, context: Context) -> Message:
    raise RuntimeError(_REFUSAL)


@clientapp.query("ehrfed")
def answer(msg: Message, context: Context) -> Message:
    raise RuntimeError(_REFUSAL)


# -- coordinator app: a relay between the coordinator's process and Flower's Grid ---------------------
serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    """Serve the coordinator that started this run (see :class:`FlowerRelayTransport`).

    The coordinator's process listens on a loopback socket whose address and one-time token are in the
    file named by the run config key ``relay``; this ServerApp connects to it and carries out its
    requests on the Grid until told to stop.
    """
    from ehr_fed.federation.transports.flower_relay import serve_relay

    relay_path = str(context.run_config.get("relay") or "")
    if not relay_path:
        raise RuntimeError("the run config has no 'relay': start runs with FlowerRelayTransport")
    serve_relay(grid, relay_path)


def federation_from_config(cfg, **kwargs):
    """See :func:`ehr_fed.federation.transports.flower_relay.federation_from_config`."""
    from ehr_fed.federation.transports.flower_relay import federation_from_config as build

    return build(cfg, **kwargs)
