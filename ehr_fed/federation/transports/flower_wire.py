"""A non-executable wire form for ehr-fed's flat messages, and length-prefixed frames of it.

One flat message (``{path: leaf}``, see :mod:`ehr_fed.federation.payload`) becomes one ``bytes`` blob::

    b"EHRF1" | u32 header length | JSON header | raw buffers

The JSON header lists every leaf as ``[path, kind, value-or-layout]`` with ``kind`` one of ``none``,
``bool``, ``int``, ``float``, ``str``, ``bytes``, ``array``; arrays and bytes point into the buffer
section (``offset``, ``nbytes``; arrays also ``dtype`` and ``shape``). Decoding builds only those values:
no pickle, no object dtype, no code. Every check failure raises :class:`WireError` naming the problem.

Why one blob: Flower stores and fetches every record value of a message as a separate object, so a
boosting request with dozens of small arrays cost dozens of round trips per message. As one blob in
one ``ArrayRecord`` entry, a message is a handful of objects whatever its payload.

:func:`send_frame` / :func:`recv_frame` carry such blobs over a stream socket (u32 length prefix,
bounded size), for the site's local socket and the coordinator's relay.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

MAGIC = b"EHRF1"
#: largest frame accepted on a local socket (bytes)
MAX_FRAME = 1 << 30
_ALLOWED_KINDS = "biuf"


class WireError(ValueError):
    """A blob or frame that is not a well-formed ehr-fed wire message."""


def pack(flat: Mapping[str, Any]) -> bytes:
    """Encode a flat message (``{str: leaf}``) as one blob; see the module docstring."""
    entries: list[list[Any]] = []
    buffers: list[bytes] = []
    offset = 0
    for key, value in flat.items():
        if not isinstance(key, str):
            raise WireError(f"flat message key {key!r} is not a str")
        if value is None:
            entries.append([key, "none", None])
        elif isinstance(value, bool | np.bool_):
            entries.append([key, "bool", bool(value)])
        elif isinstance(value, int | np.integer):
            entries.append([key, "int", int(value)])
        elif isinstance(value, float | np.floating):
            entries.append([key, "float", float(value)])
        elif isinstance(value, str):
            entries.append([key, "str", value])
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            entries.append([key, "bytes", {"offset": offset, "nbytes": len(data)}])
            buffers.append(data)
            offset += len(data)
        elif isinstance(value, np.ndarray):
            if value.dtype.kind not in _ALLOWED_KINDS:
                raise WireError(f"{key}: array of dtype {value.dtype} cannot be sent (only bool, int, uint, float)")
            arr = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
            data = arr.tobytes()
            entries.append([key, "array", {"offset": offset, "nbytes": len(data), "dtype": arr.dtype.str,
                                          "shape": list(arr.shape)}])
            buffers.append(data)
            offset += len(data)
        else:
            raise WireError(f"{key}: a value of type {type(value).__name__} cannot be sent")
    header = json.dumps(entries, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *buffers])


def unpack(blob: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode a blob made by :func:`pack`; raises :class:`WireError` for anything else."""
    view = memoryview(blob)
    if len(view) < len(MAGIC) + 4 or bytes(view[: len(MAGIC)]) != MAGIC:
        raise WireError("not an ehr-fed wire message (bad magic)")
    (hlen,) = struct.unpack_from("<I", view, len(MAGIC))
    start = len(MAGIC) + 4
    if start + hlen > len(view):
        raise WireError(f"header length {hlen} runs past the end of the message ({len(view)} bytes)")
    try:
        entries = json.loads(bytes(view[start:start + hlen]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"header is not JSON: {exc}") from None
    body = view[start + hlen:]
    if not isinstance(entries, list):
        raise WireError("header must be a list of [path, kind, value]")
    out: dict[str, Any] = {}
    for item in entries:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            raise WireError(f"header entry {item!r:.80} is not [path, kind, value]")
        key, kind, val = item
        out[key] = _leaf(key, kind, val, body)
    return out


def _leaf(key: str, kind: Any, val: Any, body: memoryview) -> Any:
    scalar_types = {"none": type(None), "bool": bool, "str": str, "float": (int, float)}
    if kind in scalar_types:
        if not isinstance(val, scalar_types[kind]) or (kind == "float" and isinstance(val, bool)):
            raise WireError(f"{key}: {kind} entry holds {type(val).__name__}")
        return float(val) if kind == "float" else val
    if kind == "int":
        if not isinstance(val, int) or isinstance(val, bool):
            raise WireError(f"{key}: int entry holds {type(val).__name__}")
        return val
    if kind not in ("bytes", "array"):
        raise WireError(f"{key}: unknown kind {kind!r}")
    if not isinstance(val, dict):
        raise WireError(f"{key}: {kind} entry without a layout")
    off, n = val.get("offset"), val.get("nbytes")
    if not (isinstance(off, int) and isinstance(n, int) and 0 <= off and 0 <= n and off + n <= len(body)):
        raise WireError(f"{key}: buffer [{off}, +{n}) outside the message body ({len(body)} bytes)")
    data = body[off:off + n]
    if kind == "bytes":
        return bytes(data)
    try:
        dtype = np.dtype(str(val.get("dtype")))
    except TypeError:
        raise WireError(f"{key}: unknown dtype {val.get('dtype')!r}") from None
    shape = val.get("shape")
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
        raise WireError(f"{key}: dtype {dtype} is not allowed (only bool, int, uint, float)")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise WireError(f"{key}: bad shape {shape!r}")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != n:
        raise WireError(f"{key}: {n} bytes do not hold an array of shape {shape} and dtype {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


# -- frames on stream sockets ---------------------------------------------------------------------
def send_frame(sock: socket.socket, blob: bytes) -> None:
    """Send one length-prefixed blob."""
    sock.sendall(struct.pack("<Q", len(blob)) + blob)


def recv_frame(sock: socket.socket, max_bytes: int = MAX_FRAME) -> bytes:
    """Receive one length-prefixed blob; :class:`EOFError` when the peer closed before one started."""
    head = _recv_exact(sock, 8, allow_eof=True)
    (n,) = struct.unpack("<Q", head)
    if n > max_bytes:
        raise WireError(f"frame of {n} bytes is larger than the limit of {max_bytes} bytes")
    return _recv_exact(sock, n)


def _recv_exact(sock: socket.socket, n: int, allow_eof: bool = False) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if allow_eof and got == 0:
                raise EOFError("peer closed the connection")
            raise WireError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
