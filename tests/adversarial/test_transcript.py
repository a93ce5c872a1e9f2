"""A malicious coordinator steering a logistic regression: every site replays the fit from the signed releases.

The honest fit runs through the real coordinator, the real in-process transport and real SiteNodes (keys from
one test ceremony, Paillier-encrypted); a recorder between coordinator and transport keeps every request.
The attacks then send crafted ``logreg.newton`` requests through the same transport in the same session,
as a coordinator would: each must be refused by every site with rule ``transcript`` and a reason code, and
nothing may leave a site.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from ehr_fed.federation import Federation, SiteNode
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.messages import TaskMessage, new_nonce
from ehr_fed.federation.releases import sign_release
from ehr_fed.federation.testing import make_tables, test_ceremony
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.models.logreg_transcript import newton_params

SITES = ("site_a", "site_b", "site_c")
#: public clipping ranges of the test tables' features (a private fit needs them)
BOUNDS = {"age": [18, 110], "sex_female": [0, 1], "los_days": [0, 60], "charlson": [0, 20],
          "lab_creatinine": [0.1, 15]}
STUDY = "s1"


class CoordinatorCrash(Exception):
    """The coordinator process dies (raised between two rounds)."""


class Recorder:
    """The real transport, with every message the coordinator sends kept (and a crash on request)."""

    def __init__(self, inner, crash_at_newton: int | None = None):
        self.inner, self.crash_at_newton, self.sent = inner, crash_at_newton, []

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        first = next(iter(messages.values()))
        if first.action == "secure_sum" and first.task == "logreg.newton":
            if self.crash_at_newton is not None and len(self.newton()) + 1 == self.crash_at_newton:
                raise CoordinatorCrash("the coordinator stops here")
        self.sent.append(first)
        return self.inner.send(messages, timeout)

    def newton(self) -> list[TaskMessage]:
        return [m for m in self.sent if m.action == "secure_sum" and m.task == "logreg.newton"]

    def close(self):
        self.inner.close()


def _federation(tables, keys, ckeys, **kw) -> Federation:
    fed = Federation.in_process(tables, encrypted=True, site_keys=keys, allow_insecure=True, study=STUDY,
                                timeout=120.0, **kw)
    fed.transport = Recorder(fed.transport)
    return fed


def _fit(fed, **kw) -> FederatedLogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FederatedLogisticRegression(**kw).fit(fed)


@pytest.fixture(scope="module")
def ceremony():
    return test_ceremony(SITES)


@pytest.fixture(scope="module")
def tables():
    return make_tables((90, 120, 100), seed=11)


@pytest.fixture(scope="module")
def honest(ceremony, tables):
    """A fit of 4 Newton rounds (not converged), with every request recorded."""
    keys, ckeys = ceremony
    fed = _federation(tables, keys, ckeys)
    model = _fit(fed, max_iter=4, tol=1e-14)
    yield fed, model
    fed.close()


def _send(fed, params, *, like: TaskMessage, round_: int | None = None):
    """A crafted secure_sum of ``logreg.newton`` in the federation's session, through the real transport."""
    fed._round += 1
    r = fed._round if round_ is None else round_
    payload = {**like.payload, "params": params}
    msgs = {sid: TaskMessage("secure_sum", "logreg.newton", fed.study_id, fed.journal.session, r, new_nonce(),
                             payload) for sid in fed.site_ids}
    return fed.transport.inner.send(msgs, 120.0)


def _refused_by_all(replies, code):
    assert sorted(replies) == list(SITES)
    for sid, rep in replies.items():
        assert not rep.ok, f"{sid} computed the crafted request"
        assert rep.error_kind == "disclosure", (sid, rep.error)
        assert f"[transcript_{code}]" in rep.error and "(rule transcript)" in rep.error, (sid, rep.error)
        assert rep.payload == {}, f"{sid} released something with its refusal"


def _accepted_by_all(replies):
    assert sorted(replies) == list(SITES)
    for sid, rep in replies.items():
        assert rep.ok, (sid, rep.error)
        assert set(rep.payload["arrays"]) == {"gradient", "hessian", "loglik"}


def _request(fed, k: int) -> tuple[dict, TaskMessage]:
    """A deep copy of the parameters of the k-th Newton request (1-based) and its message."""
    msg = fed.transport.newton()[k - 1]
    return copy.deepcopy(msg.payload["params"]), msg


