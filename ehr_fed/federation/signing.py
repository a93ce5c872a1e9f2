"""Digests of site contributions, signed by the site and checked by the decrypting site."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def array_bytes(value: Any) -> bytes:
    """Canonical bytes of a contribution array: ciphertext bytes as is, arrays as little-endian float64."""
    if isinstance(value, bytes):
        return value
    return np.ascontiguousarray(np.asarray(value, dtype="<f8")).tobytes()


def contribution_digest(*, study: str, session: str, round: int, nonce: str, task: str, site_id: str,
                        arrays: dict[str, Any], shapes: dict[str, Any], participants: list[str],
                        params: str, decryptor: str) -> bytes:
    """SHA-256 over the header and, per output name, its shape and the hash of its data.

    The header binds the exact participant set of the sum and the digest of the computation's parameters
    and layout (:func:`ehr_fed.federation.masks.params_digest`) and the one site allowed to open the sum, so a
    decrypting site knows, from the contributors' own signatures, which computation over which sites it is
    asked to open and that it is the site they agreed to.
    """
    h = hashlib.sha256()
    header = {"study": study, "session": session, "round": int(round), "nonce": nonce, "task": task,
              "site_id": site_id, "names": sorted(arrays), "participants": sorted(participants),
              "params": params, "decryptor": decryptor}
    h.update(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode() + b"\x00")
        h.update(json.dumps([int(s) for s in shapes[name]]).encode())
        h.update(hashlib.sha256(array_bytes(arrays[name])).digest())
    return h.digest()
