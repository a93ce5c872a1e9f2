"""The decrypting site's checks before it opens a sum.

The coordinator sends the summed ciphertexts *and* every site's signed contribution. Each contribution is
masked (:mod:`ehr_fed.federation.masks`): opened alone it is a uniformly random residue, so the decrypting
site learns nothing from holding them. The decrypting site

1. checks each contribution's signature against the signing key it got in the key ceremony (never one
   supplied by the coordinator), and that all belong to one computation (study, session, round, nonce, task,
   parameter digest, participant set: all part of what every contributor signed);
2. requires that the contributors are exactly the signed participant set (the masks cancel only there) and
   at least ``policy.min_sites`` distinct sites;
3. adds the contributions itself and checks that the coordinator's sum is that sum;
4. refuses to open the same computation (task and parameter digest) over a different participant set
   (differencing attack);
5. with masks on, checks one signed self-mask reveal per participant and removes the self-masks from the
   sum (:mod:`ehr_fed.federation.reveal`); a share holder does the same before its partial decryption;
6. decrypts only the sum.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from ehr_fed.federation import he
from ehr_fed.federation.keys import unwrap_secret, wrap_secret
from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import ProtocolError, TaskMessage
from ehr_fed.federation.signing import array_bytes, contribution_digest


def verified_sum(site, msg: TaskMessage, *, role: str):
    """Every check of a decrypt (or partial-decrypt) request; returns the verified summed ciphertexts.

    ``role`` is ``"decryptor"`` (the site the contributors named, which opens or combines) or ``"share"``
    (a threshold share holder asked for its partial decryption).
    Returns ``(sums, shapes, layout, contributors, digest)``.
    """
    p = msg.payload
    try:
        contributions = p["contributions"]
        nonce = p["contribution_nonce"]
        total = p["sum"]
        participants = p["participants"]
        digest = p["params_digest"]
        decryptor = p["decryptor"]
    except KeyError as exc:
        raise ProtocolError(f"decrypt request is missing {exc.args[0]!r}") from None
    if not isinstance(participants, list) or not all(isinstance(x, str) for x in participants):
        raise ProtocolError("decrypt request: participants must be a list of site ids")
    if not isinstance(digest, str) or not digest:
        raise ProtocolError("decrypt request: params_digest must be a non-empty str")
    if "params" in p and params_digest(p["params"] if p["params"] is not None else {}) != digest:
        raise ProtocolError("decrypt request: its parameters are not those the contributors signed "
                            "(params_digest differs)")
    if not isinstance(total, dict) or not isinstance(p.get("layout") or {}, dict):
        raise ProtocolError("decrypt request: sum and layout must be mappings of output names")
    if role == "decryptor" and decryptor != site.site_id:
        raise ProtocolError(f"the contributors agreed to decryption by {decryptor!r}, not by this site")
    encrypted = bool(p.get("encrypted", False))
    if encrypted and site._sk is None and site._share is None:
        raise ProtocolError("this site holds no Paillier private key or key share and cannot decrypt")
    if not isinstance(contributions, list) or not contributions:
        raise ProtocolError("decrypt request carries no contributions")
    names = sorted(total)
    seen: list[str] = []
    for c in contributions:
        if not isinstance(c, dict) or not isinstance(c.get("arrays"), dict) or not isinstance(c.get("shapes"), dict):
            raise ProtocolError("decrypt request: a contribution is not {site_id, arrays, shapes, signature}")
        sid = c.get("site_id")
        bundle = site.keys.peers.get(sid)
        if bundle is None:
            raise ProtocolError(f"contribution from unknown site {sid!r}: not a member of the key ceremony")
        if sid in seen:
            raise ProtocolError(f"site {sid!r} contributes twice to one sum")
        if sorted(c["arrays"]) != names or sorted(c["shapes"]) != names:
            raise ProtocolError(f"contribution of {sid!r} has outputs {sorted(c['arrays'])}, the sum has {names}")
        if any(isinstance(v, bytes) != encrypted for v in c["arrays"].values()):
            raise ProtocolError(f"contribution of {sid!r} is not {'encrypted' if encrypted else 'plaintext'}")
        signature = c.get("signature")
        signed = contribution_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce,
                                     task=msg.task, site_id=sid, arrays=c["arrays"], shapes=c["shapes"],
                                     participants=participants, params=digest, decryptor=decryptor)
        if not isinstance(signature, bytes) or not bundle.verify(signature, signed):
            raise ProtocolError(
                f"the signature of site {sid!r} does not match its contribution to {msg.task!r} round "
                f"{msg.round}; refusing to decrypt"
            )
        seen.append(sid)
    if sorted(seen) != sorted(participants):
        raise ProtocolError(
            f"the decrypt request carries contributions of {sorted(seen)} but the sum was masked over the "
            f"participants {sorted(participants)}: the masks cancel only over all of them; rerun the round with "
            "the sites that answered"
        )
    site.policy.check_min_sites(len(seen), f"the sum of {msg.task!r} round {msg.round}", site.site_id)
    site.record_opening(msg.study, msg.task, digest, seen)
    pk = site._pk if encrypted else None
    shapes = contributions[0]["shapes"]
    sums = {}
    for name in names:
        if any(list(c["shapes"][name]) != list(shapes[name]) for c in contributions):
            raise ProtocolError(f"sites disagree on the shape of {name!r}")
        mine = he.add(pk, [c["arrays"][name] for c in contributions])
        if array_bytes(mine) != array_bytes(total[name]):
            raise ProtocolError(
                f"the coordinator's sum of {name!r} is not the sum of the signed contributions; refusing to decrypt"
            )
        sums[name] = mine
    if encrypted and site.masks:
        sums = _without_self_masks(site, msg, sums, nonce, participants, digest, decryptor)
    layout = {}
    for name in names:
        spec = (p.get("layout") or {}).get(name)
        if isinstance(spec, dict):
            try:
                he.field_widths(spec)
            except (KeyError, TypeError, ValueError) as exc:
                raise ProtocolError(f"the decrypt request's layout of {name!r} is invalid: {exc}") from None
        layout[name] = spec
    return sums, shapes, layout, sorted(seen), digest


def _without_self_masks(site, msg: TaskMessage, sums, nonce, participants, digest, decryptor):
    """Check one signed reveal per participant and remove the self-masks from the verified sums."""
    from ehr_fed.federation.reveal import remove_self_masks, revealed_seeds

    seeds = revealed_seeds(site, msg, nonce=nonce, participants=participants, digest=digest, decryptor=decryptor)
    return remove_self_masks(site._pk, sums, seeds)


def open_sum(site, msg: TaskMessage) -> tuple[dict[str, np.ndarray], list[str]]:
    """The decrypting site: verify, then decrypt (single key) or combine the partial decryptions."""
    sums, shapes, layout, seen, digest = verified_sum(site, msg, role="decryptor")
    encrypted = bool(msg.payload.get("encrypted", False))
    pk = site._pk if encrypted else None
    if encrypted and site._sk is None:
        values = _combine(site, msg, sums, layout, digest)
    else:
        values = {}
        for name, total in sums.items():
            spec = layout[name]
            if isinstance(spec, dict):
                values[name] = he.decrypt_fields(site._sk, pk, total, he.field_widths(spec))
            else:
                values[name] = he.decrypt(site._sk, pk, total)
    return {name: v.reshape([int(x) for x in shapes[name]]) for name, v in values.items()}, seen


# -- threshold decryption ------------------------------------------------------------------------------------
def _partials_aad(msg: TaskMessage, holder: str, combiner: str, digest: str) -> bytes:
    return json.dumps({"from": holder, "to": combiner, "study": msg.study, "session": msg.session,
                       "round": msg.round, "nonce": msg.payload.get("contribution_nonce"), "task": msg.task,
                       "params": digest}, sort_keys=True).encode()


def partial_for_combiner(site, msg: TaskMessage) -> dict[str, Any]:
    """A share holder: the same checks as the decrypting site, then its partial decryptions (with proofs),
    encrypted to the combining site and signed: the coordinator relays them but cannot combine them."""
    if site._share is None:
        raise ProtocolError("this site holds no threshold key share")
    sums, _, _, _, digest = verified_sum(site, msg, role="share")
    combiner = msg.payload["decryptor"]
    bundle = site.keys.peers.get(combiner)
    if bundle is None:
        raise ProtocolError(f"the combining site {combiner!r} is not a member of the key ceremony")
    opened = {}
    for name, total in sums.items():
        parts, proof = he.partial(site._share, site._pk, total)
        opened[name] = {"partials": [format(int(v), "x") for v in parts], "proof": base64.b64encode(proof).decode()}
    blob_plain = json.dumps(opened, sort_keys=True).encode()
    aad = _partials_aad(msg, site.site_id, combiner, digest)
    blob = wrap_secret(bundle, blob_plain, aad)
    return {"partials": blob, "signature": site.keys.sign(aad + blob), "index": int(site._share.index)}


def _combine(site, msg: TaskMessage, sums, layout, digest) -> dict[str, np.ndarray]:
    if site._share is None:
        raise ProtocolError("this site holds no Paillier private key or key share and cannot decrypt")
    share = site._share
    given = msg.payload.get("partials")
    if not isinstance(given, dict):
        raise ProtocolError("threshold decrypt request carries no partial decryptions (payload 'partials')")
    parts: dict[str, dict[int, list[int]]] = {name: {} for name in sums}
    proofs: dict[str, dict[int, bytes]] = {name: {} for name in sums}
    for name, total in sums.items():
        own, proof = he.partial(share, site._pk, total)
        parts[name][share.index], proofs[name][share.index] = own, proof
    for holder, entry in given.items():
        bundle = site.keys.peers.get(holder)
        if bundle is None or holder == site.site_id:
            raise ProtocolError(f"partial decryption from {holder!r}, not another member of the key ceremony")
        try:
            blob, sig, index = entry["partials"], entry["signature"], int(entry["index"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"the partial decryption of {holder!r} is malformed") from None
        aad = _partials_aad(msg, holder, site.site_id, digest)
        if not isinstance(blob, bytes) or not isinstance(sig, bytes) or not bundle.verify(sig, aad + blob):
            raise ProtocolError(f"the partial decryption of {holder!r} is not signed by {holder!r}; refused")
        try:
            opened = json.loads(unwrap_secret(site.keys, blob, aad))
            for name in sums:
                parts[name][index] = [int(v, 16) for v in opened[name]["partials"]]
                proofs[name][index] = base64.b64decode(opened[name]["proof"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"the partial decryption of {holder!r} cannot be read: {exc}") from None
    out = {}
    for name, total in sums.items():
        try:
            out[name] = he.combine_decode(site._pk, total, parts[name], proofs[name], site._verification, layout[name])
        except ValueError as exc:
            raise ProtocolError(f"threshold decryption of {name!r} failed: {exc}") from None
    return out
