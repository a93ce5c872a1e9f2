"""Run the coordinator in your own process, with the sites behind a Flower SuperLink.

:class:`FlowerRelayTransport` starts one Flower run of ehr-fed's app
(``flwr run``) whose ServerApp connects back to this process over a loopback
socket authenticated with a one-time key, and then relays every round: the
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

import json
import os
import secrets
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from ehr_fed.federation.messages import Reply, TaskMessage
from ehr_fed.federation.transports.base import SiteFailure
from ehr_fed.federation.transports.flower_local import (
    CONNECTION,
    FlowerDeploymentError,
    _bin,
    _signal_group,
    flower_env,
)

APP_DIR = Path(__file__).with_name("flower_app")


class FlowerRelayTransport:
    """:class:`~ehr_fed.federation.transports.base.Transport` through a Flower run.

    Parameters
    ----------
    connection : str
        Name of the SuperLink connection in the Flower config (``[superlink.NAME]``).
    flwr_home : path, optional
        Folder of the Flower config (``FLWR_HOME``); Flower's default when None.
    expected_sites : int
        Wait until this many SuperNodes are connected.
    """

    def __init__(self, *, connection: str = CONNECTION, flwr_home: str | Path | None = None,
                 expected_sites: int = 3, connect_timeout: float = 180.0, app_dir: str | Path = APP_DIR):
        self._tmp = Path(tempfile.mkdtemp(prefix="ehrfed-relay-"))
        authkey = secrets.token_bytes(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=authkey)
        host, port = self._listener.address
        relay_file = self._tmp / "relay.json"
        fd = os.open(relay_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": host, "port": port, "authkey": authkey.hex()}, fh)
        env = flower_env(Path(flwr_home) if flwr_home is not None else None)
        self.log_path = self._tmp / "flwr-run.log"
        self._log = self.log_path.open("w")
        self._run = subprocess.Popen(
            [_bin("flwr"), "run", str(app_dir), connection, "--stream", "--run-config", f'relay="{relay_file}"'],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        self._conn = self._accept(connect_timeout)
        self._sites = self._call("connect", {"expected_sites": expected_sites, "timeout": connect_timeout})

    def _accept(self, timeout: float):
        got: list[Any] = []
        thread = threading.Thread(target=lambda: got.append(self._listener.accept()), daemon=True)
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
            self._conn.send((op, arg))
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise FlowerDeploymentError(
                f"the Flower run ended unexpectedly ({exc}); flwr run said:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            ) from None
        if status != "ok":
            raise FlowerDeploymentError(f"Flower relay {op} failed: {value}")
        return value

    def site_ids(self) -> list[str]:
        return list(self._sites)

    def send(self, messages: Mapping[str, TaskMessage], timeout: float | None) -> dict[str, Reply | SiteFailure]:
        from ehr_fed.federation.transports.flower import _decode_reply

        flat = {sid: m.to_flat() for sid, m in messages.items()}
        replies = self._call("send", (flat, timeout))
        return {sid: _decode_reply(item) for sid, item in replies.items()}

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
    )
    kwargs.pop("workers", None)
    return Federation(transport, keys=keys, policy=policy, encrypted=encrypted, study=study,
                      checkpoint_dir=checkpoint_dir, **{k: v for k, v in kwargs.items() if k == "timeout"})
