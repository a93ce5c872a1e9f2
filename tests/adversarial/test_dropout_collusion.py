"""A coordinator colluding with the decrypting site fakes a drop-out to difference one site out of a sum.

The adversary is a malicious coordinator that also holds the decrypting site's key material (its Paillier
private key and its protocol state). It drives real :class:`SiteNode` objects through the real in-process
transport with messages it crafts itself. The attack without self-masks: let an attempt over all sites
``P`` complete, decrypt ``S(P)``, claim that the victim dropped out, rerun the same computation over
``P - {victim}`` and subtract. Each test plays one move of it and checks what the honest sites refuse and
what the colluders can (not) decrypt, at the level of raw Paillier plaintexts.
"""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.federation import Federation, SiteNode, he, site_task
from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import Reply, TaskMessage, new_nonce
from ehr_fed.federation.reveal import (
    attempt_key,
    contribution_summary,
    remove_self_masks,
    reveal_digest,
    summary_digest,
)
from ehr_fed.federation.signing import contribution_digest
from ehr_fed.federation.state import SiteState
from ehr_fed.federation.testing import FEATURES, make_tables, test_ceremony
from ehr_fed.federation.transports.base import SiteFailure
from ehr_fed.federation.transports.in_process import InProcessTransport
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.privacy import PrivacyPolicy

SITES = ("site_a", "site_b", "site_c", "site_d")
DECRYPTOR, VICTIM = "site_a", "site_d"          # the colluding decrypting site and the site it targets
HONEST = ("site_b", "site_c")                     # honest survivors of the faked drop-out
TASK, LAYOUT = "test.dropout_totals", {"totals": [1e7, 4]}


@site_task(TASK, kind="other")
def _totals(table, params, ctx):
    return {"totals": np.array([float(len(table)), float(table["age"].sum()), float(table["charlson"].sum())])}


@pytest.fixture(scope="module")
def tables():
    return make_tables((80, 95, 110, 70), seed=21)


@pytest.fixture
def harness(tables, tmp_path):
    h = Colluders(tables, tmp_path)
    yield h
    h.close()


class Colluders:
    """A malicious coordinator plus the decrypting site's key and state, against real sites."""

    def __init__(self, tables, state_dir, study="s1", scheme="single"):
        self.tables, self.state_dir, self.study = tables, state_dir, study
        self.keys, _ = test_ceremony(SITES, scheme=scheme, threshold=2 if scheme == "threshold" else None)
        self.nodes = {sid: self._node(sid) for sid in SITES}
        self.transport = InProcessTransport(self.nodes)
        self.session = new_nonce()
        self.pk = he.load_public(self.keys[DECRYPTOR].paillier_public)
        self.sk = he.load_private(self.keys[DECRYPTOR].paillier_private, self.pk)

    def _node(self, sid):
        return SiteNode(sid, self.tables[sid], PrivacyPolicy(), self.keys[sid], study=self.study,
                        state=self.state_dir / f"{sid}.state.jsonl")

    def restart(self, *sids):
        """New SiteNodes on the same state files (a restarted site service)."""
        self.transport.close()
        for sid in sids:
            self.nodes[sid] = self._node(sid)
        self.transport = InProcessTransport(self.nodes)

    def close(self):
        self.transport.close()

    # -- messages ---------------------------------------------------------------------------------------
    def send(self, action, payload, sites, nonce=None) -> dict[str, Reply]:
        nonce = nonce or new_nonce()
        msgs = {sid: TaskMessage(action, TASK, self.study, self.session, 0, nonce, payload) for sid in sites}
        out = self.transport.send(msgs, 60.0)
        assert not any(isinstance(r, SiteFailure) for r in out.values()), out
        return out

    def contribute(self, participants, sites=None):
        nonce = new_nonce()
        payload = {"params": {}, "layout": LAYOUT, "encrypted": True, "participants": sorted(participants),
                   "decryptor": DECRYPTOR}
        return nonce, self.send("secure_sum", payload, sites or participants, nonce=nonce)

    @staticmethod
    def entries(replies, sites=None, tags=False):
        """The reveal list: each contribution's summary and signature (and, with ``tags``, its pairwise tags,
        as the coordinator sends them)."""
        return [{"site_id": sid, "summary": contribution_summary(rep.payload["arrays"], rep.payload["shapes"]),
                 "signature": rep.payload["signature"], **({"tags": rep.payload["tags"]} if tags else {})}
                for sid, rep in sorted(replies.items()) if sites is None or sid in sites]

    def reveal(self, nonce, entries, sites):
        payload = {"contribution_nonce": nonce, "contributions": entries}
        return self.send("reveal", payload, sites)

    # -- the colluding decrypting site -----------------------------------------------------------------
    def own_seed(self, nonce):
        """The colluding decrypting site reads its own self-mask seed of an attempt from its state."""
        entry = self.nodes[DECRYPTOR].state.self_mask(attempt_key(self.study, self.session, 0, nonce, TASK))
        return bytes.fromhex(entry["seed"])

    def raw(self, blobs, seeds=None):
        """Raw plaintexts of the homomorphic sum of ``blobs`` after removing the given self-masks."""
        from ehr_fed.crypto import EncryptedVector

        total = he.add(self.pk, list(blobs))
        if seeds:
            total = remove_self_masks(self.pk, {"totals": total}, seeds)["totals"]
        return [self.sk.raw_decrypt(int(c)) for c in EncryptedVector.from_bytes(self.pk, total).ciphertexts]

    def truth_raw(self, sites):
        """The raw plaintexts the unmasked contributions of ``sites`` would sum to (the attack's target)."""
        blobs = [he.encrypt(self.pk, self.truth([s]), *LAYOUT["totals"]) for s in sites]
        return self.raw(blobs)

    def truth(self, sites):
        return sum(_totals(self.tables[s], {}, None)["totals"] for s in sites)


