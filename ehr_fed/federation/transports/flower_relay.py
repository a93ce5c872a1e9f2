"""Run the coordinator in your own process, with the sites behind a Flower SuperLink.

:class:`FlowerRelayTransport` starts one Flower run of ehr-fed's app
(``flwr run``) whose ServerApp connects back to this process over a loopback
socket (it proves itself with a one-time token from a 0600 file; requests and
replies are :mod:`~ehr_fed.federation.transports.flower_wire` frames, nothing
is unpickled), and then relays every round: the
coordinator (a notebook, ``ehr-fed stats``, ``ehr-fed train ...``) keeps its
state and logic here, and every message to a site travels through Flower's
SuperLink to that site's SuperNode. So any federated computation of the
toolkit runs unchanged over Flower: only the federation YAML's ``transport``
differs::

    transport:
      kind: flower
      connection: ehrfed              # a [superlink.NAME] entry of the Flower config
      flwr_home: flwr-home            # folder holding that config.toml (default: Flower's)
      coordinator_keys: keys/coordinator.json   # public key material from the key ceremony
      expected_sites: 3

The coordinator's process must run on the SuperLink's host (the relay listens
on 127.0.0.1 only).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ehr_fed.federation.messages import Reply, TaskMessage
from ehr_fed.federation.payload import flatten, unflatten
from ehr_fed.federation.transports import flower_wire as wire
from ehr_fed.federation.transports.base import SiteFailure
from ehr_fed.federation.transports.flower_local import (
    CONNECTION,
    FlowerDeploymentError,
    _bin,
    _signal_group,
    flower_env,
)

APP_DIR = Path(__file__).with_name("flower_app")
#: env var: append every exchange's timings (JSON lines) to this file
TIMING_ENV = "EHR_FED_FLOWER_TIMING"


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    wire.send_frame(sock, wire.pack(flatten(obj)))


def _recv(sock: socket.socket) -> dict[str, Any]:
    obj = unflatten(wire.unpack(wire.recv_frame(sock)))
    if not isinstance(obj, dict):
        raise wire.WireError("a relay frame must hold a dict")
    return obj


class FlowerRelayTransport:
    """:class:`~ehr_fed.federation.transports.base.Transport` through a Flower run.

    Parameters
    ----------
    connection : str
        Name of the SuperLink connection in the Flower config (``[superlink.NAME]``).
    flwr_home : path, optional
        Folder of the Flower config (``FLWR_HOME``); Flower's default when None.
    expected_sites : int
        Wait until this many sites have identified themselves.
    keys : CoordinatorKeys, optional
        The ceremony's public material: each SuperNode must sign its identify answer with the ceremony
        key of the site it claims to be; nodes that cannot are refused (see :attr:`refused`).
    reply_poll : float, optional
        Seconds between the ServerApp's pulls for the replies of an exchange
        (:data:`~ehr_fed.federation.transports.flower.REPLY_POLL` by default).
    """

    def __init__(self, *, connection: str = CONNECTION, flwr_home: str | Path | None = None,
                 expected_sites: int = 3, connect_timeout: float = 180.0, app_dir: str | Path = APP_DIR,
                 keys: Any = None, reply_poll: float | None = None):
        if reply_poll is not None and not 0.002 <= reply_poll <= 3.0:
            raise ValueError(f"reply_poll must be between 0.002 and 3 seconds, got {reply_poll}")
        self._tmp = Path(tempfile.mkdtemp(prefix="ehrfed-relay-"))
        self._token = secrets.token_hex(32)
        self._listener = socket.create_server(("127.0.0.1", 0))
        host, port = self._listener.getsockname()[:2]
        relay_file = self._tmp / "relay.json"
        fd = os.open(relay_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": host, "port": port, "token": self._token}, fh)
        env = flower_env(Path(flwr_home) if flwr_home is not None else None)
        self.log_path = self._tmp / "flwr-run.log"
        self._log = self.log_path.open("w")
        self._conn: socket.socket | None = None
        self._run = subprocess.Popen(
            [_bin("flwr"), "run", str(app_dir), connection, "--stream", "--run-config", f'relay="{relay_file}"'],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        self._conn = self._accept(connect_timeout)
        bundles = {sid: {"kex": b.kex, "sign": b.sign} for sid, b in (keys.sites.items() if keys else [])}
        got = self._call("connect", {"expected_sites": expected_sites, "timeout": connect_timeout,
                                     "bundles": bundles, "reply_poll": reply_poll})
        self._sites = list(got["sites"])
        #: timings of every exchange (coordinator and ServerApp clocks; see benchmarks/flower.py)
        self.exchanges: list[dict[str, Any]] = []
        self.refused: dict[str, str] = dict(got.get("refused") or {})

    def _accept(self, timeout: float) -> socket.socket:
        got: list[socket.socket] = []

        def accept() -> None:
            while not got:
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    return
                conn.settimeout(30)
                try:
                    hello = _recv(conn)
                except (EOFError, OSError, ValueError):
                    conn.close()
                    continue
                if hmac.compare_digest(str(hello.get("token", "")), self._token):
                    conn.settimeout(None)
                    got.append(conn)
                else:
                    conn.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        thread.join(timeout)
        if not got:
            self._stop_run()
            raise FlowerDeploymentError(
                f"the Flower ServerApp did not connect back within {timeout:.0f} s; flwr run said:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )
        return got[0]

    def _call(self, op: str, arg: Any) -> Any:
        try:
            _send(self._conn, {"op": op, "arg": arg})
            answer = _recv(self._conn)
        except (EOFError, OSError, ValueError) as exc:
            raise FlowerDeploymentError(
                f"the Flower run ended unexpectedly ({exc}); flwr run said:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            ) from None
        if answer.get("status") != "ok":
            raise FlowerDeploymentError(f"Flower relay {op} failed: {answer.get('error')}")
        return answer.get("value")

    def site_ids(self) -> list[str]:
        return list(self._sites)

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        t0 = time.time()
        # a broadcast is one message object for every site: it crosses to the run once, with the sites it goes to
        index: dict[int, int] = {}
        distinct: list[dict[str, Any]] = []
        for m in messages.values():
            if id(m) not in index:
                index[id(m)] = len(distinct)
                distinct.append(m.to_dict())
        got = self._call("send", {"timeout": timeout, "messages": distinct,
                                  "sites": {sid: index[id(m)] for sid, m in messages.items()}})
        record = {"side": "coordinator", "action": next(iter(messages.values())).action if messages else "",
                  "start": t0, "done": time.time(), "grid": got.get("timing") or {}}
        self.exchanges.append(record)
        if os.environ.get(TIMING_ENV):
            with open(os.environ[TIMING_ENV], "a") as fh:
                fh.write(json.dumps(record) + "\n")
        return {sid: _decode_reply(item) for sid, item in (got.get("replies") or {}).items()}

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._call("stop", None)
            except FlowerDeploymentError:
                pass
            self._conn.close()
            self._conn = None
        self._stop_run()

    def _stop_run(self) -> None:
        try:
            self._run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _signal_group(self._run, 15)
            try:
                self._run.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(self._run, 9)
        self._listener.close()
        self._log.close()


def _encode_reply(r: Reply | SiteFailure) -> dict[str, Any]:
    if isinstance(r, SiteFailure):
        return {"failure": {"site_id": r.site_id, "kind": r.kind, "detail": r.detail}}
    return {"reply": r.to_dict()}


def _decode_reply(item: dict[str, Any]) -> Reply | SiteFailure:
    if "failure" in item:
        f = item["failure"]
        return SiteFailure(f["site_id"], f["kind"], f["detail"])
    return Reply.from_dict(item["reply"])


# -- the ServerApp's side ---------------------------------------------------------------------------
def serve_relay(grid: Any, relay_path: str) -> None:
    """Connect to the coordinator named in ``relay_path`` and serve its requests on ``grid``."""
    import flwr.superlink.grid.http_grid as http_grid

    from ehr_fed.federation.keys import SitePublicBundle
    from ehr_fed.federation.transports.flower import GridTransport, bundle_verifier
    from ehr_fed.federation.transports.flower_pacing import fast_object_pulls

    fast_object_pulls(http_grid)  # replies: retry objects still uploading after ms, not 1 s

    info = json.loads(Path(relay_path).read_text())
    conn = socket.create_connection((info["host"], int(info["port"])))
    _send(conn, {"token": info["token"]})
    transport: GridTransport | None = None
    try:
        while True:
            try:
                request = _recv(conn)
            except EOFError:
                return
            op, arg = request.get("op"), request.get("arg")
            if op == "stop":
                _send(conn, {"status": "ok", "value": None})
                return
            try:
                if op == "connect":
                    bundles = {sid: SitePublicBundle(sid, b["kex"], b["sign"]) for sid, b in arg["bundles"].items()}
                    transport = GridTransport(grid, expected_sites=arg["expected_sites"],
                                              connect_timeout=arg["timeout"],
                                              verify=bundle_verifier(bundles) if bundles else None,
                                              poll=arg.get("reply_poll"))
                    value: Any = {"sites": transport.site_ids(),
                                  "refused": {str(n): why for n, why in transport.refused.items()}}
                elif op == "send":
                    if transport is None:
                        raise RuntimeError("send before connect")
                    distinct = [TaskMessage.from_dict(m) for m in arg["messages"]]
                    msgs = {sid: distinct[int(i)] for sid, i in arg["sites"].items()}
                    replies = transport.send(msgs, arg["timeout"])
                    value = {"replies": {sid: _encode_reply(r) for sid, r in replies.items()},
                             "timing": transport.last_exchange}
                else:
                    raise RuntimeError(f"unknown relay operation {op!r}")
                _send(conn, {"status": "ok", "value": value})
            except Exception as exc:  # report to the coordinator, keep serving
                _send(conn, {"status": "error", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _reply_poll(value: Any) -> float | None:
    """``transport.reply_poll`` of a federation YAML, checked."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0.002 <= seconds <= 3.0:
        raise FlowerDeploymentError(
            f"transport.reply_poll must be a number of seconds between 0.002 and 3 (got {value!r}); "
            "leave it out for the default"
        )
    return seconds


