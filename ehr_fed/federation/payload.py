"""Typed payloads: the only values a federation message may carry, checked when a message is built.

Allowed leaves: numpy arrays of a numeric or boolean dtype (no infinities; NaN marks a missing or
suppressed cell), finite
``int``/``float``/``bool`` scalars (numpy scalars are converted), ``str``, ``bytes`` and ``None``.
Containers: ``list``/``tuple`` (kept as lists) and ``dict`` with ``str`` keys, nested.

Flat form (for transports whose records are flat, e.g. Flower's ``RecordDict``): :func:`flatten` turns
a payload into ``{path: leaf}`` with ``/``-separated paths (list items as ``#<i>``), :func:`unflatten`
reverses it exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_MARK = "\x00"  # marks the two empty-container leaves; a string starting with it is escaped
_EMPTY_LIST = "\x00[]"
_EMPTY_DICT = "\x00{}"


class PayloadTypeError(TypeError):
    """A payload holds a value a federation message may not carry."""


def _fail(where: str, what: str) -> None:
    raise PayloadTypeError(
        f"payload{where or ''}: {what}; a message may carry only numeric numpy arrays, finite scalars, "
        "str, bytes, None and lists / str-keyed dicts of those"
    )


#: deepest nesting of lists / dicts a payload may have
MAX_DEPTH = 32


class _Invalid(Exception):
    """Raised by the fast pass of :func:`validate`; the checked pass then says where and why."""


def validate(value: Any, where: str = "") -> Any:
    """Return a normalised copy of ``value`` or raise :class:`PayloadTypeError` saying where and why.

    One fast pass normalises valid payloads (no path strings are built); only an invalid payload is walked a
    second time, with paths, for the error message.
    """
    try:
        return _normalise(value, 0)
    except _Invalid:
        _checked(value, where, 0)
        raise PayloadTypeError(f"payload{where}: invalid value") from None  # unreachable: _checked raised


#: leaves the fast pass keeps as they are (exact types: a subclass goes through the checked rules)
_KEPT = frozenset({type(None), str, bytes, int, bool})


def _normalise(value: Any, depth: int) -> Any:
    """:func:`_checked` without the paths (raises :class:`_Invalid`; the same rules, the same result).

    Leaves of a container are taken in the container's loop (most of a payload's values are such leaves), so
    only nested containers and other leaf types cost a call.
    """
    if depth > MAX_DEPTH:
        raise _Invalid
    t = type(value)
    if t in _KEPT:
        return value
    if t is dict:
        if value and depth >= MAX_DEPTH:  # its values would be nested too deep
            raise _Invalid
        out = {}
        for k, v in value.items():
            if type(k) is not str or "/" in k or k[:1] in ("#", "\x00"):
                raise _Invalid
            out[k] = v if type(v) in _KEPT else _normalise(v, depth + 1)
        return out
    if t is list or t is tuple:
        if value and depth >= MAX_DEPTH:
            raise _Invalid
        return [v if type(v) in _KEPT else _normalise(v, depth + 1) for v in value]
    if t is float:
        if not math.isfinite(value):
            raise _Invalid
        return value
    try:
        return _checked(value, "", depth)
    except PayloadTypeError:
        raise _Invalid from None


def _checked(value: Any, where: str = "", _depth: int = 0) -> Any:
    """The rules, with the path of the offending value in the error (see :func:`validate`)."""
    if _depth > MAX_DEPTH:
        _fail(where[:200], f"lists / dicts nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            _fail(where, f"non-finite scalar {v}")
        return v
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            _fail(where, f"array of dtype {value.dtype} (only bool, int, uint, float)")
        if value.dtype.kind == "f" and np.isinf(value).any():
            _fail(where, "array with infinite values (NaN marks missing or suppressed cells; inf is refused)")
        return value if value.flags.c_contiguous else value.copy(order="C")
    if isinstance(value, list | tuple):
        return [_checked(v, f"{where}[{i}]", _depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                _fail(where, f"dict key {repr(k)[:40]} is not a str")
            if "/" in k or k.startswith("#") or k.startswith("\x00"):
                _fail(where, f"dict key {k[:40]!r} may not contain '/' or start with '#'")
            out[k] = _checked(v, f"{where}[{k[:40]!r}]", _depth + 1)
        return out
    _fail(where, f"value of type {type(value).__name__}")
    return None  # unreachable


def flatten(payload: Any, prefix: str = "") -> dict[str, Any]:
    """``{path: leaf}`` form of a validated payload (arrays, scalars, str, bytes, None leaves)."""
    out: dict[str, Any] = {}
    if isinstance(payload, dict):
        if not payload:
            out[prefix] = _EMPTY_DICT
        for k, v in payload.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else k))
    elif isinstance(payload, list):
        if not payload:
            out[prefix] = _EMPTY_LIST
        for i, v in enumerate(payload):
            out.update(flatten(v, f"{prefix}/#{i}" if prefix else f"#{i}"))
    elif isinstance(payload, str) and payload.startswith(_MARK):
        out[prefix] = _MARK + payload  # escaped: a string is never read back as an empty container
    else:
        out[prefix] = payload
    return out


def unflatten(flat: dict[str, Any]) -> Any:
    """Inverse of :func:`flatten`."""
    if not isinstance(flat, dict):
        raise PayloadTypeError(f"a flat message is a dict of paths to leaves, got {type(flat).__name__}")
    if set(flat) == {""}:
        return _leaf(flat[""])
    root: dict[str, Any] = {}
    for path, leaf in flat.items():
        if not isinstance(path, str):
            raise PayloadTypeError(f"flat message path of type {type(path).__name__} is not a str")
        parts = path.split("/")
        if len(parts) > MAX_DEPTH + 2:
            raise PayloadTypeError(f"flat message path nested deeper than {MAX_DEPTH} levels")
        if isinstance(leaf, dict | list | tuple):
            raise PayloadTypeError(f"flat message path {path[:60]!r}: a leaf may not be a list or dict")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PayloadTypeError(f"flat message path {path[:60]!r} runs through a leaf")
        if isinstance(node.get(parts[-1]), dict):
            raise PayloadTypeError(f"flat message path {path[:60]!r} is both a leaf and a container")
        node[parts[-1]] = _leaf(leaf)
    return _lists(root)


def _leaf(v: Any) -> Any:
    if isinstance(v, str) and v.startswith(_MARK):
        if v == _EMPTY_LIST:
            return []
        if v == _EMPTY_DICT:
            return {}
        if v.startswith(_MARK * 2):
            return v[1:]
        raise PayloadTypeError("flat message leaf starts with a reserved marker character (\\x00)")
    return v


def _lists(node: Any) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    if all(k.startswith("#") for k in node):
        if not all(k[1:].isdigit() for k in node):
            raise PayloadTypeError(f"flat message list items must be '#<index>', got {sorted(node)[:3]}")
        items = sorted(node.items(), key=lambda kv: int(kv[0][1:]))
        return [_lists(v) for _, v in items]
    return {k: _lists(v) for k, v in node.items()}


def nbytes(payload: Any) -> int:
    """Approximate size of a payload in bytes (array data, bytes, strings)."""
    if isinstance(payload, dict):
        return sum(nbytes(v) for v in payload.values()) + sum(len(k) for k in payload)
    if isinstance(payload, list):
        return sum(nbytes(v) for v in payload)
    if isinstance(payload, np.ndarray):
        return int(payload.nbytes)
    if isinstance(payload, bytes | str):
        return len(payload)
    return 8
