"""A site's service: its SiteNode kept alive, answering on a local socket only.

Each hospital runs, beside its Flower SuperNode::

    ehr-fed site serve /srv/ehr-fed/site.yaml --socket /srv/ehr-fed/run/site.sock

The service alone holds the site's feature table, policy, keys and audit log. The site's long-lived
ClientApp (:mod:`ehr_fed.federation.transports.flower_clientapp`) relays each Flower message to it and
the reply back; nothing else of the site is reachable from Flower's side.

The local socket:

- lives in a directory of mode 0700 owned by the service's user (created so, refused otherwise) and
  is itself mode 0600;
- checks every peer with ``SO_PEERCRED``: only the service's own uid (or uids given with
  ``allowed_uids``) may talk to it;
- carries length-prefixed frames of :mod:`~ehr_fed.federation.transports.flower_wire` blobs (JSON
  header and raw buffers: nothing is unpickled or executed);
- answers every request, malformed ones included, with a reply (an error reply saying what was wrong)
  and keeps running.

Replay protection survives a restart: the site's protocol memory (nonces, rounds, opened sums) is
kept in ``<state_dir>/site-state.jsonl`` (0600, appended before a reply leaves, read back at start;
:class:`ehr_fed.federation.state.SiteState`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ehr_fed.federation.transports import flower_wire as wire

log = logging.getLogger(__name__)

OP = "\x00op"  # request field naming the operation (payload keys may not start with NUL)
OP_HANDLE, OP_IDENTIFY = "handle", "identify"
IDENTIFY_CONTEXT = b"ehr-fed identify v1\x00"


class SiteServiceError(RuntimeError):
    """The site service could not start, or a peer could not reach it."""


def identify_statement(site_id: str, node_id: int, challenge: str) -> bytes:
    """The bytes a site signs to say "SuperNode ``node_id`` is site ``site_id``" for ``challenge``."""
    return IDENTIFY_CONTEXT + json.dumps([str(site_id), int(node_id), str(challenge)]).encode()


# -- the service -------------------------------------------------------------------------------------
def _prepare_socket_dir(socket_path: Path) -> None:
    folder = socket_path.parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
    st = folder.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise SiteServiceError(
            f"{folder}: the socket's folder must belong to this user and have mode 0700 "
            f"(it is {oct(stat.S_IMODE(st.st_mode))}, owner uid {st.st_uid}); run: chmod 700 {folder}"
        )
    if socket_path.exists() or socket_path.is_symlink():
        if not stat.S_ISSOCK(socket_path.lstat().st_mode):
            raise SiteServiceError(f"{socket_path} exists and is not a socket: choose another --socket path")
        socket_path.unlink()


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class SiteService:
    """Answer a :class:`~ehr_fed.federation.site.SiteNode`'s requests on a Unix socket.

    Parameters
    ----------
    node : SiteNode
    socket_path : path
    state_dir : path
        Where the site's protocol memory lives (created 0700).
    allowed_uids : iterable of int, optional
        Peers allowed besides this process's own uid (a ClientApp run as another system user).
    """

    def __init__(self, node: Any, socket_path: str | Path, state_dir: str | Path,
                 allowed_uids: tuple[int, ...] = ()):
        self.node = node
        self.socket_path = Path(socket_path)
        self.allowed_uids = {os.getuid(), *allowed_uids}
        _persist_replay_state(node, Path(state_dir))
        self.restored = len(node.state.nonces)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        _prepare_socket_dir(self.socket_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.socket_path))
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        self._sock.listen(16)
        self._sock.settimeout(0.5)  # accept() wakes to see a stop (set here: the service may close first)

    # -- requests -----------------------------------------------------------------------------------
    def answer(self, blob: bytes) -> bytes:
        """The reply blob to one request blob; never raises."""
        try:
            request = wire.unpack(blob)
            op = request.get(OP)
            if op == OP_HANDLE:
                return self._handle(request.get("message"))
            if op == OP_IDENTIFY:
                return self._identify(request)
            return self._error(f"unknown request {op!r}: expected {OP_HANDLE!r} or {OP_IDENTIFY!r}")
        except Exception as exc:  # a malformed request gets an error reply, never a crash
            return self._error(f"malformed request: {exc}")

    def _handle(self, message_blob: Any) -> bytes:
        from ehr_fed.federation.payload import unflatten

        if not isinstance(message_blob, bytes):
            return self._error("the request carries no task message")
        data = unflatten(wire.unpack(message_blob))
        if not isinstance(data, dict):
            return self._error("the task message is not a dict")
        with self._lock:
            reply = self.node.handle(data)
        return wire.pack(reply.to_flat())

    def _identify(self, request: dict[str, Any]) -> bytes:
        challenge, node_id = request.get("challenge"), request.get("node_id")
        if not isinstance(challenge, str) or len(challenge) < 32 or not isinstance(node_id, int):
            return self._error("identify needs a challenge (>= 32 hex characters) and the SuperNode's node id")
        statement = identify_statement(self.node.site_id, node_id, challenge)
        return wire.pack({"site-id": self.node.site_id, "signature": self.node.keys.sign(statement)})

    def _error(self, text: str) -> bytes:
        from ehr_fed.federation.messages import Reply

        reply = Reply(site_id=self.node.site_id, action="ping", task="", study="", session="", round=0,
                      nonce="-", status="error", error=f"site {self.node.site_id}: {text}",
                      error_kind="protocol")
        return wire.pack(reply.to_flat())

    # -- connections ------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            uid = peer_uid(conn)
            if uid not in self.allowed_uids:
                log.warning("refused a connection from uid %s (allowed: %s)", uid, sorted(self.allowed_uids))
                try:
                    wire.send_frame(conn, self._error(f"peer uid {uid} may not use this site's socket"))
                except OSError:
                    pass
                return
            while not self._stop.is_set():
                try:
                    blob = wire.recv_frame(conn)
                except EOFError:
                    return
                except wire.WireError as exc:  # a broken frame: say so, then drop the stream
                    try:
                        wire.send_frame(conn, self._error(f"malformed frame: {exc}"))
                    except OSError:
                        pass
                    return
                except OSError:
                    return
                try:
                    wire.send_frame(conn, self.answer(blob))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self.socket_path.unlink(missing_ok=True)


def _persist_replay_state(node: Any, state_dir: Path) -> None:
    """Make ``node``'s protocol memory (nonces, rounds, differencing records) restart-safe under ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = state_dir / "site-state.jsonl"
    if node.state.path is None or Path(node.state.path) != target:
        # the service's state directory holds the protocol memory (the operator named it explicitly)
        node.state = type(node.state)(target)


