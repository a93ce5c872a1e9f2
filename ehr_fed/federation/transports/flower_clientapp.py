"""The site's long-lived ClientApp: Flower's process isolation, running only the site's own app.

A hospital starts its SuperNode with ``--isolation process``: the SuperNode then starts no executor and
runs no app code of its own; it only queues the messages of each run on its local Runtime API. This
process, started by the hospital beside it::

    ehr-fed site clientapp --runtime-api 127.0.0.1:9094 --socket /srv/ehr-fed/run/site.sock

acquires those tasks from the Runtime API exactly like Flower's SuperExec and ``flwr-clientapp`` do
(same Runtime API calls, same task tokens), with three differences that make it safe and fast:

- **Only the site's own app.** Before it answers a task it checks the run's FAB: its SHA-256 must be
  that of the ehr-fed app shipped in the site's installed package (:func:`trusted_fab_hashes`; a site
  may add hashes it has reviewed with ``--trust-fab``). Any other app -- one the SuperLink side
  built, with a ClientApp of its own -- gets Flower's "The FAB could not be verified" error reply and
  none of its code is loaded or run.
- **No data, keys or config here.** The handlers relay each message, as an opaque blob, to the site
  service (:mod:`~ehr_fed.federation.transports.flower_site`) over its local socket and return its
  reply blob. This process never reads the site's YAML, table or keys; the SuperNode's node config
  holds no path to them.
- **Long-lived.** No process start and no imports per message: one task costs a few local HTTP calls.

With ``EHR_FED_FLOWER_TIMING=/path/file.jsonl`` every task appends its timings (for
``benchmarks/flower.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).with_name("flower_app")
TIMING_ENV = "EHR_FED_FLOWER_TIMING"
DEFAULT_POLL = 0.25
DEFAULT_HOT_POLL = 0.05
DEFAULT_HOT_WINDOW = 5.0


def build_app_fab(app_dir: str | Path = APP_DIR) -> bytes:
    """The FAB (Flower app bundle) that ``flwr run`` builds from ``app_dir`` (deterministic)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(Path(app_dir))


def trusted_fab_hashes(extra: tuple[str, ...] = ()) -> set[str]:
    """SHA-256 (hex) of the FABs this site runs: ehr-fed's installed app, plus reviewed ``extra`` ones."""
    return {hashlib.sha256(build_app_fab()).hexdigest(), *(h.lower() for h in extra)}


class _TaskToken:
    """Flower's task-token header (``RuntimeTokenHttpInterceptor``) with the token of the current task."""

    def __init__(self) -> None:
        from flwr.supercore.constant import TASK_TOKEN_HEADER
        from flwr.supercore.interceptors.http.utils import add_headers

        self.token = ""
        self._header, self._add = TASK_TOKEN_HEADER, add_headers

    def intercept(self, context: Any, call_next: Any) -> Any:
        if not self.token:
            raise RuntimeError("no task acquired")
        self._add(context.request, {self._header: self.token})
        return call_next(context)


class _TaskHeartbeat:
    """Keep a long task alive at the SuperNode (Flower expires tasks without heartbeats)."""

    def __init__(self, client: Any, interval: float = 10.0):
        self._client, self._interval, self._stop = client, interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=E0611

        while not self._stop.wait(self._interval):
            try:
                self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is not fatal here
                log.debug("task heartbeat failed: %s", exc)

    def __enter__(self) -> _TaskHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