def _arrays(replies, sites):
    return [replies[s].payload["arrays"]["totals"] for s in sites]


def _refused(rep, code):
    return not rep.ok and rep.error_kind == "disclosure" and f"[{code}]" in rep.error


def _all_differ(a, b):
    return len(a) == len(b) and all(x != y for x, y in zip(a, b, strict=True))


# -- (a) a drop-out claimed after a complete attempt ------------------------------------------------------
def test_fake_dropout_after_a_complete_attempt_is_refused_even_after_a_restart(harness):
    nonce, first = harness.contribute(SITES)
    assert all(r.ok for r in first.values())
    revealed = harness.reveal(nonce, harness.entries(first), SITES)
    assert all(r.ok for r in revealed.values())
    seeds = {sid: r.payload["seed"] for sid, r in revealed.items()}
    # the complete attempt opens, as it should: S(P)
    assert harness.raw(_arrays(first, SITES), seeds) == harness.truth_raw(SITES)
    # "site_d dropped out": the same computation over the survivors
    _, rerun = harness.contribute([s for s in SITES if s != VICTIM])
    for sid in HONEST:
        assert _refused(rerun[sid], "rerun_after_complete"), rerun[sid].error
    # restarted honest sites remember (the state files), and the state file is the site's only
    harness.restart(*HONEST)
    _, again = harness.contribute([s for s in SITES if s != VICTIM], sites=HONEST)
    for sid in HONEST:
        assert _refused(again[sid], "rerun_after_complete"), again[sid].error
        state = harness.state_dir / f"{sid}.state.jsonl"
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        assert list(SiteState(state).complete.values()) == [tuple(SITES)]
    # another attempt over the complete set is no difference and goes ahead, with fresh seeds
    nonce2, full = harness.contribute(SITES)
    assert all(r.ok for r in full.values())
    assert harness.own_seed(nonce2) != harness.own_seed(nonce)


