"""The site audit log: one JSON line for every payload that leaves a site."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

#: ``json.dumps(entry, sort_keys=True, default=str)`` with one encoder for every line
_LINE_JSON = json.JSONEncoder(sort_keys=True, default=str).encode


def describe_payload(payload: Any) -> dict[str, Any]:
    """Sizes of a payload without its values: arrays -> shape/dtype, bytes -> length."""
    if isinstance(payload, dict):
        return {str(k): describe_payload(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple, np.ndarray, bytes)) for v in payload):
            return {"list": len(payload)}
        return [describe_payload(v) for v in payload]
    if isinstance(payload, np.ndarray):
        return {"shape": list(payload.shape), "dtype": str(payload.dtype)}
    if isinstance(payload, bytes):
        return {"bytes": len(payload)}
    if isinstance(payload, str):
        return {"str": len(payload)}
    return type(payload).__name__


class AuditLog:
    """Append-only JSON-lines log of released payloads (thread safe).

    Each entry: ``time`` (UTC ISO), ``site_id``, ``task``, ``action``, ``round``, ``kind`` (what kind of
    statistic), ``sizes`` (shapes / byte lengths, never values), ``bytes`` (total), plus extra fields such as
    ``suppressed``. With ``path=None`` the entries are kept in memory only (``entries``).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def record(self, *, site_id: str, task: str, action: str, round: int, kind: str,
               payload: Any, nbytes: int, **extra: Any) -> dict[str, Any]:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "site_id": site_id,
            "task": task,
            "action": action,
            "round": int(round),
            "kind": kind,
            "sizes": describe_payload(payload),
            "bytes": int(nbytes),
        }
        entry.update(extra)
        line = _LINE_JSON(entry) if self.path is not None else None  # in memory only: nothing to encode
        with self._lock:
            self.entries.append(entry)
            if line is not None:
                with self.path.open("a") as fh:
                    fh.write(line + "\n")
        return entry

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Read every entry of an audit log file."""
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
