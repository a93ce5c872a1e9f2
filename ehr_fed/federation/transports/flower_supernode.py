"""Flower's SuperNode with a short idle poll: ``ehr-fed site supernode [--poll-interval S] -- ARGS``.

Flower 1.41 and 1.42 have no option for how often an idle SuperNode asks the SuperLink for work: its
loop sleeps a fixed 3 s after every empty pull, and 0.5 s between checks for a finished reply. On a
federation whose rounds take a fraction of a second that pause is most of every exchange. This
launcher runs Flower's own ``flower-supernode`` (same code, same arguments, same Fleet API and
authentication) and only caps those two pauses at ``--poll-interval`` seconds (default 0.05), and
retries a message's not-yet-stored objects after milliseconds instead of 1 s
(:mod:`~ehr_fed.federation.transports.flower_pacing`). It changes nothing else; remove it once Flower
exposes these intervals.
"""

from __future__ import annotations

import sys
import time as _time
from typing import Any

DEFAULT_POLL = 0.05


class _PacedTime:
    """The ``time`` module as the SuperNode loop sees it: every sleep capped at ``poll`` seconds."""

    def __init__(self, poll: float):
        self.poll = poll

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(float(seconds), self.poll))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def run(args: list[str], poll: float = DEFAULT_POLL) -> None:
    """Run ``flower-supernode ARGS`` with its idle waits capped at ``poll`` seconds."""
    if not 0.005 <= poll <= 3.0:
        raise SystemExit(f"--poll-interval must be between 0.005 and 3 seconds, got {poll}")
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from ehr_fed.federation.transports.flower_pacing import fast_object_pulls

    loop.time = _PacedTime(poll)
    fast_object_pulls(loop)
    sys.argv = ["flower-supernode", *args]
    flower_supernode()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    poll = DEFAULT_POLL
    if argv[:1] == ["--poll-interval"]:
        try:
            poll = float(argv[1])
        except (IndexError, ValueError):
            raise SystemExit("--poll-interval needs a number of seconds, e.g. --poll-interval 0.05") from None
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    run(argv, poll)


if __name__ == "__main__":  # pragma: no cover - started as a process
    main()