def test_revealing_a_complete_attempt_after_a_smaller_one_completed_is_refused(harness):
    survivors = [s for s in SITES if s != VICTIM]
    nonce1, first = harness.contribute(SITES)             # all contributions in, no reveal yet
    nonce2, rerun = harness.contribute(survivors)         # the claimed drop-out: honest sites cannot tell
    assert all(r.ok for r in rerun.values())
    revealed = harness.reveal(nonce2, harness.entries(rerun), survivors)
    seeds2 = {sid: r.payload["seed"] for sid, r in revealed.items()}
    assert harness.raw(_arrays(rerun, survivors), seeds2) == harness.truth_raw(survivors)
    # now the complete first attempt: the survivors recorded the computation complete with another set
    late = harness.reveal(nonce1, harness.entries(first), SITES)
    for sid in HONEST:
        assert _refused(late[sid], "reveal_other_set"), late[sid].error
    assert late[VICTIM].ok                                # the victim knows of no other set
    seeds1 = {DECRYPTOR: harness.own_seed(nonce1), VICTIM: late[VICTIM].payload["seed"]}
    # S(P) minus the self-masks the colluders hold: still masked by the honest sites' seeds
    assert _all_differ(harness.raw(_arrays(first, SITES), seeds1), harness.truth_raw(SITES))


# -- (b) the victim's contribution withheld from the others' reveal list ----------------------------------
def test_withholding_the_victims_contribution_from_the_reveal_list_reveals_nothing_useful(harness):
    nonce, replies = harness.contribute(SITES)
    others = [s for s in SITES if s != VICTIM]
    short = harness.reveal(nonce, harness.entries(replies, others), others)
    for sid in others:
        assert _refused(short[sid], "reveal_incomplete_set"), short[sid].error
    victim = harness.reveal(nonce, harness.entries(replies), [VICTIM])[VICTIM]
    assert victim.ok
    seeds = {DECRYPTOR: harness.own_seed(nonce), VICTIM: victim.payload["seed"]}
    # the attempt's sum: still masked by the seeds of the honest sites that refused
    assert _all_differ(harness.raw(_arrays(replies, SITES), seeds), harness.truth_raw(SITES))
    # the victim's own ciphertext without its self-mask: its pairwise masks remain
    alone = harness.raw(_arrays(replies, [VICTIM]), {VICTIM: victim.payload["seed"]})
    assert _all_differ(alone, harness.truth_raw([VICTIM]))
    with pytest.raises(ValueError):                        # and the protocol's decoder rejects it
        he.decrypt(harness.sk, harness.pk, remove_self_masks(harness.pk, {"totals": _arrays(replies, [VICTIM])[0]},
                                                             {VICTIM: victim.payload["seed"]})["totals"])
    # nothing was recorded complete by the refusing sites: a genuine rerun without the victim still runs
    _, rerun = harness.contribute(others)
    assert all(r.ok for r in rerun.values())


def test_reveal_for_an_attempt_the_site_never_contributed_to_is_refused(harness):
    nonce, replies = harness.contribute(SITES)
    out = harness.reveal(new_nonce(), harness.entries(replies), ["site_b"])
    assert _refused(out["site_b"], "reveal_unknown_attempt")


# -- (d) forged or missing signatures ----------------------------------------------------------------------
def test_reveal_list_with_a_forged_or_swapped_contribution_is_refused(harness):
    nonce, replies = harness.contribute(SITES)
    entries = harness.entries(replies)
    forged = [dict(e) for e in entries]
    victim = next(e for e in forged if e["site_id"] == VICTIM)
    victim["signature"] = next(e["signature"] for e in entries if e["site_id"] == DECRYPTOR)   # someone else's
    assert _refused(harness.reveal(nonce, forged, ["site_b"])["site_b"], "reveal_bad_signature")
    altered = [dict(e) for e in entries]
    target = next(e for e in altered if e["site_id"] == VICTIM)
    target["summary"] = {"totals": {**target["summary"]["totals"], "sha256": "00" * 32}}
    assert _refused(harness.reveal(nonce, altered, ["site_c"])["site_c"], "reveal_bad_signature")
    # an entry from another attempt of the victim (signed, but for another nonce)
    nonce_b, other = harness.contribute(SITES)
    mixed = [e for e in entries if e["site_id"] != VICTIM] + harness.entries(other, [VICTIM])
    assert _refused(harness.reveal(nonce, mixed, ["site_b"])["site_b"], "reveal_bad_signature")
    # the honest list still works after the refusals (nothing was recorded by them)
    assert all(r.ok for r in harness.reveal(nonce, entries, SITES).values())


