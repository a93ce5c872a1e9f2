"""Pairwise masks: a key-holding site sees sums only.

The curious site here is the decrypting site itself: it holds the private key and keeps every message it
received (the decrypt requests carry each site's individual ciphertexts). It tries to open every single
contribution and every proper-subset sum with the protocol's own decoders and compares what it gets with the
true per-site values (recomputed here from that site's table).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr_fed import stats
from ehr_fed.crypto import InsecureKeyError
from ehr_fed.federation import Federation, FederationError, SiteNode, he, site_task
from ehr_fed.federation.masks import SiteMasker, mask_context, pairwise_seeds
from ehr_fed.federation.messages import TaskMessage, new_nonce
from ehr_fed.federation.state import SiteState
from ehr_fed.federation.tasks import SiteContext, get_task
from ehr_fed.federation.testing import FEATURES, make_tables, test_ceremony
from ehr_fed.models import FederatedGradientBoostingClassifier, FederatedLogisticRegression
from ehr_fed.privacy import PrivacyPolicy


@site_task("test.rows", kind="other")
def _rows(table, params, ctx):
    return {"n": np.array([float(len(table))])}


SITES5 = ("site_a", "site_b", "site_c", "site_d", "site_e")


@pytest.fixture(scope="module")
def keys5():
    return test_ceremony(SITES5)[0]


def _masker(keys, sid, participants, nonce="n1"):
    ctx = mask_context(study="s", session="S", round=0, nonce=nonce, task="t", participants=participants,
                       digest="d")
    return SiteMasker(pairwise_seeds(keys[sid].kex_private, sid, keys[sid].peers, participants, ctx))


def _raw(sk, blob):
    from ehr_fed.crypto import EncryptedVector

    ev = EncryptedVector.from_bytes(sk.public_key, blob)
    return [sk.raw_decrypt(int(c)) for c in ev.ciphertexts]


def test_pairwise_seeds_and_tags_are_the_standard_hkdf_and_hmac(keys5):
    """The seeds are HKDF-SHA256 (RFC 5869) of the pair's X25519 secret, the tags HMAC-SHA256 under an HKDF key:
    computed by a general implementation here, bit for bit what the sites derive with their shortcuts."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from ehr_fed.federation.masks import pair_tag

    participants = ["site_a", "site_c", "site_e"]
    ctx = mask_context(study="s", session="S", round=3, nonce="n9", task="t", participants=participants,
                       digest="d")
    me = keys5["site_c"]
    seeds = pairwise_seeds(me.kex_private, "site_c", me.peers, participants, ctx)
    for (sign, seed), other in zip(seeds, ["site_a", "site_e"], strict=True):
        shared = X25519PrivateKey.from_private_bytes(me.kex_private).exchange(
            X25519PublicKey.from_public_bytes(me.peers[other].kex))
        lo, hi = sorted(("site_c", other))
        info = hashlib.sha256(ctx + b"\x00" + lo.encode() + b"\x00" + hi.encode()).digest()
        assert seed == HKDF(hashes.SHA256(), 32, salt=b"ehr-fed pairwise mask v1", info=info).derive(shared)
        assert sign == (1 if "site_c" < other else -1)
        key = HKDF(hashes.SHA256(), 32, salt=b"ehr-fed contribution tag v1",
                   info=b"ehr-fed contribution tag v1\x00" + lo.encode() + b"\x00" + hi.encode()).derive(shared)
        statement = b"a contribution statement"
        assert pair_tag(me.kex_private, "site_c", other, me.peers[other].kex, statement) == \
            hmac.new(key, statement, hashlib.sha256).digest()
    # the other side of each pair derives the same seed with the opposite sign
    theirs = pairwise_seeds(keys5["site_a"].kex_private, "site_a", keys5["site_a"].peers, participants, ctx)
    assert theirs[0] == (1, seeds[0][1])


# -- the masks cancel exactly over the participant set, and only there --------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(2, 5), length=st.integers(1, 60), fields=st.booleans(), seed=st.integers(0, 2**31))
def test_masks_cancel_only_over_the_exact_participant_set(keys5, size, length, fields, seed):
    rng = np.random.default_rng(seed)
    participants = sorted(rng.choice(SITES5, size=size, replace=False).tolist())
    pk = he.load_public(keys5["site_a"].paillier_public)
    sk = he.load_private(keys5["site_a"].paillier_private, pk)
    if fields:
        widths = rng.integers(4, 30, length)
        values = {s: rng.integers(0, 2 ** (widths - 3)).astype(float) for s in participants}
        spec = {"widths": [[1, [int(w) for w in widths]]], "max_terms": size}
        w = he.field_widths(spec)

        def enc(sid, masker):
            return he.encrypt_fields(pk, values[sid], w, size, masker, "out")

        def dec(blob):
            return he.decrypt_fields(sk, pk, blob, w)
    else:
        values = {s: rng.normal(0, 100, length) for s in participants}

        def enc(sid, masker):
            return he.encrypt(pk, values[sid], 1e4, size, masker, "out")

        def dec(blob):
            return he.decrypt(sk, pk, blob)
    masked = {s: enc(s, _masker(keys5, s, participants)) for s in participants}
    plain = {s: enc(s, None) for s in participants}
    total = dec(he.add(pk, list(masked.values())))
    reference = dec(he.add(pk, list(plain.values())))
    np.testing.assert_array_equal(total, reference)          # bit-identical to the unmasked sum
    # one site's ciphertext, or any proper subset's sum: the raw plaintext is shifted by a nonzero residue
    for k in range(1, size):
        for subset in itertools.combinations(participants, k):
            got = _raw(sk, he.add(pk, [masked[s] for s in subset]))
            want = _raw(sk, he.add(pk, [plain[s] for s in subset]))
            assert all(g != x for g, x in zip(got, want, strict=True))


