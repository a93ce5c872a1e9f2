"""The Flower transport: ehr-fed's protocol over a Flower SuperLink.

Deployment (see ``docs/deployment.md``): the coordinator runs a Flower SuperLink;
every hospital runs a Flower SuperNode that connects *outbound* to it (TLS, and
SuperNode authentication when enabled) with ``--node-config 'site-id="..."
site-config="/path/site.yaml"'``. A federated computation is a Flower run:

- :data:`clientapp` answers one query action, ``query.ehrfed``, by handing the
  ehr-fed :class:`~ehr_fed.federation.messages.TaskMessage` it carries to the
  site's :class:`~ehr_fed.federation.site.SiteNode` (built once per process from
  the site's own config: its data, policy, keys and audit log never leave it);
- :data:`serverapp` builds a :class:`~ehr_fed.federation.Federation` on
  :class:`GridTransport` and runs a job (statistics, a model fit, a secure sum)
  described by the run config, writing the result where the job says.

Messages travel as Flower ``RecordDict``s: numpy arrays in an ``ArrayRecord``,
everything else (ciphertexts as ``bytes``, str, numbers) in a ``ConfigRecord``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.transports.base import SiteFailure

log = logging.getLogger(__name__)

QUERY = "query.ehrfed"
IDENTIFY = "query.ehrfed_identify"
_NONE_KEYS = "\x00none"


# -- records <-> flat dicts ------------------------------------------------------------------------
def to_recorddict(flat: Mapping[str, Any]) -> RecordDict:
    """A flat ehr-fed message (``{path: leaf}``) as a Flower ``RecordDict``."""
    arrays: dict[str, Array] = {}
    config: dict[str, Any] = {}
    none_keys: list[str] = []
    for key, value in flat.items():
        if isinstance(value, np.ndarray):
            arrays[key] = Array.from_numpy_ndarray(np.ascontiguousarray(value))
        elif value is None:
            none_keys.append(key)
        else:
            config[key] = value
    config[_NONE_KEYS] = json.dumps(none_keys)
    return RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)})


def from_recorddict(content: RecordDict) -> dict[str, Any]:
    """Inverse of :func:`to_recorddict`."""
    try:
        arrays = content["arrays"]
        config = dict(content["config"])
    except KeyError as exc:
        raise ProtocolError(f"Flower message without the ehr-fed record {exc.args[0]!r}") from None
    flat: dict[str, Any] = {k: v for k, v in config.items() if k != _NONE_KEYS}
    for key in json.loads(config.get(_NONE_KEYS, "[]")):
        flat[key] = None
    for key in arrays.keys():
        flat[key] = arrays[key].numpy()
    return flat


# -- coordinator side --------------------------------------------------------------------------------
class GridTransport:
    """:class:`~ehr_fed.federation.transports.base.Transport` over a Flower ``Grid``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
    expected_sites : int, optional
        Wait (up to ``connect_timeout``) until this many SuperNodes are connected.
    """

    def __init__(self, grid: Grid, *, expected_sites: int | None = None, connect_timeout: float = 120.0):
        self.grid = grid
        self._nodes: dict[str, int] = {}
        self._discover(expected_sites, connect_timeout)

    def _discover(self, expected: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            node_ids = list(self.grid.get_node_ids())
            if node_ids and (expected is None or len(node_ids) >= expected):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(node_ids)} SuperNode(s) connected to the SuperLink after {timeout:.0f} s, "
                    f"expected {expected}: check that every site's SuperNode is running"
                )
            time.sleep(0.5)
        messages = [
            Message(content=RecordDict({"config": ConfigRecord({})}), message_type=IDENTIFY, dst_node_id=n)
            for n in node_ids
        ]
        for reply in self.grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                log.warning("node %s did not identify itself: %s", reply.metadata.src_node_id, reply.error)
                continue
            site_id = str(reply.content["config"]["site-id"])
            if site_id in self._nodes:
                raise RuntimeError(f"two SuperNodes claim to be site {site_id!r}")
            self._nodes[site_id] = reply.metadata.src_node_id

    def site_ids(self) -> list[str]:
        return sorted(self._nodes)

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        out: dict[str, Reply | SiteFailure] = {}
        flower_messages = []
        by_node: dict[int, str] = {}
        for site_id, msg in messages.items():
            node = self._nodes.get(site_id)
            if node is None:
                out[site_id] = SiteFailure(site_id, "unreachable", "no connected SuperNode for this site")
                continue
            by_node[node] = site_id
            flower_messages.append(
                Message(content=to_recorddict(msg.to_flat()), message_type=QUERY, dst_node_id=node)
            )
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
        """Push, then pull replies with a short, growing poll interval (the Grid's own
        ``send_and_receive`` sleeps 3 s between polls, which dominates short rounds)."""
        pending = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        pause = 0.02
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self.grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(pause)
                pause = min(pause * 1.5, 0.5)
        return replies

    def close(self) -> None:
        pass


# -- site side -----------------------------------------------------------------------------------------
clientapp = ClientApp()
_SITE_NODES: dict[str, Any] = {}


def _site_node(context: Context):
    from ehr_fed.federation.site import SiteNode
    from ehr_fed.federation.tasks import _load_builtin_tasks

    _load_builtin_tasks()
    path = context.node_config.get("site-config")
    if not path:
        raise RuntimeError("this SuperNode has no 'site-config' in --node-config: point it at the site's YAML")
    node = _SITE_NODES.get(str(path))
    if node is None:
        node = _SITE_NODES[str(path)] = SiteNode.from_config(str(path))
    return node


@clientapp.query("ehrfed_identify")
def identify(msg: Message, context: Context) -> Message:
    site_id = context.node_config.get("site-id")
    if not site_id:
        site_id = _site_node(context).site_id
    return Message(content=RecordDict({"config": ConfigRecord({"site-id": str(site_id)})}), reply_to=msg)


@clientapp.query("ehrfed")
def answer(msg: Message, context: Context) -> Message:
    flat = from_recorddict(msg.content)
    socket_path = context.node_config.get("site-socket")
    if socket_path:  # the site's long-lived service (see flower_site)
        from ehr_fed.federation.transports.flower_site import ask

        return Message(content=to_recorddict(ask(str(socket_path), flat)), reply_to=msg)
    reply = _site_node(context).handle(TaskMessage.from_flat(flat))
    return Message(content=to_recorddict(reply.to_flat()), reply_to=msg)


# -- coordinator app: a relay between the coordinator's process and Flower's Grid ---------------------
serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    """Serve the coordinator that started this run (see :class:`FlowerRelayTransport`).

    The coordinator's process (a notebook, the CLI) listens on a loopback socket whose address and
    one-time key are in the file named by the run config key ``relay``; this ServerApp connects to it
    and carries out its requests on the Grid until told to stop.
    """
    from multiprocessing.connection import Client

    relay_path = str(context.run_config.get("relay") or "")
    if not relay_path:
        raise RuntimeError("the run config has no 'relay': start runs with FlowerRelayTransport")
    info = json.loads(Path(relay_path).read_text())
    conn = Client((info["host"], int(info["port"])), authkey=bytes.fromhex(info["authkey"]))
    transport: GridTransport | None = None
    try:
        while True:
            op, arg = conn.recv()
            if op == "stop":
                conn.send(("ok", None))
                return
            try:
                if op == "connect":
                    transport = GridTransport(grid, expected_sites=arg["expected_sites"],
                                              connect_timeout=arg["timeout"])
                    conn.send(("ok", transport.site_ids()))
                elif op == "send":
                    flat, timeout = arg
                    msgs = {sid: TaskMessage.from_flat(m) for sid, m in flat.items()}
                    replies = transport.send(msgs, timeout)
                    conn.send(("ok", {sid: _encode_reply(r) for sid, r in replies.items()}))
                else:
                    conn.send(("error", f"unknown relay operation {op!r}"))
            except Exception as exc:  # report to the coordinator, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _encode_reply(r: Reply | SiteFailure):
    if isinstance(r, SiteFailure):
        return ("failure", (r.site_id, r.kind, r.detail))
    return ("reply", r.to_flat())


def _decode_reply(item) -> Reply | SiteFailure:
    kind, value = item
    if kind == "failure":
        return SiteFailure(*value)
    return Reply.from_flat(value)


def federation_from_config(cfg, **kwargs):
    """See :func:`ehr_fed.federation.transports.flower_relay.federation_from_config`."""
    from ehr_fed.federation.transports.flower_relay import federation_from_config as build

    return build(cfg, **kwargs)