def test_pairwise_tags_stand_for_signatures_and_a_third_member_cannot_forge_them(harness):
    """The reveal step checks the tag each contributor addressed to the receiving site (an HMAC under a key
    only the two derive) instead of every signature; a colluding member cannot make one for another pair."""
    from ehr_fed.federation.masks import pair_tag

    nonce, replies = harness.contribute(SITES)
    assert set(replies[VICTIM].payload["tags"]) == set(SITES) - {VICTIM}   # one tag per other participant
    unsigned = [dict(e, signature=b"") for e in harness.entries(replies, tags=True)]
    # the colluding decrypting site forges the victim's tag for site_b with the best key it has (its own)
    statement = summary_digest(study=harness.study, session=harness.session, round=0, nonce=nonce, task=TASK,
                               site_id=VICTIM, summary=unsigned[-1]["summary"], participants=list(SITES),
                               params=params_digest({}), decryptor=DECRYPTOR)
    forged = [dict(e) for e in unsigned]
    victim = next(e for e in forged if e["site_id"] == VICTIM)
    victim["tags"] = dict(victim["tags"], site_b=pair_tag(harness.keys[DECRYPTOR].kex_private, VICTIM, "site_b",
                                                          harness.keys["site_b"].public_bundle().kex, statement))
    assert _refused(harness.reveal(nonce, forged, ["site_b"])["site_b"], "reveal_bad_signature")
    # a genuine tag of the victim moved onto an altered summary, or taken from another attempt
    altered = [dict(e) for e in unsigned]
    target = next(e for e in altered if e["site_id"] == VICTIM)
    target["summary"] = {"totals": {**target["summary"]["totals"], "sha256": "00" * 32}}
    assert _refused(harness.reveal(nonce, altered, ["site_c"])["site_c"], "reveal_bad_signature")
    _, other = harness.contribute(SITES)
    mixed = [e for e in unsigned if e["site_id"] != VICTIM] + [
        dict(e, signature=b"") for e in harness.entries(other, [VICTIM], tags=True)]
    assert _refused(harness.reveal(nonce, mixed, ["site_b"])["site_b"], "reveal_bad_signature")
    # the genuine tags alone (no signature at all) are accepted by every site
    assert all(r.ok for r in harness.reveal(nonce, unsigned, SITES).values())


def _decrypt_payload(harness, nonce, replies, reveals):
    contributions = [{"site_id": sid, "arrays": rep.payload["arrays"], "shapes": rep.payload["shapes"],
                      "signature": rep.payload["signature"]} for sid, rep in sorted(replies.items())]
    return {"contributions": contributions, "contribution_nonce": nonce,
            "sum": {"totals": he.add(harness.pk, _arrays(replies, sorted(replies)))}, "encrypted": True,
            "layout": LAYOUT, "participants": list(SITES), "params_digest": params_digest({}),
            "decryptor": DECRYPTOR, "reveals": reveals}


def test_the_decrypting_site_refuses_forged_or_missing_reveals(harness):
    nonce, replies = harness.contribute(SITES)
    revealed = harness.reveal(nonce, harness.entries(replies), SITES)
    good = {sid: {"seed": r.payload["seed"], "signature": r.payload["signature"]} for sid, r in revealed.items()}

    def decrypt(reveals):
        return harness.send("decrypt", _decrypt_payload(harness, nonce, replies, reveals), [DECRYPTOR])[DECRYPTOR]

    missing = decrypt({s: v for s, v in good.items() if s != VICTIM})
    assert not missing.ok and "missing ['site_d']" in missing.error
    other_seed = dict(good, site_b={"seed": bytes(32), "signature": good["site_b"]["signature"]})
    rep = decrypt(other_seed)
    assert not rep.ok and "not signed by 'site_b'" in rep.error
    swapped = dict(good, site_c=good["site_b"])                 # site_b's signed reveal offered as site_c's
    rep = decrypt(swapped)
    assert not rep.ok and "not signed by 'site_c'" in rep.error
    rep = decrypt(None)
    assert not rep.ok and "no revealed self-mask seeds" in rep.error
    # the genuine reveals open the sum, exactly
    rep = decrypt(good)
    assert rep.ok, rep.error
    np.testing.assert_allclose(np.ravel(rep.payload["arrays"]["totals"]), harness.truth(SITES), atol=1e-6)


