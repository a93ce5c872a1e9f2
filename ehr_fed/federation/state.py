"""A site's protocol memory: used nonces, the last round per session, and every sum it opened.

The memory lives in an append-only JSON-lines file (mode 0600) when the site has a state directory, so a
restarted site still refuses a replayed message and still refuses to open a computation over a second
participant set (differencing). Without a directory it is kept in memory only (notebooks, tests).

Each line is one event::

    {"e": "nonce", "nonce": "...", "session": "...", "round": 3}
    {"e": "opened", "key": "<study>/<task>/<params digest>", "sites": ["site_a", "site_b", "site_c"]}
    {"e": "contributed", "key": "<study>/<task>/<params digest>", "decryptor": "site_a"}
    {"e": "self_mask", "attempt": "[study, session, round, nonce, task]", "seed": "<hex>", ...}
    {"e": "complete", "key": "[study, task, params digest]", "sites": ["site_a", "site_b", "site_c"]}
    {"e": "record", "key": "<study>/intervals/<column>/<group>", "value": {...}}   (last one wins)

A ``self_mask`` line holds the secret seed of this site's self-mask for one attempt of a secure sum
(:mod:`ehr_fed.federation.reveal`) with what the site signed in that attempt; a ``complete`` line records that
the site saw a complete, signed set of contributions to a computation and revealed its seed for it. The file
therefore holds secrets of the site and is created with mode 0600.

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
from typing import Any

log = logging.getLogger(__name__)


class SiteState:
    """Nonces, rounds and opened computations of one site (restart-safe with ``path``)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.nonces: set[str] = set()
        self.last_round: dict[str, int] = {}
        self.opened: dict[str, tuple[str, ...]] = {}
        self.decryptors: dict[str, str] = {}
        self.self_masks: dict[str, dict] = {}
        self.complete: dict[str, tuple[str, ...]] = {}
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
                elif ev["e"] == "self_mask":
                    self.self_masks.setdefault(ev["attempt"], {k: v for k, v in ev.items() if k != "e"})
                elif ev["e"] == "complete":
                    self.complete.setdefault(ev["key"], tuple(ev["sites"]))
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
        return self._first(self.opened, key, sites, {"e": "opened", "key": key, "sites": list(sites)})

    def record_contribution(self, key: str, decryptor: str) -> str | None:
        """Record that this site contributes to ``key`` for ``decryptor``; return the earlier, different
        decrypting site if there is one (then the site must refuse)."""
        return self._first(self.decryptors, key, decryptor, {"e": "contributed", "key": key, "decryptor": decryptor})

    # -- self-masks and complete participant sets (drop-out recovery) -----------------------------------
    def record_self_mask(self, attempt: str, entry: dict) -> None:
        """Persist the self-mask seed of one attempt (and what the site signed in it) before the reply leaves.

        An attempt has one seed: a second record for the same attempt is refused (a seed is never reused).
        """
        with self._lock:
            if attempt in self.self_masks:
                raise ValueError(f"attempt {attempt} already has a self-mask seed; a seed is never reused")
            self.self_masks[attempt] = dict(entry)
            self._append({"e": "self_mask", "attempt": attempt, **entry})

    def self_mask(self, attempt: str) -> dict | None:
        """The recorded self-mask entry of ``attempt`` (``None`` if this site did not contribute to it)."""
        with self._lock:
            entry = self.self_masks.get(attempt)
            return dict(entry) if entry is not None else None

    def complete_set(self, key: str) -> tuple[str, ...] | None:
        """The participant set recorded as complete for the computation ``key`` (``None``: none yet)."""
        with self._lock:
            return self.complete.get(key)

    def record_complete(self, key: str, sites) -> tuple[str, ...] | None:
        """Record that computation ``key`` was complete with ``sites``; return the earlier, different set if
        there is one (then the site must refuse to reveal)."""
        sites = tuple(sorted(sites))
        return self._first(self.complete, key, sites, {"e": "complete", "key": key, "sites": list(sites)})

    def _first(self, table: dict, key: str, value: Any, event: dict) -> Any:
        """The first value recorded under ``key`` wins: record ``value`` (durably, ``event``) if there is none;
        return the earlier value when it differs (``None`` when it is the same or new)."""
        with self._lock:
            prev = table.get(key)
            if prev is None:
                table[key] = value
                self._append(event)
                return None
            return prev if prev != value else None

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