# -- the honest fit ------------------------------------------------------------------------------------------
def test_honest_fit_carries_its_transcript_and_equals_the_pooled_fit(honest, tables):
    fed, model = honest
    reqs = fed.transport.newton()
    assert len(reqs) == 4 and model.n_iter_ == 4
    for k, msg in enumerate(reqs, start=1):
        p = msg.payload["params"]
        assert [r["task"] for r in p["transcript"]] == ["models.row_count", "models.preprocess_sums"] + \
            ["logreg.newton"] * (k - 1)
        assert len(p["beta_path"]) == k - 1
        assert p["rule"] == {"penalty": "none", "C": 1.0, "missing_values": "mean_impute_with_indicator",
                             "max_iter": 4, "tol": 1e-14}
    # one copy of each record per request (the transcript is not repeated inside it)
    last = reqs[-1].payload["params"]
    assert len({r["signature"] for r in last["transcript"]}) == len(last["transcript"])
    pooled = pd.concat(list(tables.values()), ignore_index=True)
    local = _fit(pooled, max_iter=4, tol=1e-14)
    np.testing.assert_allclose(model.coef_, local.coef_, rtol=1e-6, atol=1e-8)


def test_an_honest_request_sent_again_is_accepted(honest):
    """The check refuses what does not follow, not everything: the recorded round 4, unchanged, is computed."""
    fed, _ = honest
    params, msg = _request(fed, 4)
    _accepted_by_all(_send(fed, params, like=msg))


# -- crafted coefficients --------------------------------------------------------------------------------------
def test_beta_plus_a_thousandth_in_round_3_is_refused(honest):
    fed, _ = honest
    params, msg = _request(fed, 3)
    params["beta"][2] += 1e-3
    _refused_by_all(_send(fed, params, like=msg), "beta")


def test_a_step_function_beta_isolating_one_row_is_refused(honest, tables):
    """eta = 60 (z_age - z_0): p jumps from 0 to 1 between the oldest patient and the next one, so the
    pooled gradient would be that one patient's row."""
    fed, _ = honest
    params, msg = _request(fed, 2)
    state = params["preprocess"]
    j = state["terms"].index("age")
    ages = np.sort(pd.concat(list(tables.values()))["age"].to_numpy())
    z0 = (ages[-2] + ages[-1]) / 2 - state["center"][j]
    z0 /= state["scale"][j]
    beta = np.zeros(len(params["beta"]))
    beta[0], beta[1 + j] = -60.0 * z0, 60.0
    params["beta"] = beta.tolist()
    _refused_by_all(_send(fed, params, like=msg), "beta")


def test_a_changed_earlier_coefficient_breaks_the_chain(honest):
    fed, _ = honest
    params, msg = _request(fed, 4)
    params["beta_path"][2][1] += 1e-3
    _refused_by_all(_send(fed, params, like=msg), "chain")


def test_other_settings_for_the_same_transcript_break_the_chain(honest):
    """A coordinator cannot change the penalty in mid-fit: the earlier rounds were requested without it."""
    fed, _ = honest
    params, msg = _request(fed, 4)
    params["rule"].update(penalty="l2", C=0.01)
    _refused_by_all(_send(fed, params, like=msg), "chain")


def test_a_design_that_does_not_follow_from_the_released_sums_is_refused(honest):
    fed, _ = honest
    for change in ("scale", "center", "mean", "terms"):
        params, msg = _request(fed, 1)
        state = params["preprocess"]
        if change == "terms":  # a 0.1-year step on age instead of its standardization
            state["terms"][0] = state["terms"][0] + "_x"
        else:
            state[change][0] *= 1.001
        _refused_by_all(_send(fed, params, like=msg), "design")


# -- crafted transcripts -----------------------------------------------------------------------------------
def test_an_altered_release_record_is_refused(honest):
    fed, _ = honest
    params, msg = _request(fed, 4)
    rec = params["transcript"][3]  # Newton round 2
    g = np.frombuffer(bytes.fromhex(rec["arrays"]["gradient"]["f8"]), dtype="<f8").copy()
    g[0] += 1.0
    rec["arrays"]["gradient"]["f8"] = g.tobytes().hex()
    _refused_by_all(_send(fed, params, like=msg), "signature")


def test_a_record_forged_by_a_non_member_or_with_a_stolen_name_is_refused(honest):
    fed, _ = honest
    stranger = SiteKeys.generate("site_x")
    for signer in ("site_x", "site_a"):
        params, msg = _request(fed, 3)
        rec = params["transcript"][2]
        forged = sign_release(stranger, study=rec["study"], session=rec["session"], round=rec["round"],
                              task=rec["task"], params_digest=rec["params_digest"], participants=rec["participants"],
                              arrays={"gradient": np.zeros(len(params["beta"])), "hessian": np.ones(3),
                                      "loglik": np.zeros(1)})
        forged["signer"] = signer  # a stolen name: signed with a key that is not site_a's pinned key
        params["transcript"][2] = forged
        _refused_by_all(_send(fed, params, like=msg), "signature")