def test_the_decrypting_site_checks_the_reveal_tags_addressed_to_it(harness):
    """Reveals carry a pairwise tag per other participant; the decrypting site checks its own (no signature
    needed), compares its own seed with the one it kept, and refuses a tag that does not verify."""
    nonce, replies = harness.contribute(SITES)
    revealed = harness.reveal(nonce, harness.entries(replies), SITES)
    assert all(set(r.payload["tags"]) == set(SITES) - {sid} for sid, r in revealed.items())
    tagged = {sid: {"seed": r.payload["seed"], "signature": b"", "tags": r.payload["tags"]}
              for sid, r in revealed.items()}

    def decrypt(reveals):
        return harness.send("decrypt", _decrypt_payload(harness, nonce, replies, reveals), [DECRYPTOR])[DECRYPTOR]

    bad_seed = dict(tagged, site_b=dict(tagged["site_b"], seed=bytes(32)))
    rep = decrypt(bad_seed)
    assert not rep.ok and "not signed by 'site_b'" in rep.error
    moved = dict(tagged, site_c=dict(tagged["site_c"], tags={DECRYPTOR: tagged["site_b"]["tags"][DECRYPTOR]}))
    rep = decrypt(moved)
    assert not rep.ok and "not signed by 'site_c'" in rep.error
    own = dict(tagged, **{DECRYPTOR: dict(tagged[DECRYPTOR], seed=bytes(32))})
    rep = decrypt(own)
    assert not rep.ok and "not the one it kept" in rep.error
    rep = decrypt(tagged)
    assert rep.ok, rep.error
    np.testing.assert_allclose(np.ravel(rep.payload["arrays"]["totals"]), harness.truth(SITES), atol=1e-6)


def test_a_share_holder_removes_self_masks_only_with_every_signed_reveal(tables, tmp_path):
    h = Colluders(tables, tmp_path, scheme="threshold")
    try:
        nonce, replies = h.contribute(SITES)
        revealed = h.reveal(nonce, h.entries(replies), SITES)
        good = {sid: {"seed": r.payload["seed"], "signature": r.payload["signature"]} for sid, r in revealed.items()}

        def partial(reveals):
            return h.send("partial_decrypt", _decrypt_payload(h, nonce, replies, reveals), ["site_b"])["site_b"]

        rep = partial({s: v for s, v in good.items() if s != VICTIM})
        assert not rep.ok and "missing ['site_d']" in rep.error
        rep = partial(dict(good, site_c={"seed": bytes(32), "signature": good["site_c"]["signature"]}))
        assert not rep.ok and "not signed by 'site_c'" in rep.error
        rep = partial(good)
        assert rep.ok, rep.error
        # the combining site, with that partial decryption, opens the exact sum
        payload = dict(_decrypt_payload(h, nonce, replies, good),
                       partials={"site_b": {k: rep.payload[k] for k in ("partials", "signature", "index")}})
        out = h.send("decrypt", payload, [DECRYPTOR])[DECRYPTOR]
        assert out.ok, out.error
        np.testing.assert_allclose(np.ravel(out.payload["arrays"]["totals"]), h.truth(SITES), atol=1e-6)
    finally:
        h.close()


def test_a_reveal_signature_is_bound_to_its_attempt(harness):
    nonce, replies = harness.contribute(SITES)
    rep = harness.reveal(nonce, harness.entries(replies), ["site_b"])["site_b"]
    bundle = harness.keys["site_b"].public_bundle()
    kw = dict(study=harness.study, session=harness.session, round=0, task=TASK, site_id="site_b",
              participants=list(SITES), params=params_digest({}), decryptor=DECRYPTOR, seed=rep.payload["seed"])
    assert bundle.verify(rep.payload["signature"], reveal_digest(nonce=nonce, **kw))
    assert not bundle.verify(rep.payload["signature"], reveal_digest(nonce=new_nonce(), **kw))


