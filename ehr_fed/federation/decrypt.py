"""The decrypting site's checks before it opens a sum.

The coordinator sends the summed ciphertexts *and* every site's signed contribution. The decrypting site

1. checks each contribution's signature against the signing key it got in the key ceremony (never one
   supplied by the coordinator), and that all belong to one computation (study, session, round, nonce, task);
2. requires at least ``policy.min_sites`` distinct signed sites;
3. adds the contributions itself and checks that the coordinator's sum is that sum;
4. refuses to open a second, different subset of the same computation (differencing attack);
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
    except KeyError as exc:
        raise ProtocolError(f"decrypt request is missing {exc.args[0]!r}") from None
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
        digest = contribution_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce,
                                     task=msg.task, site_id=sid, arrays=c["arrays"], shapes=c["shapes"])
        if not bundle.verify(c["signature"], digest):
            raise ProtocolError(
                f"the signature of site {sid!r} does not match its contribution to {msg.task!r} round "
                f"{msg.round}; refusing to decrypt"
            )
        seen.append(sid)
    site.policy.check_min_sites(len(seen), f"the sum of {msg.task!r} round {msg.round}", site.site_id)
    key = f"{msg.session}/{msg.round}/{nonce}"
    with site._lock:
        prev = site._opened.get(key)
        if prev is not None and prev != tuple(sorted(seen)):
            raise DisclosureError(
                f"site {site.site_id} already decrypted {msg.task!r} round {msg.round} for sites {list(prev)}; "
                f"opening another subset {sorted(seen)} would reveal the difference",
                rule="differencing", site_id=site.site_id,
            )
        site._opened[key] = tuple(sorted(seen))
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
