"""Key custody: keys only their owner held, pinned fingerprints, encryption at rest, threshold shares."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import numpy as np
import pytest

from ehr_fed.federation import Federation, he
from ehr_fed.federation.keys import (
    CoordinatorKeys,
    KeyCeremonyError,
    SiteKeys,
    accept_wrapped,
    deal_paillier,
    run_ceremony,
)
from ehr_fed.federation.testing import FEATURES, make_tables, test_ceremony
from ehr_fed.privacy import PrivacyPolicy


def test_single_scheme_every_site_holds_the_key_and_the_coordinator_none():
    keys, ckeys = test_ceremony()
    privs = {k.paillier_private for k in keys.values()}
    assert len(privs) == 1 and None not in privs
    assert {k.paillier_public for k in keys.values()} == {ckeys.paillier_public}
    # the coordinator's key object has no private field and none of its values is a private key
    assert not {f.name for f in dataclasses.fields(CoordinatorKeys)} & {"paillier_private", "paillier_share",
                                                                         "kex_private", "sign_private"}
    blob = repr(ckeys.to_dict()).encode()
    for k in keys.values():
        assert k.kex_private.hex().encode() not in blob and k.sign_private.hex().encode() not in blob
    import base64
    assert base64.b64encode(next(iter(privs))).decode() not in repr(ckeys.to_dict())


def test_threshold_scheme_no_site_holds_the_private_key():
    keys, ckeys = test_ceremony(scheme="threshold")
    assert ckeys.scheme == "threshold" and ckeys.threshold == 2
    assert all(k.paillier_private is None for k in keys.values())
    assert len({k.paillier_share for k in keys.values()}) == 3
    assert sorted(ckeys.share_index.values()) == [1, 2, 3]


def _three():
    return {s: SiteKeys.generate(s) for s in ("site_a", "site_b", "site_c")}


def test_unpinned_or_substituted_bundle_is_refused():
    sites = _three()
    a, b = sites["site_a"], sites["site_b"]
    with pytest.raises(KeyCeremonyError, match="no pinned fingerprint for 'site_b'"):
        a.accept_bundle(b.public_bundle())
    a.pin("site_b", b.public_bundle().fingerprint().upper().replace("-", " "))   # any spelling
    a.accept_bundle(b.public_bundle())
    # a relaying coordinator substitutes its own bundle under site_c's name
    mallory = SiteKeys.generate("site_c")
    a.pin("site_c", sites["site_c"].public_bundle().fingerprint())
    with pytest.raises(KeyCeremonyError, match="was substituted on the way"):
        a.accept_bundle(mallory.public_bundle())
    assert "site_c" not in a.peers
    with pytest.raises(KeyCeremonyError, match="not a site fingerprint"):
        a.pin("site_c", "1234")


def test_wrapped_key_opens_only_for_its_pinned_recipient_and_creator():
    sites = _three()
    run_ceremony(sites, encrypted=False)                         # identities exchanged and pinned
    creator = sites["site_a"]
    ckeys, relay = deal_paillier(creator, 1024, allow_insecure=True)
    assert set(relay) == {"site_b", "site_c"}
    w = relay["site_b"]
    outsider = SiteKeys.generate("site_x")
    outsider.pin("site_a", creator.public_bundle().fingerprint())
    outsider.accept_bundle(creator.public_bundle())
    with pytest.raises(KeyCeremonyError, match="is for 'site_b', not for 'site_x'"):
        accept_wrapped(outsider, w, ckeys.paillier_public)
    with pytest.raises(KeyCeremonyError, match="not signed by the creator site"):
        accept_wrapped(outsider, dataclasses.replace(w, recipient="site_x"), ckeys.paillier_public)
    tampered = dataclasses.replace(w, blob=w.blob[:-1] + bytes([w.blob[-1] ^ 1]))
    with pytest.raises(KeyCeremonyError, match="not signed by the creator"):
        accept_wrapped(sites["site_b"], tampered, ckeys.paillier_public)
    # a coordinator that deals its own key as an unpinned "creator" is refused
    rogue = SiteKeys.generate("rogue")
    rogue.peers = dict(creator.peers)
    _, forged = deal_paillier(rogue, 1024, allow_insecure=True)
    with pytest.raises(KeyCeremonyError, match="has not accepted"):
        accept_wrapped(sites["site_b"], forged["site_b"], _.paillier_public)
    accept_wrapped(sites["site_b"], w, ckeys.paillier_public)
    assert sites["site_b"].paillier_private == creator.paillier_private


def test_key_files_are_encrypted_at_rest_0600_and_refuse_a_wrong_passphrase(tmp_path, monkeypatch):
    keys, _ = test_ceremony()
    p = keys["site_a"].save(tmp_path / "k" / "site_a.site.json", passphrase="correct horse")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    text = p.read_text()
    import base64
    assert base64.b64encode(keys["site_a"].kex_private).decode() not in text
    assert base64.b64encode(keys["site_a"].paillier_private).decode() not in text
    assert json.loads(text)["encrypted"]["kdf"] == "scrypt"
    again = SiteKeys.load(p, passphrase="correct horse")
    assert again.paillier_private == keys["site_a"].paillier_private and set(again.peers) == set(keys)
    assert again.pinned == keys["site_a"].pinned
    with pytest.raises(KeyCeremonyError, match="wrong passphrase"):
        SiteKeys.load(p, passphrase="wrong")
    monkeypatch.delenv("EHR_FED_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyCeremonyError, match="is encrypted: set EHR_FED_KEY_PASSPHRASE"):
        SiteKeys.load(p)
    monkeypatch.setenv("EHR_FED_KEY_PASSPHRASE", "correct horse")
    assert SiteKeys.load(p).sign_private == keys["site_a"].sign_private
    os.chmod(p, 0o644)
    with pytest.raises(KeyCeremonyError, match="must be 0600"):
        SiteKeys.load(p)


def test_unencrypted_key_files_only_in_the_test_mode(tmp_path, monkeypatch):
    keys, _ = test_ceremony()
    monkeypatch.delenv("EHR_FED_ALLOW_INSECURE_KEYS", raising=False)
    monkeypatch.delenv("EHR_FED_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyCeremonyError, match="refusing to write the private keys of site_a unencrypted"):
        keys["site_a"].save(tmp_path / "a.json")


@pytest.fixture(scope="module")
def tables():
    return make_tables((300, 350, 320), seed=11)


def _fit(tables, scheme, model):
    keys, _ = test_ceremony(tuple(tables), scheme=scheme)
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.5), site_keys=keys)
    return model.fit(fed)


def test_threshold_decryption_of_logistic_regression_equals_single_key_bit_for_bit(tables):
    from ehr_fed.models import FederatedLogisticRegression

    one = _fit(tables, "single", FederatedLogisticRegression(features=FEATURES))
    thr = _fit(tables, "threshold", FederatedLogisticRegression(features=FEATURES))
    assert np.array_equal(one.coef_, thr.coef_) and np.array_equal(one.covariance_, thr.covariance_)


def test_threshold_decryption_of_boosting_equals_single_key_bit_for_bit(tables):
    from ehr_fed.models import FederatedGradientBoostingClassifier

    kw = dict(n_estimators=2, max_depth=2, max_bin=16)
    one = _fit(tables, "single", FederatedGradientBoostingClassifier(**kw))
    thr = _fit(tables, "threshold", FederatedGradientBoostingClassifier(**kw))
    t = tables["site_a"]
    assert np.array_equal(one.predict_proba(t), thr.predict_proba(t))


def test_a_stolen_share_decrypts_nothing(tables):
    keys, ckeys = test_ceremony(tuple(tables), scheme="threshold")
    pk = he.load_public(ckeys.paillier_public)
    share = he.load_share(keys["site_b"].paillier_share, pk)
    blob = he.encrypt(pk, np.array([42.0, 7.0]), 100.0, 3)
    from ehr_fed.crypto import ThresholdError

    parts, proof = he.partial(share, pk, blob)
    with pytest.raises(ThresholdError, match="need threshold=2"):
        he.combine_decode(pk, blob, {share.index: parts}, {share.index: proof}, share.verification, [100.0, 3])
    # one share holder's node alone refuses to open a sum: it is no decrypting key
    from ehr_fed.federation import SiteNode

    node = SiteNode("site_b", tables["site_b"], PrivacyPolicy(min_sites=1), keys["site_b"])
    assert node.holds_private_key and node._sk is None
