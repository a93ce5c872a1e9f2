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
5. decrypts only the sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehr_fed.federation import he
from ehr_fed.federation.messages import ProtocolError, TaskMessage
from ehr_fed.federation.signing import array_bytes, contribution_digest
from ehr_fed.privacy import DisclosureError


def open_sum(site, msg: TaskMessage) -> tuple[dict[str, np.ndarray], list[str]]:
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
    if decryptor != site.site_id:
        raise ProtocolError(f"the contributors agreed to decryption by {decryptor!r}, not by this site")
    encrypted = bool(p.get("encrypted", False))
    if encrypted and site._sk is None:
        raise ProtocolError("this site holds no Paillier private key and cannot decrypt")
    if not isinstance(contributions, list) or not contributions:
        raise ProtocolError("decrypt request carries no contributions")
    names = sorted(total)
    seen: list[str] = []
    for c in contributions:
        sid = c.get("site_id")
        bundle = site.keys.peers.get(sid)
        if bundle is None:
            raise ProtocolError(f"contribution from unknown site {sid!r}: not a member of the key ceremony")
        if sid in seen:
            raise ProtocolError(f"site {sid!r} contributes twice to one sum")
        if sorted(c["arrays"]) != names:
            raise ProtocolError(f"contribution of {sid!r} has outputs {sorted(c['arrays'])}, the sum has {names}")
        if any(isinstance(v, bytes) != encrypted for v in c["arrays"].values()):
            raise ProtocolError(f"contribution of {sid!r} is not {'encrypted' if encrypted else 'plaintext'}")
        signed = contribution_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce,
                                     task=msg.task, site_id=sid, arrays=c["arrays"], shapes=c["shapes"],
                                     participants=participants, params=digest, decryptor=decryptor)
        if not bundle.verify(c["signature"], signed):
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
    out: dict[str, np.ndarray] = {}
    for name in names:
        if any(list(c["shapes"][name]) != list(shapes[name]) for c in contributions):
            raise ProtocolError(f"sites disagree on the shape of {name!r}")
        mine = he.add(pk, [c["arrays"][name] for c in contributions])
        if array_bytes(mine) != array_bytes(total[name]):
            raise ProtocolError(
                f"the coordinator's sum of {name!r} is not the sum of the signed contributions; refusing to decrypt"
            )
        spec = (p.get("layout") or {}).get(name)
        if isinstance(spec, dict):
            try:
                widths = he.field_widths(spec)
            except (KeyError, TypeError, ValueError) as exc:
                raise ProtocolError(f"the decrypt request's layout of {name!r} is invalid: {exc}") from None
            vec = he.decrypt_fields(site._sk, pk, mine, widths)
        else:
            vec = he.decrypt(site._sk, pk, mine)
        out[name] = vec.reshape([int(s) for s in shapes[name]])
    return out, sorted(seen)


def summarize(contributions: list[dict[str, Any]]) -> list[str]:
    return sorted(c["site_id"] for c in contributions)
