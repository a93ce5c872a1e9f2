"""Key ceremony: the private key reaches every site wrapped; the coordinator never holds it."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from ehr_fed.federation.keys import (
    CoordinatorKeys,
    KeyCeremonyError,
    SiteKeys,
    accept_private_key,
    wrap_private_key,
)
from ehr_fed.federation.testing import test_ceremony


def test_every_site_holds_the_same_private_key_and_coordinator_none():
    keys, ckeys = test_ceremony()
    privs = {k.paillier_private for k in keys.values()}
    assert len(privs) == 1 and None not in privs
    assert {k.paillier_public for k in keys.values()} == {ckeys.paillier_public}
    # the coordinator's key object has no private field and none of its values is a private key
    assert {f.name for f in dataclasses.fields(CoordinatorKeys)} == {"paillier_public", "sites", "creator"}
    blob = repr(ckeys.to_dict()).encode()
    for k in keys.values():
        assert k.kex_private.hex().encode() not in blob and k.sign_private.hex().encode() not in blob
    import base64
    assert base64.b64encode(next(iter(privs))).decode() not in repr(ckeys.to_dict())


def test_wrapped_key_opens_only_for_its_recipient():
    keys, ckeys = test_ceremony()
    creator = keys[ckeys.creator]
    outsider = SiteKeys.generate("site_x")
    wrapped = wrap_private_key(creator, {s: k.public_bundle() for s, k in keys.items()})
    assert ckeys.creator not in wrapped and set(wrapped) == set(keys) - {ckeys.creator}
    w = wrapped["site_b"]
    with pytest.raises(KeyCeremonyError, match="is for 'site_b', not for 'site_x'"):
        accept_private_key(outsider, w, creator.public_bundle(), ckeys.paillier_public)
    stolen = dataclasses.replace(w, recipient="site_x")
    with pytest.raises(KeyCeremonyError, match="not signed by the creator site"):
        accept_private_key(outsider, stolen, creator.public_bundle(), ckeys.paillier_public)
    tampered = dataclasses.replace(w, blob=w.blob[:-1] + bytes([w.blob[-1] ^ 1]))
    with pytest.raises(KeyCeremonyError, match="not signed by the creator"):
        accept_private_key(keys["site_b"], tampered, creator.public_bundle(), ckeys.paillier_public)


def test_key_files_are_0600_and_round_trip(tmp_path):
    keys, _ = test_ceremony()
    p = keys["site_a"].save(tmp_path / "k" / "site_a.site.json")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    again = SiteKeys.load(p)
    assert again.paillier_private == keys["site_a"].paillier_private and set(again.peers) == set(keys)
    os.chmod(p, 0o644)
    with pytest.raises(KeyCeremonyError, match="must be 0600"):
        SiteKeys.load(p)