def test_mask_residues_look_uniform(keys5):
    n = he.load_public(keys5["site_a"].paillier_public).n
    residues = _masker(keys5, "site_a", list(SITES5)).residues("out", 4000, n)
    top = np.array([r * 16 // n for r in residues], dtype=int)      # which sixteenth of [0, n) each falls in
    counts = np.bincount(top, minlength=16)
    from scipy.stats import chisquare

    assert chisquare(counts).pvalue > 1e-4
    # another nonce (a rerun) gives other masks
    other = _masker(keys5, "site_a", list(SITES5), nonce="n2").residues("out", 4000, n)
    assert all(a != b for a, b in zip(residues, other, strict=True))


# -- the curious decrypting site, through the real protocol -------------------------------------------------
class Recorder:
    """What passes through the transport: every message sent and every reply."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        self.sent.extend(messages.items())
        return self.inner.send(messages, timeout)

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def recorded():
    tables = make_tables((300, 350, 320), seed=11)
    keys, _ = test_ceremony(tuple(tables))
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.5), encrypted=True,
                                site_keys=keys)
    rec = Recorder(fed.transport)
    fed.transport = rec
    FederatedLogisticRegression(features=FEATURES).fit(fed)
    FederatedGradientBoostingClassifier(n_estimators=2, max_depth=2, max_bin=16).fit(fed)
    stats.describe(fed, FEATURES)
    from ehr_fed.evaluation import evaluate

    model = FederatedLogisticRegression(features=FEATURES).fit(fed)
    evaluate(fed, model, per_site=False)
    return tables, keys, rec


def _true_outputs(tables, keys, msg, sid, policy):
    task = get_task(msg.task)
    # the context the site itself gives its tasks (a Newton round replays its signed transcript)
    ctx = SiteContext(site_id=sid, policy=policy, study=msg.study, round=msg.round, n_rows=len(tables[sid]),
                      session=msg.session, peers=keys[sid].peers,
                      participants=tuple(msg.payload.get("participants") or ()))
    return {k: np.asarray(v, dtype=np.float64).ravel() for k, v in
            task.fn(tables[sid], msg.payload.get("params") or {}, ctx).items()}


def _open(sk, pk, blob, spec):
    """What the curious site reads from a ciphertext with the protocol's own decoders (None: undecodable)."""
    try:
        if isinstance(spec, dict):
            return he.decrypt_fields(sk, pk, blob, he.field_widths(spec))
        return he.decrypt(sk, pk, blob)
    except (ValueError, OverflowError):
        return None


def test_curious_decryptor_opens_no_contribution_and_no_subset_sum(recorded):
    tables, keys, rec = recorded
    policy = PrivacyPolicy(max_params_fraction=0.5)
    requests = {m.nonce: m for _, m in rec.sent if m.action == "secure_sum"}
    decrypts = [(sid, m) for sid, m in rec.sent if m.action == "decrypt"]
    tasks = {m.task for _, m in decrypts}
    assert {"logreg.newton", "gbdt.histograms", "stats.moments"} <= tasks
    assert any(t.startswith("evaluation.") for t in tasks)
    opened, per_task = 0, {}
    for sid, m in decrypts:
        per_task[m.task] = per_task.get(m.task, 0) + 1
        if per_task[m.task] > 3:          # three sums of each task are plenty (and keep the test fast)
            continue
        pk = he.load_public(keys[sid].paillier_public)
        sk = he.load_private(keys[sid].paillier_private, pk)
        contributions = m.payload["contributions"]
        asked = requests[m.payload["contribution_nonce"]]
        truth = {c["site_id"]: _true_outputs(tables, keys, asked, c["site_id"], policy) for c in contributions}
        for k in range(1, len(contributions)):
            for subset in itertools.combinations(contributions, k):
                for name, spec in m.payload["layout"].items():
                    blob = he.add(pk, [c["arrays"][name] for c in subset])
                    got = _open(sk, pk, blob, spec)
                    want = sum(truth[c["site_id"]][name] for c in subset)
                    opened += 1
                    if got is not None:
                        assert not np.allclose(got.ravel(), want, atol=1e-6), (m.task, name, k)
    assert opened > 50


def test_dropout_reruns_the_round_with_the_survivors():
    tables = make_tables((80, 90, 100, 110), seed=3)
    keys, _ = test_ceremony(tuple(tables))
    fed = Federation.in_process(tables, policy=PrivacyPolicy(min_sites=3), encrypted=True, site_keys=keys)
    inner = fed.transport
    dropped = {"done": False}

    class DropOnce(Recorder):
        def send(self, messages, timeout):
            self.sent.extend(messages.items())
            out = self.inner.send(messages, timeout)
            if not dropped["done"] and any(m.action == "secure_sum" for m in messages.values()):
                dropped["done"] = True
                from ehr_fed.federation.transports.base import SiteFailure

                out["site_d"] = SiteFailure("site_d", "timeout", "no answer")   # it computed, then vanished
            return out

    fed.transport = DropOnce(inner)
    res = fed.secure_sum("test.rows", {}, {"n": (1e6, 4)})
    assert float(np.asarray(res["n"]).ravel()[0]) == 80 + 90 + 100     # the survivors' sum, exact
    assert "site_d" in res.missing
    sums = [m for _, m in fed.transport.sent if m.action == "secure_sum"]
    assert len({m.nonce for m in sums}) == 2                               # a rerun with a fresh nonce
    assert sorted(sums[-1].payload["participants"]) == ["site_a", "site_b", "site_c"]
    decrypts = [m for _, m in fed.transport.sent if m.action == "decrypt"]
    assert len(decrypts) == 1 and decrypts[0].payload["participants"] == ["site_a", "site_b", "site_c"]


def test_contributor_refuses_a_second_decrypting_site_even_after_a_restart(tmp_path):
    tables = make_tables((80, 90, 100), seed=4)
    keys, _ = test_ceremony(tuple(tables))
    state = tmp_path / "site_b.state.jsonl"
    node = SiteNode("site_b", tables["site_b"], PrivacyPolicy(), keys["site_b"], study="s", state=state)
    parts = sorted(tables)

    def ask(decryptor):
        return TaskMessage("secure_sum", "test.rows", "s", "S1", 0, new_nonce(), {
            "params": {}, "layout": {"n": [1e6, 3]}, "encrypted": True, "participants": parts,
            "decryptor": decryptor})

    assert node.handle(ask("site_a")).ok
    assert node.handle(ask("site_a")).ok                                    # the same decrypting site: fine
    restarted = SiteNode("site_b", tables["site_b"], PrivacyPolicy(), keys["site_b"], study="s", state=state)
    rep = restarted.handle(ask("site_c"))
    assert not rep.ok and rep.error_kind == "disclosure" and "differencing" in rep.error
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert SiteState(state).decryptors                                     # persisted


def test_encrypted_site_refuses_a_plaintext_sum_and_a_tiny_participant_set():
    tables = make_tables((80, 90, 100), seed=4)
    keys, _ = test_ceremony(tuple(tables))
    node = SiteNode("site_a", tables["site_a"], PrivacyPolicy(), keys["site_a"], study="s")
    base = {"params": {}, "layout": {"n": [1e6, 3]}, "participants": sorted(tables), "decryptor": "site_a"}
    rep = node.handle(TaskMessage("secure_sum", "test.rows", "s", "S", 0, new_nonce(), {**base, "encrypted": False}))
    assert not rep.ok and "only encrypted and masked" in rep.error
    rep = node.handle(TaskMessage("secure_sum", "test.rows", "s", "S", 0, new_nonce(),
                                  {**base, "encrypted": True, "participants": ["site_a"]}))
    assert not rep.ok and rep.error_kind == "disclosure" and "min_sites=3" in rep.error


def test_short_keys_are_refused_outside_the_test_mode(monkeypatch):
    tables = make_tables((80, 90, 100), seed=4)
    keys, ckeys = test_ceremony(tuple(tables))
    monkeypatch.delenv("EHR_FED_ALLOW_INSECURE_KEYS", raising=False)
    with pytest.raises(InsecureKeyError, match="1024-bit modulus.*EHR_FED_ALLOW_INSECURE_KEYS=1"):
        SiteNode("site_a", tables["site_a"], PrivacyPolicy(), keys["site_a"])
    from ehr_fed.federation.transports.in_process import InProcessTransport

    with pytest.raises(InsecureKeyError, match="allow_insecure=True"):
        Federation(InProcessTransport({}), keys=ckeys)
    # the explicit flag
    SiteNode("site_a", tables["site_a"], PrivacyPolicy(), keys["site_a"], allow_insecure=True)
    with pytest.raises(FederationError):
        Federation(InProcessTransport({}), keys=None)