def federation_from_config(cfg: dict[str, Any], *, base_dir: Path, study: Any = None, policy=None,
                           encrypted: bool = True, checkpoint_dir=None, **kwargs: Any):
    """A :class:`~ehr_fed.federation.Federation` whose transport is a Flower run (see module docstring)."""
    from ehr_fed.federation.coordinator import Federation
    from ehr_fed.federation.keys import CoordinatorKeys

    t = dict(cfg.get("transport") or {})
    keys_path = t.get("coordinator_keys")
    if encrypted and not keys_path:
        raise FlowerDeploymentError(
            "transport.coordinator_keys is required for an encrypted Flower federation: the public key "
            "file written by 'ehr-fed keys ceremony'"
        )
    keys = CoordinatorKeys.load(base_dir / keys_path) if keys_path else None
    home = t.get("flwr_home")
    transport = FlowerRelayTransport(
        connection=t.get("connection", CONNECTION),
        flwr_home=(base_dir / home) if home else None,
        expected_sites=int(t.get("expected_sites", len(cfg.get("sites") or []) or 3)),
        connect_timeout=float(t.get("connect_timeout", 180)),
        keys=keys,
        reply_poll=_reply_poll(t.get("reply_poll")),
    )
    kwargs.pop("workers", None)
    return Federation(transport, keys=keys, policy=policy, encrypted=encrypted, study=study,
                      checkpoint_dir=checkpoint_dir, **{k: v for k, v in kwargs.items() if k == "timeout"})
