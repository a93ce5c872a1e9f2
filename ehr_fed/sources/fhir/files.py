"""Finding FHIR input files and streaming the resources they hold.

Two layouts are read directly, plain or gzip-compressed:

* bulk NDJSON (``*.ndjson``, ``*.ndjson.gz``): one resource per line, any file name (the
  resource type comes from each line);
* JSON documents (``*.json``, ``*.json.gz``): a Bundle (transaction, collection, searchset, ...)
  whose ``entry[i].resource`` are the resources, or a single resource.

A Bundle document is parsed whole (one document is one JSON value); NDJSON is streamed
line by line, so memory is bounded by the largest Bundle, never by the source.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz")
#: characters of a malformed whole document kept in the quarantine
MAX_RAW_CHARS = 100_000


@dataclass(frozen=True)
class SourceFile:
    """One input file: ``layout`` is ``"ndjson"`` or ``"json"``."""

    path: Path
    layout: str
    size: int

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")


class Item:
    """One resource read from a file, or a parse failure (``resource`` is None, ``error`` set).

    ``pos`` is the NDJSON line number or the Bundle entry index; ``location`` (``file:line``,
    ``file#entry[i]``) is built only when asked for.
    """

    __slots__ = ("_loc", "_entry", "error", "pos", "raw", "refs", "resource")

    def __init__(self, loc, pos, resource, raw=None, refs=None, error=None, entry=None):
        self._loc = loc
        self.pos = pos
        self.resource = resource
        self.raw = raw
        self.refs = refs
        self.error = error
        self._entry = entry

    @property
    def location(self) -> str:
        loc = self._loc
        return loc if isinstance(loc, str) else f"{loc[0]}:{loc[1]}"

    def raw_text(self) -> str | None:
        if self.raw is not None:
            return _text(self.raw)
        if self._entry is not None:
            return orjson.dumps(self._entry).decode()
        return None


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    if len(text) > MAX_RAW_CHARS:
        return text[:MAX_RAW_CHARS] + f"... [{len(text) - MAX_RAW_CHARS} more characters]"
    return text


def layout_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    return None


def discover(path: str | Path, exclude: list[str] | tuple[str, ...] = ()) -> list[SourceFile]:
    """The FHIR files under ``path`` (a file, or a folder searched recursively), sorted by path.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When ``path`` is a file of another format, or a folder without FHIR files.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FHIR input {path} does not exist; give a Bundle/NDJSON file or a folder of them")
    if path.is_file():
        layout = layout_of(path)
        if layout is None:
            raise ValueError(
                f"FHIR input {path} is not a .json, .json.gz, .ndjson or .ndjson.gz file"
            )
        return [SourceFile(path, layout, path.stat().st_size)]
    files = []
    for p in sorted(path.rglob("*")):
        layout = layout_of(p)
        if layout is None or not p.is_file():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in exclude):
            continue
        files.append(SourceFile(p, layout, p.stat().st_size))
    if not files:
        raise ValueError(
            f"FHIR input folder {path} holds no .json, .json.gz, .ndjson or .ndjson.gz files"
        )
    return files


def _open_binary(sf: SourceFile):
    raw = open(sf.path, "rb")  # noqa: SIM115 - closed by the caller
    if sf.gzipped:
        return raw, io.BufferedReader(gzip.GzipFile(fileobj=raw), buffer_size=1 << 20)
    return raw, raw


def iter_file(sf: SourceFile, on_bytes: Callable[[int], None] | None = None) -> Iterator[Item]:
    """Yield the resources of one file in order (Bundles are expanded into their entries)."""
    if sf.layout == "ndjson":
        yield from _iter_ndjson(sf, on_bytes)
    else:
        yield from _iter_json(sf, on_bytes)


def _iter_ndjson(sf: SourceFile, on_bytes) -> Iterator[Item]:
    raw, fh = _open_binary(sf)
    name = str(sf.path)
    loads = orjson.loads
    last = 0
    try:
        for lineno, line in enumerate(fh, start=1):
            if lineno % 4096 == 0 and on_bytes is not None:
                now = raw.tell()
                on_bytes(now - last)
                last = now
            if not line.strip():
                continue
            try:
                value = loads(line)
            except orjson.JSONDecodeError as exc:
                yield Item((name, lineno), lineno, None, raw=line, error=f"not valid JSON: {exc}")
                continue
            if type(value) is dict and value.get("resourceType") == "Bundle":
                location = f"{name}:{lineno}"
                yield from _bundle_items(value, location, lineno, f"{location}#")
                continue
            yield Item((name, lineno), lineno, value, line)
        if on_bytes is not None:
            on_bytes(sf.size - last)
    finally:
        fh.close()
        raw.close()


def _iter_json(sf: SourceFile, on_bytes) -> Iterator[Item]:
    raw, fh = _open_binary(sf)
    try:
        data = fh.read()
    finally:
        fh.close()
        raw.close()
    if on_bytes is not None:
        on_bytes(sf.size)
    name = str(sf.path)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield Item(name, 0, None, raw=data, error=f"not valid JSON: {exc}")
        return
    del data
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        yield from _bundle_items(value, name, None, f"{name}#")
    else:
        yield Item(name, 0, value, entry=value)


def _bundle_items(bundle: dict, location: str, pos: int | None, prefix: str) -> Iterator[Item]:
    """Entries of a Bundle, with the Bundle's ``fullUrl`` -> ``Type/id`` map for references."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield Item(location, pos or 0, None, error="Bundle.entry is not a list", entry=bundle)
        return
    refs: dict[str, str] = {}
    for e in entries:
        if isinstance(e, dict):
            res = e.get("resource")
            url = e.get("fullUrl")
            if isinstance(url, str) and isinstance(res, dict):
                rid = res.get("id")
                if isinstance(rid, str):
                    refs[url] = rid
    for i, e in enumerate(entries):
        loc = f"{prefix}entry[{i}]"
        p = pos if pos is not None else i
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict):
            yield Item(loc, p, None, error="Bundle entry has no resource object", entry=e)
            continue
        if res.get("resourceType") == "Bundle":
            yield from _bundle_items(res, loc, p, f"{loc}.resource#")
            continue
        yield Item(loc, p, res, refs=refs, entry=e)


def read_raw(sf: SourceFile, positions: set[int]) -> dict[int, str]:
    """Raw text of the records at ``positions`` (NDJSON line numbers or Bundle entry indexes)."""
    found: dict[int, str] = {}
    if not positions:
        return found
    if sf.layout == "ndjson":
        raw, fh = _open_binary(sf)
        try:
            for lineno, line in enumerate(fh, start=1):
                if lineno in positions:
                    found[lineno] = _text(line)
                    if len(found) == len(positions):
                        break
        finally:
            fh.close()
            raw.close()
        return found
    for item in _iter_json(sf, None):
        if item.pos in positions and item.pos not in found:
            found[item.pos] = item.raw_text()
    return found
