"""A site's protocol memory: used nonces, the last round per session, and every sum it opened.

The memory lives in an append-only JSON-lines file (mode 0600) when the site has a state directory, so a
restarted site still refuses a replayed message and still refuses to open a computation over a second
participant set (differencing). Without a directory it is kept in memory only (notebooks, tests).

Each line is one event::

    {"e": "nonce", "nonce": "...", "session": "...", "round": 3}
    {"e": "opened", "key": "<study>/<task>/<params digest>", "sites": ["site_a", "site_b", "site_c"]}
    {"e": "contributed", "key": "<study>/<task>/<params digest>", "decryptor": "site_a"}
    {"e": "record", "key": "<study>/intervals/<column>/<group>", "value": {...}}   (last one wins)

Why contributors remember the decrypting site: two decryptors, each opening the same computation over a
different participant set, would each see nothing wrong; their two sums differ by one site's numbers. A
contributor therefore contributes to one computation only for the one decrypting site it first agreed to
(that site's own record then refuses a second participant set).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class SiteState:
    """Nonces, rounds and opened computations of one site (restart-safe with ``path``)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.nonces: set[str] = set()
        self.last_round: dict[str, int] = {}
        self.opened: dict[str, tuple[str, ...]] = {}
        self.decryptors: dict[str, str] = {}
        self.records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self._load()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _load(self) -> None:
        if not self.path.exists():
            return
        for i, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                ev = json.loads(line)
                if ev["e"] == "nonce":
                    self.nonces.add(ev["nonce"])
                    self.last_round[ev["session"]] = max(self.last_round.get(ev["session"], -1), int(ev["round"]))
                elif ev["e"] == "opened":
                    self.opened[ev["key"]] = tuple(ev["sites"])
                elif ev["e"] == "contributed":
                    self.decryptors.setdefault(ev["key"], ev["decryptor"])
                elif ev["e"] == "record":
                    self.records[ev["key"]] = dict(ev["value"])
            except (ValueError, KeyError, TypeError):
                # a torn last line after a crash; anything else is a damaged file the operator must see
                log.warning("site state %s: ignoring unreadable line %d", self.path, i)

    def _append(self, event: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # -- replay ------------------------------------------------------------------------------
    def check_fresh(self, session: str, round: int, nonce: str) -> str | None:
        """Record the message; return why it is stale or replayed (``None`` if fresh)."""
        with self._lock:
            last = self.last_round.get(session, -1)
            if round < last:
                return f"stale message: round {round} of session {session} is older than round {last}"
            if nonce in self.nonces:
                return f"replayed message: nonce {nonce} was already used"
            self.nonces.add(nonce)
            self.last_round[session] = round
            self._append({"e": "nonce", "nonce": nonce, "session": session, "round": int(round)})
        return None

    # -- differencing ------------------------------------------------------------------------
    def record_opening(self, key: str, sites) -> tuple[str, ...] | None:
        """Record that ``key`` was opened over ``sites``; return the earlier, different set if there is one."""
        sites = tuple(sorted(sites))
        with self._lock:
            prev = self.opened.get(key)
            if prev is not None and prev != sites:
                return prev
            if prev is None:
                self.opened[key] = sites
                self._append({"e": "opened", "key": key, "sites": list(sites)})
        return None

    def record_contribution(self, key: str, decryptor: str) -> str | None:
        """Record that this site contributes to ``key`` for ``decryptor``; return the earlier, different
        decrypting site if there is one (then the site must refuse)."""
        with self._lock:
            prev = self.decryptors.get(key)
            if prev is not None and prev != decryptor:
                return prev
            if prev is None:
                self.decryptors[key] = decryptor
                self._append({"e": "contributed", "key": key, "decryptor": decryptor})
        return None

    # -- records of what was released -----------------------------------------------------------
    def get_record(self, key: str) -> dict | None:
        """The last record stored under ``key`` (e.g. an interval ledger), ``None`` if there is none."""
        with self._lock:
            value = self.records.get(key)
        return None if value is None else dict(value)

    def put_record(self, key: str, value: dict) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, durably before the release it describes."""
        with self._lock:
            self.records[key] = dict(value)
            self._append({"e": "record", "key": key, "value": value})
