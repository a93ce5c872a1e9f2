"""Flower's SuperNode with short waits: ``ehr-fed site supernode [--hot-poll S] [--poll-interval S] -- ARGS``.

Every poll is a request the SuperLink serves (a few milliseconds of its CPU): on a SuperLink host shared
with other work, or on one machine as in a pilot, shorter polls cost more than they save. 0.1 s during a
computation measured best on a loaded 2-core machine (``benchmarks/flower.py``, docs/deployment.md).

Flower 1.41 and 1.42 have no option for how often an idle SuperNode asks the SuperLink for work, nor
for how often it looks for the reply its ClientApp is preparing: its loop sleeps a fixed 3 s after
every empty pull, and 0.5 s between checks of its own in-memory store for a reply (and for each object
of that reply that the ClientApp is still uploading). On a federation whose exchanges take a fraction
of a second those pauses are most of every exchange. This launcher runs Flower's own
``flower-supernode`` (same code, same arguments, same Fleet API and authentication) and only shortens
them:

- **the idle poll** (one authenticated request to the SuperLink each time) is ``--hot-poll`` seconds
  (default 0.1) for ``--hot-window`` seconds (default 5) after the node last answered a message, while
  a computation is running and its next message is due soon, then ``--poll-interval`` seconds (default
  0.5) until work arrives again: fast rounds without a steady stream of requests from idle hospitals;
- **the waits for a reply** (checks of the SuperNode's own in-memory store, no network) are capped at
  5 ms;
- a message's objects that are not yet stored at the SuperLink are retried after milliseconds instead
  of 1 s (:mod:`~ehr_fed.federation.transports.flower_pacing`).

It changes nothing else; remove it once Flower exposes these intervals.
"""

from __future__ import annotations

import sys
import time as _time
from typing import Any

DEFAULT_POLL = 0.5
DEFAULT_HOT_POLL = 0.1
DEFAULT_HOT_WINDOW = 5.0
#: cap on the SuperNode's waits for its ClientApp's reply (in-memory checks, no request)
BUSY_WAIT = 0.005
#: Flower's idle wait after an empty pull is 3 s; its in-memory waits are 0.5 s
_IDLE_SLEEP_MIN = 1.0


class _PacedTime:
    """The ``time`` module as the SuperNode loop sees it, with its waits shortened.

    ``sleep(3)`` (the idle poll) lasts ``hot`` seconds within ``window`` seconds of the last
    :meth:`activity`, else ``poll`` seconds; shorter sleeps (waits for a reply) at most ``busy``.
    """

    def __init__(self, poll: float, hot: float = DEFAULT_HOT_POLL, window: float = DEFAULT_HOT_WINDOW,
                 busy: float = BUSY_WAIT):
        self.poll, self.hot, self.window, self.busy = poll, min(hot, poll), window, busy
        self._last_activity = -float("inf")

    def activity(self) -> None:
        self._last_activity = _time.monotonic()

    def idle_wait(self) -> float:
        return self.hot if _time.monotonic() - self._last_activity < self.window else self.poll

    def sleep(self, seconds: float) -> None:
        seconds = float(seconds)
        _time.sleep(self.idle_wait() if seconds >= _IDLE_SLEEP_MIN else min(seconds, self.busy))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def _marking(fn: Any, paced: _PacedTime) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            paced.activity()

    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapped


def _notifying(fn: Any, notifier: Any) -> Any:
    """Flower's ``create_task`` of the node's state, then a byte to the ClientApp when a task was made.

    The loop creates the task before it pulls the message's objects from the SuperLink: the ClientApp
    starts its own calls meanwhile (its object pulls retry after milliseconds until they are stored)."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        task_id = fn(*args, **kwargs)
        if task_id is not None:
            notifier.notify()
        return task_id

    wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapped


def run(args: list[str], poll: float = DEFAULT_POLL, hot: float = DEFAULT_HOT_POLL,
        window: float = DEFAULT_HOT_WINDOW, notify: str | None = None) -> None:
    """Run ``flower-supernode ARGS`` with the waits described in the module docstring."""
    from ehr_fed.federation.transports.flower_clientapp import check_poll_arguments

    check_poll_arguments(poll, hot, window)
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from ehr_fed.federation.transports.flower_pacing import fast_object_pulls

    paced = _PacedTime(poll, hot, window)
    loop.time = paced
    # the loop calls _push_messages after every message it received: the node is in a computation
    loop._push_messages = _marking(loop._push_messages, paced)  # pylint: disable=protected-access
    if notify:
        from ehr_fed.federation.transports.flower_notify import Notifier, NotifyError

        try:
            notifier = Notifier(notify)
        except NotifyError as exc:
            raise SystemExit(f"ehr-fed site supernode: {exc}") from None
        from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

        InMemoryNodeState.create_task = _notifying(InMemoryNodeState.create_task, notifier)
    fast_object_pulls(loop)
    sys.argv = ["flower-supernode", *args]
    flower_supernode()


_OPTIONS = {"--poll-interval": "poll", "--hot-poll": "hot", "--hot-window": "window", "--notify": "notify"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = {"poll": DEFAULT_POLL, "hot": DEFAULT_HOT_POLL, "window": DEFAULT_HOT_WINDOW}
    while argv[:1] and argv[0] in _OPTIONS:
        option = argv[0]
        if option == "--notify":
            if len(argv) < 2:
                raise SystemExit("--notify needs the path of the FIFO shared with the site's ClientApp")
            values["notify"] = argv[1]
        else:
            try:
                values[_OPTIONS[option]] = float(argv[1])
            except (IndexError, ValueError):
                raise SystemExit(f"{option} needs a number of seconds, e.g. {option} 0.05") from None
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    run(argv, **values)


if __name__ == "__main__":  # pragma: no cover - started as a process
    main()