class SiteClientApp:
    """Serve the tasks of one SuperNode (``--isolation process``) for one site service.

    Parameters
    ----------
    runtime_api : str
        The SuperNode's Runtime API address (its ``--host``/``--port``).
    socket_path : path
        The site service's socket.
    trusted : set of str, optional
        FAB hashes to run; :func:`trusted_fab_hashes` by default.
    poll_interval : float
        Seconds between task polls when idle.
    hot_poll, hot_window : float
        Seconds between task polls within ``hot_window`` seconds of the last task (a computation is
        running and its next message is due soon). The polls are local requests to the SuperNode.
    """

    def __init__(self, runtime_api: str, socket_path: str | Path, *, trusted: set[str] | None = None,
                 poll_interval: float = DEFAULT_POLL, root_certificates: bytes | None = None,
                 hot_poll: float = DEFAULT_HOT_POLL, hot_window: float = DEFAULT_HOT_WINDOW,
                 notify: str | Path | None = None):
        import flwr.supernode.runtime.run_clientapp as run_clientapp
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        from ehr_fed.federation.transports.flower_pacing import fast_object_pulls
        from ehr_fed.federation.transports.flower_site import SiteClient

        fast_object_pulls(run_clientapp)  # a task is offered before its message's objects are stored

        self.runtime_api = runtime_api
        self.trusted = trusted if trusted is not None else trusted_fab_hashes()
        self.poll_interval = poll_interval
        self.hot_poll, self.hot_window = min(hot_poll, poll_interval), hot_window
        self._last_task = -float("inf")
        self._waiter = None
        if notify is not None:
            from ehr_fed.federation.transports.flower_notify import Waiter

            self._waiter = Waiter(notify)
        self._root = root_certificates
        self.site = SiteClient(socket_path)
        self._stop = threading.Event()
        self._timing = os.environ.get(TIMING_ENV)
        self._exec = RuntimeHttpClient.from_server_address(
            server_address=runtime_api, insecure=root_certificates is None, root_certificates=root_certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
            retry_invoker=make_simple_http_retry_invoker(),
        )
        # one client for every task (a new one per task costs an SSL context and a connection); the
        # token interceptor carries the current task's token
        self._token = _TaskToken()
        self._task_client = RuntimeHttpClient.from_server_address(
            server_address=runtime_api, insecure=root_certificates is None, root_certificates=root_certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), self._token],
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def idle_wait(self) -> float:
        """Seconds until the next task poll: short while a computation is running (without a
        notification FIFO; with one, the SuperNode says when a task waits and this is the fallback)."""
        recent = time.monotonic() - self._last_task < self.hot_window
        return self.hot_poll if recent and self._waiter is None else self.poll_interval

    def wait_for_work(self) -> None:
        """Until the SuperNode notifies a task (with ``notify``) or the next poll is due."""
        if self._waiter is not None:
            self._waiter.wait(self.idle_wait())
        else:
            self._stop.wait(self.idle_wait())

    def serve_forever(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
        from flwr.supercore.constant import TaskType

        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        self.wait_for_runtime_api()
        while not self._stop.is_set():
            res = self._exec.AcquireTask(request)
            if res.HasField("task") and res.token:
                try:
                    self.run_task(res.token, time.time())
                except Exception as exc:  # noqa: BLE001 - one failed task must not stop the site
                    log.error("task %s failed: %s", res.task.task_id, exc)
                self._last_task = time.monotonic()
                continue
            self.wait_for_work()

    def wait_for_runtime_api(self, poll: float = 0.2) -> None:
        """Wait until the SuperNode's Runtime API accepts connections (it starts after this process, or
        restarts): Flower's retries back off to many seconds between attempts, this checks every
        ``poll`` seconds."""
        import socket

        host, _, port = self.runtime_api.rpartition(":")
        announced = False
        while not self._stop.is_set():
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1.0):
                    return
            except OSError:
                if not announced:
                    log.info("waiting for the SuperNode's Runtime API at %s", self.runtime_api)
                    announced = True
                self._stop.wait(poll)

    def run_task(self, token: str, t_acquired: float) -> None:
        """Pull one task's message, answer it (or refuse its app), push the reply and the task status."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        self._token.token = token
        client = self._task_client
        timing: dict[str, Any] = {"acquired": t_acquired}
        context = None
        status, details = SubStatus.FAILED, "the task failed before it was answered"
        try:
            with _TaskHeartbeat(client):
                message, context, run, fab = pull_task_input(client)
                timing.update(pulled=time.time(), type=message.metadata.message_type,
                              created=message.metadata.created_at)
                if fab.hash_str not in self.trusted:
                    log.error("refused run %s: its app (FAB %s, %s) is not this site's ehr-fed app",
                              run.run_id, fab.hash_str[:12], run.fab_id)
                    reply = Message(Error(code=ErrorCode.INVALID_FAB, reason="The FAB could not be verified."),
                                    reply_to=message)
                    status, details = SubStatus.FAILED, "FAB not trusted by this site"
                else:
                    reply = self._answer(message, context)
                    status, details = SubStatus.COMPLETED, ""
                timing["answered"] = time.time()
                push_message(client, reply, context)
                timing["pushed"] = time.time()
        finally:
            push_task_output(client, context, status, details)
            self._record(timing)

    def _answer(self, message: Any, context: Any) -> Any:
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode

        from ehr_fed.federation.transports import flower as fl

        try:
            if message.metadata.message_type == fl.IDENTIFY:
                challenge = str(message.content["config"]["challenge"])
                got = self.site.identify(context.node_id, challenge)
                if "signature" not in got:
                    raise RuntimeError(str(got.get("error", "the site service did not identify")))
                return Message(content=fl.config_record({"site-id": str(got["site-id"]),
                                                         "signature": got["signature"]}), reply_to=message)
            if message.metadata.message_type == fl.QUERY:
                reply_blob = self.site.handle(fl.blob_of(message.content))
                return Message(content=fl.blob_record(reply_blob), reply_to=message)
            reason = f"ehr-fed's site answers only {fl.QUERY} and {fl.IDENTIFY} messages"
        except Exception as exc:  # noqa: BLE001 - report to the coordinator as an error reply
            reason = f"{type(exc).__name__}: {exc}"
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)

    def _record(self, timing: dict[str, Any]) -> None:
        if self._timing:
            with open(self._timing, "a") as fh:
                fh.write(json.dumps(timing) + "\n")

    def stop(self) -> None:
        self._stop.set()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None


def add_poll_arguments(p: Any, poll: float, hot: float, window: float) -> None:
    """The ``--poll-interval``, ``--hot-poll`` and ``--hot-window`` options (ClientApp and SuperNode)."""
    p.add_argument("--poll-interval", type=float, default=poll,
                   help=f"seconds between polls when idle (default {poll})")
    p.add_argument("--hot-poll", type=float, default=hot,
                   help=f"seconds between polls within --hot-window of the last message (default {hot})")
    p.add_argument("--hot-window", type=float, default=window,
                   help=f"seconds after a message during which polls are --hot-poll apart (default {window})")


def add_notify_argument(p: Any) -> None:
    """``--notify PATH``: the FIFO through which the SuperNode says a task waits (same path on both)."""
    p.add_argument("--notify", metavar="PATH",
                   help="FIFO the site's SuperNode writes a byte to when a task waits (give the same path to "
                   "'ehr-fed site supernode' and 'ehr-fed site clientapp'; created 0600 if missing)")


def check_poll_arguments(poll: float, hot: float, window: float) -> None:
    """Refuse poll settings out of range, with the option to fix."""
    for name, value, low, high in (("--poll-interval", poll, 0.005, 3.0), ("--hot-poll", hot, 0.002, 3.0),
                                   ("--hot-window", window, 0.0, 3600.0)):
        if not low <= value <= high:
            raise SystemExit(f"{name} must be between {low} and {high} seconds, got {value}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ehr-fed site clientapp", description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime-api", required=True, help="the SuperNode's Runtime API, host:port")
    p.add_argument("--socket", required=True, help="the site service's socket ('ehr-fed site serve --socket')")
    p.add_argument("--trust-fab", action="append", default=[], metavar="SHA256",
                   help="also run the app with this FAB hash (after reviewing it)")
    add_poll_arguments(p, DEFAULT_POLL, DEFAULT_HOT_POLL, DEFAULT_HOT_WINDOW)
    add_notify_argument(p)
    args = p.parse_args(argv)
    return run(args.runtime_api, args.socket, tuple(args.trust_fab), args.poll_interval,
               hot_poll=args.hot_poll, hot_window=args.hot_window, notify=args.notify)


def run(runtime_api: str, socket_path: str, trust: tuple[str, ...] = (), poll_interval: float = DEFAULT_POLL, *,
        hot_poll: float = DEFAULT_HOT_POLL, hot_window: float = DEFAULT_HOT_WINDOW, notify: str | None = None) -> int:
    from ehr_fed.federation.transports.flower_notify import NotifyError

    check_poll_arguments(poll_interval, hot_poll, hot_window)
    try:
        app = SiteClientApp(runtime_api, socket_path, trusted=trusted_fab_hashes(trust), poll_interval=poll_interval,
                            hot_poll=hot_poll, hot_window=hot_window, notify=notify)
    except NotifyError as exc:
        raise SystemExit(f"ehr-fed site clientapp: {exc}") from None
    def terminate(*_: Any) -> None:
        # also ends a request Flower is retrying (its retries to a stopped SuperNode never give up)
        app.stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    print(f"ready clientapp trusting {sorted(app.trusted)}", flush=True)
    try:
        app.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover - started as a process
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    sys.exit(main())