def test_a_record_signed_by_a_member_that_did_not_decrypt_is_refused(honest, ceremony):
    """The coordinator with another member (site_b, holding its own pinned signing key) re-signs a round's
    release with other values: a real member's valid signature, but not the decrypting site's."""
    fed, _ = honest
    keys, _ = ceremony
    params, msg = _request(fed, 3)
    rec = params["transcript"][2]
    assert rec["signer"] == "site_a"
    forged = sign_release(keys["site_b"], study=rec["study"], session=rec["session"], round=rec["round"],
                          task=rec["task"], params_digest=rec["params_digest"], participants=rec["participants"],
                          arrays={"gradient": np.zeros(len(params["beta"])), "hessian": np.ones(3),
                                  "loglik": np.zeros(1)})
    params["transcript"][2] = forged
    _refused_by_all(_send(fed, params, like=msg), "signature")


def test_a_transcript_from_another_session_is_refused(honest, ceremony, tables):
    fed, _ = honest
    keys, ckeys = ceremony
    other = _federation(tables, copy.deepcopy(keys), ckeys)
    try:
        _fit(other, max_iter=3, tol=1e-14)
        theirs = other.transport.newton()[-1].payload["params"]
    finally:
        other.close()
    # the other session's whole request, sent in this session; then one of its records spliced into ours
    params = copy.deepcopy(theirs)
    _refused_by_all(_send(fed, params, like=fed.transport.newton()[2]), "session")
    params, msg = _request(fed, 3)
    params["transcript"][3] = copy.deepcopy(theirs["transcript"][3])
    _refused_by_all(_send(fed, params, like=msg), "session")


def test_a_dropped_round_is_refused(honest):
    fed, _ = honest
    params, msg = _request(fed, 4)
    del params["transcript"][3], params["beta_path"][1]  # Newton round 2 and the coefficients it was run at
    _refused_by_all(_send(fed, params, like=msg), "chain")


def test_reordered_rounds_are_refused(honest):
    fed, _ = honest
    params, msg = _request(fed, 4)
    t, b = params["transcript"], params["beta_path"]
    t[2], t[3], b[0], b[1] = t[3], t[2], b[1], b[0]
    _refused_by_all(_send(fed, params, like=msg), "order")


def test_a_request_without_a_transcript_is_refused(honest):
    fed, _ = honest
    params, msg = _request(fed, 2)
    for key in ("transcript", "beta_path", "setup", "rule"):
        p = copy.deepcopy(params)
        del p[key]
        _refused_by_all(_send(fed, p, like=msg), "malformed")


def test_no_round_follows_a_finished_fit(honest):
    """max_iter=4 rounds were run: a fifth round, though its beta is the rule's next step, is refused."""
    fed, model = honest
    params, msg = _request(fed, 4)
    last_release = fed.history[-1]["release"]
    base = {k: params[k] for k in ("preprocess", "fit_intercept", "label", "rule", "setup")}
    nxt = newton_params(base, model.beta_, [*params["beta_path"], params["beta"]],
                        [*params["transcript"], last_release])
    _refused_by_all(_send(fed, nxt, like=msg), "finished")
    # the same continuation under max_iter=5 is not the request either (the earlier rounds said max_iter=4)
    base["rule"] = {**base["rule"], "max_iter": 5}
    nxt = newton_params(base, model.beta_, [*params["beta_path"], params["beta"]],
                        [*params["transcript"], last_release])
    _refused_by_all(_send(fed, nxt, like=msg), "chain")


# -- restarts --------------------------------------------------------------------------------------------------
def test_a_restarted_site_accepts_the_honest_continuation(ceremony, tables, tmp_path):
    """The coordinator stops before Newton round 3; site_b restarts (new SiteNode, same keys, no memory); the
    coordinator resumes from its checkpoint and every site, the new one too, replays and accepts the rest."""
    keys, ckeys = ceremony
    fed = _federation(tables, copy.deepcopy(keys), ckeys, checkpoint_dir=tmp_path)
    fed.transport.crash_at_newton = 3
    with pytest.raises(CoordinatorCrash):
        _fit(fed, max_iter=25)
    inner = fed.transport.inner
    old = inner.nodes["site_b"]
    inner.nodes["site_b"] = SiteNode("site_b", tables["site_b"], old.policy, copy.deepcopy(keys["site_b"]),
                                     study=STUDY, allow_insecure=True)
    resumed = Federation(Recorder(inner), keys=ckeys, policy=fed.policy, encrypted=True, study=STUDY,
                         checkpoint_dir=tmp_path, timeout=120.0, allow_insecure=True)
    try:
        model = _fit(resumed, max_iter=25)
    finally:
        resumed.close()
    assert model.converged_ and model.n_iter_ > 3
    live = resumed.transport.newton()
    assert len(live) == model.n_iter_ - 2  # rounds 1 and 2 came from the journal
    assert all(len(m.payload["params"]["beta_path"]) == k for k, m in enumerate(live, start=2))
    answered = [e for e in inner.nodes["site_b"].audit.entries
                if e["task"] == "logreg.newton" and e["action"] == "secure_sum"]
    assert len(answered) == len(live) and all(e["status"] == "ok" for e in answered)
    reference = Federation.in_process(tables, encrypted=False, study=STUDY)
    try:
        straight = _fit(reference, max_iter=25, encrypted=False)
    finally:
        reference.close()
    np.testing.assert_allclose(model.coef_, straight.coef_, rtol=1e-6, atol=1e-8)


