"""The coordinator's checkpoint: a journal of completed rounds.

After every completed round the coordinator writes the round's aggregated result to
``<checkpoint_dir>/rounds/<round>.json`` (atomically: temporary file, fsync, rename), keyed by the
action, task and a hash of the parameters and layout. A restarted coordinator with the same directory
replays: the computation asks for the same rounds in the same order, and each journaled round returns
its stored result without contacting the sites, until the first round not in the journal, from which on
it runs live. A round asked with different parameters than journaled (the computation changed) discards
that round and every later one.

The session id is kept in ``<checkpoint_dir>/session`` so the sites see one continuing session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _enc(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__nd__": obj.dtype.str, "shape": list(obj.shape),
                "data": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode()}
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode()}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _enc(v)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_enc(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _dec(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__nd__" in obj:
            arr = np.frombuffer(base64.b64decode(obj["data"]), dtype=np.dtype(obj["__nd__"]))
            return arr.reshape(obj["shape"]).copy()
        if "__bytes__" in obj:
            return base64.b64decode(obj["__bytes__"])
        if "__dict__" in obj:
            return {k: _dec(v) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_dec(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """JSON text of a result holding arrays / bytes / dicts (exact round trip with :func:`loads`)."""
    return json.dumps(_enc(obj))


def loads(text: str) -> Any:
    return _dec(json.loads(text))


#: digests already computed in this process, keyed by the SHA-256 of the parts' pickle (see params_hash)
_HASHES: dict[bytes, str] = {}
_HASHES_LOCK = threading.Lock()
_HASHES_MAX = 4096


def clear_hash_cache() -> None:
    """Forget the digests :func:`params_hash` looked up (benchmarks start each timed fit without them)."""
    with _HASHES_LOCK:
        _HASHES.clear()


def params_hash(*parts: Any) -> str:
    """Stable hash of parameters (arrays included, bit-exact): SHA-256 of their canonical JSON text.

    A site checking a transcript hashes the same earlier requests again at every round (each request carries
    the ones before it). The canonical text is built in Python, its pickle in C, so the digest of parts whose
    pickle was seen before is looked up instead of recomputed. A lookup is exact: equal pickle bytes
    unpickle to equal objects, which have the same canonical text; parts that pickle differently but hash
    alike (a tuple and a list, ``np.float64`` and ``float``) are only computed again.
    """
    try:
        key = hashlib.sha256(pickle.dumps(parts, protocol=5)).digest()
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        key = None
    if key is not None:
        with _HASHES_LOCK:
            hit = _HASHES.get(key)
        if hit is not None:
            return hit
    value = hashlib.sha256(dumps(list(parts)).encode()).hexdigest()
    if key is not None:
        with _HASHES_LOCK:
            if len(_HASHES) >= _HASHES_MAX:
                _HASHES.pop(next(iter(_HASHES)))  # the oldest entry
            _HASHES[key] = value
    return value


class Journal:
    """Completed rounds of one coordinator, on disk (``directory``) or nowhere (``None``)."""

    def __init__(self, directory: str | Path | None):
        self.dir = Path(directory) if directory is not None else None
        self.session = secrets.token_hex(8)
        self._entries: dict[int, dict[str, Any]] = {}
        if self.dir is None:
            return
        (self.dir / "rounds").mkdir(parents=True, exist_ok=True)
        sfile = self.dir / "session"
        if sfile.exists():
            self.session = sfile.read_text().strip()
        else:
            self._atomic_write(sfile, self.session)
        for f in sorted((self.dir / "rounds").glob("*.json")):
            try:
                entry = json.loads(f.read_text())
                self._entries[int(entry["round"])] = entry
            except (ValueError, KeyError):
                log.warning("checkpoint: ignoring unreadable round file %s", f)

    @property
    def last_round(self) -> int:
        return max(self._entries, default=-1)

    def lookup(self, round: int, key: str) -> tuple[bool, Any]:
        """``(True, result)`` when ``round`` is journaled under ``key``; discards it and later rounds
        when journaled under another key."""
        entry = self._entries.get(round)
        if entry is None:
            return False, None
        if entry["key"] == key:
            return True, loads(entry["result"])
        log.warning("checkpoint: round %d was journaled for other parameters; discarding rounds >= %d",
                    round, round)
        for r in [r for r in self._entries if r >= round]:
            del self._entries[r]
            if self.dir is not None:
                (self.dir / "rounds" / f"{r:08d}.json").unlink(missing_ok=True)
        return False, None

    def record(self, round: int, key: str, label: str, result: Any) -> None:
        entry = {"round": round, "key": key, "label": label, "result": dumps(result)}
        self._entries[round] = entry
        if self.dir is not None:
            self._atomic_write(self.dir / "rounds" / f"{round:08d}.json", json.dumps(entry))

    @staticmethod
    def _atomic_write(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
