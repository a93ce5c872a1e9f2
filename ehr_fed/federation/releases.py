"""Released aggregates, signed by the site that decrypted them, so every site can replay the protocol.

A decrypting site opens a secure sum, applies its disclosure rules and releases the aggregate to the
coordinator. It also signs a *release record*: the computation (study, session, round, task, parameter
digest, participant set), the signer and the exact released values. The coordinator forwards these records
in later requests (the transcript); each site checks every record's signature against the signing key it
pinned in the key ceremony (never a key the coordinator supplies) and derives the next round's parameters
itself from the released values, refusing parameters that do not follow.

A record travels as plain JSON (strings and lists only), values as the hex of their little-endian float64
bytes, so it survives any transport bit for bit::

    {"study": ..., "session": ..., "round": 3, "task": "logreg.newton", "params_digest": ...,
     "participants": [...], "signer": "site_a",
     "arrays": {"gradient": {"shape": [27], "f8": "<hex>"}, ...}, "signature": "<hex>"}

plus ``"suppressed"`` (the site's suppression of the release: cells, merged groups of bins) when there was any.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.signing import canonical_json

__all__ = ["encode_arrays", "decode_arrays", "release_digest", "sign_release", "signed_suppressed",
           "verify_release", "verify_transcript"]

_FIELDS = ("study", "session", "round", "task", "params_digest", "participants", "signer")


def encode_arrays(arrays: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Released values as ``{name: {"shape": [...], "f8": hex}}`` (float64, little-endian, C order)."""
    out = {}
    for name in sorted(arrays):
        a = np.array(arrays[name], dtype="<f8", order="C")
        out[str(name)] = {"shape": [int(s) for s in a.shape], "f8": a.tobytes().hex()}
    return out


def decode_arrays(encoded: Any, where: str = "release record") -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_arrays`; :class:`ProtocolError` on anything malformed."""
    if not isinstance(encoded, dict):
        raise ProtocolError(f"{where}: arrays must be a mapping of output names")
    out = {}
    for name, spec in encoded.items():
        try:
            shape = [int(s) for s in spec["shape"]]
            raw = bytes.fromhex(spec["f8"])
            if any(s < 0 for s in shape) or len(raw) != 8 * int(np.prod(shape, dtype=np.int64)):
                raise ValueError("the data does not fill the shape")
            out[str(name)] = np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{where}: output {name!r} is not a shaped float64 array ({exc})") from None
    return out


def release_digest(record: Mapping[str, Any]) -> bytes:
    """SHA-256 over the record's header fields and its encoded values (everything but the signature)."""
    try:
        header = {k: record[k] for k in _FIELDS}
        header["round"] = int(header["round"])
        header["participants"] = sorted(str(x) for x in header["participants"])
        arrays = record["arrays"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"release record is missing or has a malformed field ({exc})") from None
    if not isinstance(arrays, dict):
        raise ProtocolError("release record: arrays must be a mapping of output names")
    h = hashlib.sha256(b"ehr-fed release v1\x00")
    h.update(canonical_json(header).encode())
    h.update(canonical_json(arrays).encode())
    if "suppressed" in record:  # signed with the values (records without it hash as before)
        try:
            h.update(b"\x00suppressed\x00" + canonical_json(record["suppressed"]).encode())
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"release record: malformed suppression ({exc})") from None
    return h.digest()


def sign_release(keys, *, study: str, session: str, round: int, task: str, params_digest: str,
                 participants: list[str], arrays: Mapping[str, Any],
                 suppressed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The signed release record of ``arrays`` (signed with ``keys``, the decrypting site's identity keys).

    ``suppressed`` (the site's disclosure control of this release: per output, the suppressed cells or the
    merged groups of bins) is signed with the values when it is not empty, so a site that replays a
    computation from the record (the boosting cuts from a sketch) reads the groups the decrypting site
    applied, not groups the coordinator claims."""
    record: dict[str, Any] = {"study": str(study), "session": str(session), "round": int(round), "task": str(task),
                              "params_digest": str(params_digest),
                              "participants": sorted(str(x) for x in participants),
                              "signer": str(keys.site_id), "arrays": encode_arrays(arrays)}
    if suppressed:
        record["suppressed"] = json.loads(json.dumps({str(k): v for k, v in suppressed.items()}, default=int))
    record["signature"] = keys.sign(release_digest(record)).hex()
    return record


def signed_suppressed(record: Mapping[str, Any], name: str) -> Any:
    """The suppression of output ``name`` a (verified) release record signs, or None when it signs none."""
    suppressed = record.get("suppressed")
    return suppressed.get(name) if isinstance(suppressed, dict) else None


def verify_release(peers: Mapping[str, Any], record: Any, *, study: str | None = None,
                   session: str | None = None, task: str | None = None,
                   decryptors: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Check one release record against the pinned ``peers`` (site id -> public bundle); return its values.

    ``study``, ``session`` and ``task``, when given, must match the record's. ``decryptors`` (a site's
    record of the decrypting site it agreed to per computation, ``"<study>/<task>/<params digest>"``):
    a record of such a computation must be signed by that site, not by another member. Raises
    :class:`ProtocolError` naming what failed; never trusts a key carried by the record itself.
    """
    if not isinstance(record, dict):
        raise ProtocolError("a release record must be a mapping")
    signer = record.get("signer")
    bundle = peers.get(signer) if isinstance(signer, str) else None
    if bundle is None:
        raise ProtocolError(f"release record signed by {signer!r}, which is not a member of this federation")
    for name, want in (("study", study), ("session", session), ("task", task)):
        if want is not None and record.get(name) != want:
            raise ProtocolError(f"release record is for {name} {record.get(name)!r}, not {want!r}")
    agreed = (decryptors or {}).get(f"{record.get('study')}/{record.get('task')}/{record.get('params_digest')}")
    if agreed is not None and agreed != signer:
        raise ProtocolError(f"release record of {record.get('task')!r} (round {record.get('round')}) is signed by "
                            f"{signer!r}, but the contributors agreed to decryption by {agreed!r}")
    try:
        signature = bytes.fromhex(record["signature"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("release record has no valid hex signature") from None
    if not bundle.verify(signature, release_digest(record)):
        raise ProtocolError(f"the signature of {signer!r} on a release record of {record.get('task')!r} "
                            f"(round {record.get('round')}) does not verify: the values were altered")
    return decode_arrays(record["arrays"], f"release record of {record.get('task')!r}")


def verify_transcript(peers: Mapping[str, Any], records: Any, *, study: str, session: str,
                      task: str | None = None) -> list[dict[str, np.ndarray]]:
    """Verify a list of release records of one session (in order); return their values."""
    if not isinstance(records, list):
        raise ProtocolError("a transcript must be a list of release records")
    return [verify_release(peers, r, study=study, session=session, task=task) for r in records]