# -- a private fit -----------------------------------------------------------------------------------------
def test_a_private_fit_is_replayed_from_its_noisy_releases(ceremony, tables):
    keys, ckeys = ceremony
    fed = _federation(tables, copy.deepcopy(keys), ckeys)
    try:
        model = _fit(fed, dp={"epsilon": 4.0, "delta": 1e-6, "rounds": 3, "feature_bounds": BOUNDS}, penalty="l2")
        assert model.n_iter_ == 3 and np.isfinite(model.coef_).all()
        params, msg = _request(fed, 3)
        assert "dp" in params and params["dp_index"] == 2 and params["rule"]["rounds"] == 3
        crafted = copy.deepcopy(params)
        crafted["beta"][1] += 1e-3
        _refused_by_all(_send(fed, crafted, like=msg), "beta")
        crafted = copy.deepcopy(params)
        crafted["rule"]["ridge_factor"] = 0.0
        _refused_by_all(_send(fed, crafted, like=msg), "chain")
        crafted = copy.deepcopy(params)
        crafted["dp_index"] = 0  # the noise of round 1 again
        _refused_by_all(_send(fed, crafted, like=msg), "malformed")
    finally:
        fed.close()


def test_a_private_fit_with_one_information_release_is_replayed_and_a_tampered_step_refused(ceremony, tables):
    """information_rounds=1: the later rounds release the gradient only and step with the first round's
    information matrix; every site replays that rule (the honest fit passes) and refuses a changed step or a
    request that claims another information schedule for the same transcript."""
    keys, ckeys = ceremony
    fed = _federation(tables, copy.deepcopy(keys), ckeys)
    try:
        model = _fit(fed, dp={"epsilon": 4.0, "delta": 1e-6, "rounds": 3, "information_rounds": 1,
                              "feature_bounds": BOUNDS}, penalty="l2")
        assert model.n_iter_ == 3 and np.isfinite(model.coef_).all()
        assert [set(r) for r in model.dp_["noise"]["logreg.newton"]] == [
            {"gradient", "hessian", "loglik"}, {"gradient", "loglik"}, {"gradient", "loglik"}]
        params, msg = _request(fed, 3)
        assert params["dp_clip"]["information_rounds"] == 1 and params["dp_index"] == 2
        replies = _send(fed, copy.deepcopy(params), like=msg)  # the honest request again: computed
        assert sorted(replies) == list(SITES)
        for sid, rep in replies.items():
            assert rep.ok, (sid, rep.error)
            assert set(rep.payload["arrays"]) == {"gradient", "loglik"}  # no information matrix in round 3
        crafted = copy.deepcopy(params)
        crafted["beta"][2] -= 1e-3
        _refused_by_all(_send(fed, crafted, like=msg), "beta")
        crafted = copy.deepcopy(params)  # twice the step the rule takes from round 2
        crafted["beta"] = list(np.asarray(params["beta_path"][1]) + 2.0 * (np.asarray(params["beta"])
                                                                          - np.asarray(params["beta_path"][1])))
        _refused_by_all(_send(fed, crafted, like=msg), "beta")
        crafted = copy.deepcopy(params)
        crafted["dp_clip"]["information_rounds"] = 3  # would make round 3 release an information matrix
        _refused_by_all(_send(fed, crafted, like=msg), "chain")
    finally:
        fed.close()


# -- a plaintext federation ------------------------------------------------------------------------------------
def test_a_plaintext_federation_is_replayed_the_same_way(tables):
    """encrypted=False still sends every sum to a decrypting site that signs the release: same replay, no
    unsigned path."""
    fed = Federation.in_process(tables, encrypted=False, study=STUDY)
    fed.transport = Recorder(fed.transport)
    try:
        model = _fit(fed, max_iter=3, tol=1e-14, encrypted=False)
        assert model.n_iter_ == 3
        params, msg = _request(fed, 3)
        assert all(isinstance(r.get("signature"), str) for r in params["transcript"])
        _accepted_by_all(_send(fed, copy.deepcopy(params), like=msg))
        params["beta"][0] += 1e-3
        _refused_by_all(_send(fed, params, like=msg), "beta")
    finally:
        fed.close()
