"""Digests of site contributions, signed by the site and checked by the decrypting site."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: ``json.dumps(obj, sort_keys=True)``, the same text, without building an encoder for every call (the
#: statements below are hashed for every contribution and every reveal)
canonical_json = json.JSONEncoder(sort_keys=True).encode
#: ``json.dumps(obj, separators=(",", ":"))``, likewise
compact_json = json.JSONEncoder(separators=(",", ":")).encode
#: ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``, likewise (the pairwise masks' context)
canonical_compact_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


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
    return summary_digest(study=study, session=session, round=round, nonce=nonce, task=task, site_id=site_id,
                          summary=contribution_summary(arrays, shapes), participants=participants, params=params,
                          decryptor=decryptor)


def contribution_summary(arrays: Mapping[str, Any], shapes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per output: its shape and the SHA-256 of its data (what the reveal list carries instead of the
    ciphertexts: enough to check the contributor's signature)."""
    return {str(name): {"shape": [int(s) for s in shapes[name]],
                        "sha256": hashlib.sha256(array_bytes(arrays[name])).hexdigest()} for name in sorted(arrays)}


def summary_digest(*, study: str, session: str, round: int, nonce: str, task: str, site_id: str,
                   summary: Mapping[str, Any], participants: Sequence[str], params: str, decryptor: str) -> bytes:
    """:func:`contribution_digest` computed from a :func:`contribution_summary` (what the reveal step checks
    without the ciphertexts)."""
    h = hashlib.sha256()
    header = {"study": study, "session": session, "round": int(round), "nonce": nonce, "task": task,
              "site_id": site_id, "names": sorted(summary), "participants": sorted(participants),
              "params": params, "decryptor": decryptor}
    h.update(canonical_json(header).encode())
    for name in sorted(summary):
        h.update(name.encode() + b"\x00")
        h.update(json.dumps([int(s) for s in summary[name]["shape"]]).encode())
        h.update(bytes.fromhex(summary[name]["sha256"]))
    return h.digest()
