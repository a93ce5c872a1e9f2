"""A site's service: its SiteNode kept alive between Flower messages.

Flower starts a fresh ``flwr-clientapp`` process for every message. Building
the site there each time would re-import the analytics stack, re-read the
feature table and the keys, and forget which rounds and nonces the site has
already answered. Instead each hospital runs this service beside its
SuperNode::

    ehr-fed site serve /srv/ehr-fed/site.yaml --socket /srv/ehr-fed/run/site.sock

and starts the SuperNode with ``--node-config '... site-socket="/srv/ehr-fed/run/site.sock"'``.
The ClientApp then only relays each message over this Unix socket (mode 0600,
authenticated with a random key kept beside it in ``<socket>.key``, 0600) and
returns the site's reply. Without ``site-socket`` the ClientApp builds the site
itself for every message (slower, but needs no second process).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def key_path(socket_path: str | Path) -> Path:
    return Path(f"{socket_path}.key")


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def serve(config: str | Path, socket_path: str | Path) -> None:
    """Serve the site described by ``config`` on ``socket_path`` until SIGTERM/SIGINT."""
    from ehr_fed.federation.messages import TaskMessage
    from ehr_fed.federation.site import SiteNode
    from ehr_fed.federation.tasks import registered_tasks

    socket_path = Path(socket_path)
    node = SiteNode.from_config(config)
    registered_tasks()  # load every built-in task before the first message
    authkey = secrets.token_bytes(32)
    socket_path.unlink(missing_ok=True)
    _write_secret(key_path(socket_path), authkey)
    old_umask = os.umask(0o177)
    try:
        listener = Listener(str(socket_path), family="AF_UNIX", authkey=authkey)
    finally:
        os.umask(old_umask)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("site %s serving on %s", node.site_id, socket_path)
    print(f"ready {node.site_id}", flush=True)
    try:
        while True:
            try:
                conn = listener.accept()
            except Exception as exc:  # a client that failed authentication: keep serving
                log.warning("rejected a connection: %s", exc)
                continue
            with conn:
                try:
                    flat = conn.recv()
                    reply = node.handle(TaskMessage.from_flat(flat))
                    conn.send(reply.to_flat())
                except (EOFError, OSError) as exc:
                    log.warning("connection dropped: %s", exc)
    finally:
        listener.close()
        socket_path.unlink(missing_ok=True)
        key_path(socket_path).unlink(missing_ok=True)


def ask(socket_path: str | Path, flat_message: dict[str, Any], timeout: float = 3600.0) -> dict[str, Any]:
    """Send one flat task message to the site service and return its flat reply."""
    authkey = key_path(socket_path).read_bytes()
    with Client(str(socket_path), family="AF_UNIX", authkey=authkey) as conn:
        conn.send(flat_message)
        if not conn.poll(timeout):
            raise TimeoutError(f"the site service at {socket_path} did not answer within {timeout:.0f} s")
        return conn.recv()


if __name__ == "__main__":  # pragma: no cover - started as a process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(sys.argv[1], sys.argv[2])