def serve(config: str | Path, socket_path: str | Path, state_dir: str | Path | None = None,
          allowed_uids: tuple[int, ...] = ()) -> None:
    """Serve the site described by ``config`` on ``socket_path`` until SIGTERM/SIGINT."""
    from ehr_fed.federation.site import SiteNode
    from ehr_fed.federation.tasks import registered_tasks

    node = SiteNode.from_config(config)
    registered_tasks()  # load every built-in task before the first message
    state = Path(state_dir) if state_dir else Path(config).resolve().parent / "state"
    service = SiteService(node, socket_path, state, allowed_uids)
    signal.signal(signal.SIGTERM, lambda *_: service._stop.set())
    log.info("site %s serving on %s (%d replay entries restored)", node.site_id, socket_path, service.restored)
    print(f"ready {node.site_id}", flush=True)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        while thread.is_alive() and not service._stop.is_set():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        service.close()


# -- client side ---------------------------------------------------------------------------------------
class SiteClient:
    """One connection to a site service (used by the site's ClientApp)."""

    def __init__(self, socket_path: str | Path, timeout: float = 3600.0):
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
            except OSError as exc:
                s.close()
                raise SiteServiceError(
                    f"cannot reach the site service at {self.socket_path} ({exc}): is 'ehr-fed site serve' running?"
                ) from None
            self._sock = s
        return self._sock

    def request(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Send one request (a flat dict with :data:`OP`) and return the decoded reply."""
        blob = wire.pack(fields)
        for attempt in (1, 2):  # reconnect once if the service restarted
            sock = self._connect()
            try:
                try:
                    wire.send_frame(sock, blob)
                except (BrokenPipeError, ConnectionResetError):
                    # the service may have answered first (a refused peer) and closed: read that answer
                    return wire.unpack(wire.recv_frame(sock))
                return wire.unpack(wire.recv_frame(sock))
            except (EOFError, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise SiteServiceError(f"the site service at {self.socket_path} closed the connection") from None
        raise AssertionError("unreachable")

    def handle(self, message_blob: bytes) -> bytes:
        """Relay one packed task message; returns the packed reply."""
        return wire.pack(self.request({OP: OP_HANDLE, "message": message_blob}))

    def identify(self, node_id: int, challenge: str) -> dict[str, Any]:
        return self.request({OP: OP_IDENTIFY, "node_id": int(node_id), "challenge": challenge})

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


if __name__ == "__main__":  # pragma: no cover - started as a process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
