"""SiteNode: freshness checks, policy at the site, and the decrypting site's checks."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.federation import Federation, FederationError, SiteContext, SiteNode, site_task
from ehr_fed.federation.messages import TaskMessage, new_nonce
from ehr_fed.federation.testing import FEATURES, make_table, test_ceremony
from ehr_fed.privacy import PrivacyPolicy


@site_task("test.grad", kind="gradient")
def _grad(table, params, ctx: SiteContext):
    return {"g": np.ones(int(params["p"]))}


@site_task("test.vec", kind="moments")
def _vec(table, params, ctx: SiteContext):
    return {"v": np.array([float(len(table)), 1.0])}


_ALL = ["site_a", "site_b", "site_c"]


def _m(action="query", task="stats.count", round=1, study="", session="S", payload=None, nonce=None):
    return TaskMessage(action, task, study, session, round, nonce or new_nonce(), payload or {})


@pytest.fixture
def node():
    return SiteNode("site_a", make_table("site_a", 50, 1), PrivacyPolicy(), study="readmission")


def test_stale_round_and_replayed_nonce_rejected(node):
    assert node.handle(_m(round=5, study="readmission")).ok
    old = node.handle(_m(round=4, study="readmission"))
    assert not old.ok and old.error_kind == "protocol"
    assert "stale message: round 4 of session S is older than round 5" in old.error
    m = _m(round=5, study="readmission")
    assert node.handle(m).ok
    again = node.handle(m)
    assert "replayed message" in again.error


def test_wrong_study_rejected(node):
    rep = node.handle(_m(study="other_study"))
    assert rep.error_kind == "protocol"
    assert "message is for study 'other_study', this site runs study 'readmission'" in rep.error


def test_unknown_task_lists_valid_names(node):
    rep = node.handle(_m(task="nope", study="readmission"))
    assert rep.error_kind == "unknown_task" and "registered tasks:" in rep.error and "stats.count" in rep.error


def test_malformed_message_dict(node):
    rep = node.handle({"action": "query", "task": "x"})
    assert rep.error_kind == "protocol" and "missing field 'study'" in rep.error


def test_allowed_tasks_and_max_params(tables):
    pol = PrivacyPolicy(allowed_tasks=["stats.*"])
    node = SiteNode("site_a", tables["site_a"], pol)
    rep = node.handle(_m(action="secure_sum", task="test.grad", payload={
        "params": {"p": 3}, "layout": {"g": [10.0, 3]}, "encrypted": False, "participants": _ALL, "decryptor": "site_a"}))
    assert rep.error_kind == "disclosure" and "does not allow task 'test.grad'" in rep.error
    node = SiteNode("site_a", tables["site_a"], PrivacyPolicy(max_params_fraction=0.1))  # 80 rows -> 8 params
    ok = node.handle(_m(action="secure_sum", task="test.grad", payload={
        "params": {"p": 8}, "layout": {"g": [10.0, 3]}, "encrypted": False, "participants": _ALL, "decryptor": "site_a"}))
    assert ok.ok
    rep = node.handle(_m(action="secure_sum", task="test.grad", payload={
        "params": {"p": 9}, "layout": {"g": [10.0, 3]}, "encrypted": False, "participants": _ALL, "decryptor": "site_a"}))
    assert rep.error_kind == "disclosure"
    assert "9 model parameters exceed max_params_fraction=0.1" in rep.error and "80" not in rep.error


def test_small_counts_suppressed_in_query():
    node = SiteNode("tiny", make_table("tiny", 7, 3), PrivacyPolicy(min_cell_count=10))
    rep = node.handle(_m())
    assert rep.ok and rep.payload["result"]["n"] is None and rep.payload["suppressed"]["n"] == [0]
    assert node.audit.entries[-1]["suppressed"]["n"] == [0]
    # without the federation's common suppression flags a per-site count shows the row count only
    big = SiteNode("big", make_table("big", 80, 3), PrivacyPolicy(min_cell_count=10))
    rep = big.handle(_m())
    assert rep.ok and rep.payload["result"] == {"n": 80.0, "positives": None}


# -- the decrypting site ---------------------------------------------------------------------------
class _Tamper:
    """A transport wrapper that lets a test rewrite the decrypt request (a malicious coordinator)."""

    def __init__(self, inner, rewrite):
        self.inner, self.rewrite = inner, rewrite

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        out = {}
        for sid, m in messages.items():
            if m.action == "decrypt":
                m = TaskMessage(m.action, m.task, m.study, m.session, m.round, m.nonce,
                                self.rewrite(dict(m.payload)))
            out.update(self.inner.send({sid: m}, timeout))
        return out

    def close(self):
        self.inner.close()


def _fed(tables, rewrite, encrypted=True):
    keys, _ = test_ceremony()
    fed = Federation.in_process(tables, encrypted=encrypted, site_keys=keys)
    fed.transport = _Tamper(fed.transport, rewrite)
    return fed


def test_decryptor_refuses_one_sites_vector(tables):
    def only_one(p):  # coordinator asks to open site_a's ciphertext as "the sum"
        p["sum"] = {"v": p["contributions"][0]["arrays"]["v"]}
        return p
    with pytest.raises(FederationError, match="coordinator's sum of 'v' is not the sum of the signed contributions"):
        _fed(tables, only_one).secure_sum("test.vec", {}, {"v": (1e6, 3)})


def test_decryptor_requires_min_sites(tables):
    def drop(p):
        p["contributions"] = p["contributions"][:1]
        p["sum"] = {"v": p["contributions"][0]["arrays"]["v"]}
        return p
    with pytest.raises(FederationError, match=r"masks cancel only over all of them"):
        _fed(tables, drop).secure_sum("test.vec", {}, {"v": (1e6, 3)})

    def shrink(p):  # the same, with the participant list rewritten to the one site: signatures break
        drop(p)
        p["participants"] = [p["contributions"][0]["site_id"]]
        return p
    with pytest.raises(FederationError, match=r"signature of site 'site_a' does not match"):
        _fed(tables, shrink).secure_sum("test.vec", {}, {"v": (1e6, 3)})


def test_decryptor_rejects_forged_contribution(tables):
    def forge(p):  # a site's contribution replaced by a copy of another's under its name
        c = [dict(x) for x in p["contributions"]]
        c[1]["arrays"] = c[0]["arrays"]
        p["contributions"] = c
        return p
    with pytest.raises(FederationError, match="signature of site 'site_b' does not match its contribution"):
        _fed(tables, forge).secure_sum("test.vec", {}, {"v": (1e6, 3)})


def test_decryptor_refuses_a_second_subset(tables):
    seen = {}

    def record(p):
        seen["p"] = p
        return p
    fed = _fed(tables, record)
    fed.secure_sum("test.vec", {}, {"v": (1e6, 4)})
    node = fed.transport.inner.nodes["site_a"]
    p = dict(seen["p"])
    p["contributions"] = p["contributions"][:2] + p["contributions"][2:]  # same set: allowed again
    msg = TaskMessage("decrypt", "test.vec", "", fed.journal.session, 0, new_nonce(), p)
    assert node.handle(msg).ok
    sub = dict(p, contributions=p["contributions"][1:])
    node2 = SiteNode("site_a", tables["site_a"], PrivacyPolicy(min_sites=2), node.keys, state=node.state)
    # contributions of a subset of the signed participant set: the masks would not cancel
    rep = node2.handle(TaskMessage("decrypt", "test.vec", "", fed.journal.session, 0, new_nonce(), sub))
    assert rep.error_kind == "protocol" and "masks cancel only over all of them" in rep.error
    # the same computation signed over another participant set: differencing
    assert node2.state.record_opening is not None
    with pytest.raises(Exception, match="would reveal the difference"):
        node2.record_opening("", "test.vec", p["params_digest"], ["site_a", "site_b"])


def test_secure_sum_result_is_exact_sum(tables):
    out = _fed(tables, lambda p: p).secure_sum("test.vec", {}, {"v": (1e6, 3)})
    np.testing.assert_allclose(out["v"], [300.0, 3.0], atol=1e-9)
    assert FEATURES  # the helper tables carry the study-like features


@site_task("test.newton_step", kind="gradient")
def _newton_step(table, params, ctx: SiteContext):
    d = int(params["p"])
    return {"gradient": np.ones(d), "hessian": np.ones(d * (d + 1) // 2), "loglik": np.zeros(1)}


def test_max_params_counts_the_gradient_not_the_hessian(tables):
    """A model's parameters are its gradient entries: 8 of them with 80 rows are allowed although
    the Hessian triangle has 36 values; 9 are refused."""
    node = SiteNode("site_a", tables["site_a"], PrivacyPolicy(max_params_fraction=0.1))  # 80 rows -> 8 params
    layout = {"gradient": [10.0, 3], "hessian": [10.0, 3], "loglik": [10.0, 3]}
    ok = node.handle(_m(action="secure_sum", task="test.newton_step",
                        payload={"params": {"p": 8}, "layout": layout, "encrypted": False, "participants": _ALL, "decryptor": "site_a"}))
    assert ok.ok, ok.error
    rep = node.handle(_m(action="secure_sum", task="test.newton_step",
                         payload={"params": {"p": 9}, "layout": layout, "encrypted": False, "participants": _ALL, "decryptor": "site_a"}))
    assert rep.error_kind == "disclosure" and "9 model parameters" in rep.error