def test_summary_digest_is_the_signed_contribution_digest(harness):
    nonce, replies = harness.contribute(SITES)
    p = replies["site_b"].payload
    head = dict(study=harness.study, session=harness.session, round=0, nonce=nonce, task=TASK, site_id="site_b",
                participants=list(SITES), params=params_digest({}), decryptor=DECRYPTOR)
    assert summary_digest(summary=contribution_summary(p["arrays"], p["shapes"]), **head) == \
        contribution_digest(arrays=p["arrays"], shapes=p["shapes"], **head)


def test_a_restarted_site_reveals_the_seed_it_used(harness):
    nonce, replies = harness.contribute(SITES)
    harness.restart(*SITES)
    revealed = harness.reveal(nonce, harness.entries(replies), SITES)
    seeds = {sid: r.payload["seed"] for sid, r in revealed.items()}
    assert harness.raw(_arrays(replies, SITES), seeds) == harness.truth_raw(SITES)


# -- (c) a genuine drop-out ---------------------------------------------------------------------------------
class DropFirstSum:
    """The transport loses the victim's first secure-sum reply (it computed, then its link failed)."""

    def __init__(self, inner):
        self.inner, self.sent, self.lost = inner, [], {}

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        self.sent.extend(messages.items())
        out = self.inner.send(messages, timeout)
        if not self.lost and any(m.action == "secure_sum" for m in messages.values()):
            self.lost = {"message": messages[VICTIM], "replies": dict(out)}
            out[VICTIM] = SiteFailure(VICTIM, "timeout", "no answer")
        return out

    def close(self):
        self.inner.close()


def test_a_genuine_dropout_completes_with_the_survivors_and_equals_the_pooled_fit(tables):
    import statsmodels.api as sm

    keys, _ = test_ceremony(SITES)
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.5), encrypted=True,
                                site_keys=keys)
    fed.transport = DropFirstSum(fed.transport)
    model = FederatedLogisticRegression(features=FEATURES).fit(fed)
    survivors = [s for s in SITES if s != VICTIM]
    assert fed.members == survivors and model.n_samples_ == sum(len(tables[s]) for s in survivors)
    # the pooled fit of the survivors' rows (mean imputation and a missingness indicator, as the model does)
    import pandas as pd

    pooled = pd.concat([tables[s] for s in survivors], ignore_index=True)
    design = pooled[FEATURES].copy()
    design["missing_lab_creatinine"] = design["lab_creatinine"].isna().astype(float)
    design["lab_creatinine"] = design["lab_creatinine"].fillna(design["lab_creatinine"].mean())
    assert list(model.terms_) == list(design.columns)
    res = sm.Logit(pooled["label"].to_numpy(float), sm.add_constant(design)).fit(disp=0, method="newton",
                                                                                  tol=1e-12, maxiter=100)
    np.testing.assert_allclose(np.r_[model.intercept_, model.coef_.ravel()], res.params.to_numpy(), atol=1e-6)
    # the lost attempt was never revealed: only the rerun's nonce (and later rounds') reached a reveal
    lost = fed.transport.lost
    reveal_of = {m.payload["contribution_nonce"] for _, m in fed.transport.sent if m.action == "reveal"}
    msg = lost["message"]
    assert msg.nonce not in reveal_of and reveal_of
    # and the colluding decrypting site cannot open the lost attempt, although all four contributions exist
    pk = he.load_public(keys[DECRYPTOR].paillier_public)
    sk = he.load_private(keys[DECRYPTOR].paillier_private, pk)
    first = lost["replies"]
    assert all(isinstance(r, Reply) and r.ok for r in first.values())
    name = next(iter(first[DECRYPTOR].payload["arrays"]))
    node = fed.transport.inner.nodes[DECRYPTOR]
    entry = node.state.self_mask(attempt_key(msg.study, msg.session, msg.round, msg.nonce, msg.task))
    total = he.add(pk, [first[s].payload["arrays"][name] for s in SITES])
    total = remove_self_masks(pk, {name: total}, {DECRYPTOR: bytes.fromhex(entry["seed"])})[name]
    with pytest.raises(ValueError):
        he.decrypt(sk, pk, total)
