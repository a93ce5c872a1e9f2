"""A malicious coordinator evaluating crafted models: every site checks the model against its training.

Honest fits (logistic regression and boosting) and an honest evaluation run through the real coordinator,
the real in-process transport and real SiteNodes (keys from one test ceremony, Paillier-encrypted); a
recorder keeps every request. The attacks resend the recorded evaluation request through the same transport
with a crafted model in place of the honest one, as a coordinator would: each must be refused by every site
with rule ``model_provenance`` and a reason code, and nothing may leave a site.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from ehr_fed.evaluation import evaluate
from ehr_fed.evaluation.modeljson import model_to_json
from ehr_fed.evaluation.provenance import approved_digest
from ehr_fed.federation import Federation
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.messages import TaskMessage, new_nonce
from ehr_fed.federation.releases import sign_release
from ehr_fed.federation.testing import make_tables, test_ceremony
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier
from ehr_fed.models.persistence import decode_training, encode_training, seal_model_document
from ehr_fed.privacy import PrivacyPolicy

SITES = ("site_a", "site_b", "site_c")
STUDY = "s1"
TASK = "evaluation.score_histograms"


class Recorder:
    """The real transport, with every message the coordinator sends kept."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        self.sent.append(next(iter(messages.values())))
        return self.inner.send(messages, timeout)

    def last(self, task: str, action: str = "secure_sum") -> TaskMessage:
        return [m for m in self.sent if m.task == task and m.action == action][-1]

    def close(self):
        self.inner.close()


def _federation(tables, keys, **kw) -> Federation:
    fed = Federation.in_process(tables, encrypted=True, site_keys=keys, allow_insecure=True, study=STUDY,
                                timeout=120.0, **kw)
    fed.transport = Recorder(fed.transport)
    return fed


@pytest.fixture(scope="module")
def ceremony():
    return test_ceremony(SITES)


@pytest.fixture(scope="module")
def tables():
    return make_tables((90, 120, 100), seed=11)


@pytest.fixture(scope="module")
def fed(ceremony, tables):
    keys, _ = ceremony
    f = _federation(tables, keys)
    yield f
    f.close()


@pytest.fixture(scope="module")
def logreg(fed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FederatedLogisticRegression(max_iter=6).fit(fed)


@pytest.fixture(scope="module")
def gbdt(fed):
    return FederatedGradientBoostingClassifier(n_estimators=2, max_depth=2, max_bin=8).fit(fed)


@pytest.fixture(scope="module")
def honest_request(fed, logreg):
    """An honest evaluation of the logistic regression; its score-histogram request, recorded."""
    result = evaluate(fed, logreg, per_site=False, lace=False, n_bins=50)
    assert 0.5 < result.overall["auc"] < 1.0
    return fed.transport.last(TASK)


def _send(fed, model_text: str, like: TaskMessage, task: str = TASK, action: str = "secure_sum"):
    """The recorded request with another model, in the federation's session, through the real transport."""
    fed._round += 1
    params = {**copy.deepcopy(like.payload["params"]), "model": model_text}
    payload = {**like.payload, "params": params} if action == "secure_sum" else {"params": params}
    msgs = {sid: TaskMessage(action, task, fed.study_id, fed.journal.session, fed._round, new_nonce(), payload)
            for sid in fed.site_ids}
    return fed.transport.inner.send(msgs, 120.0)


def _refused_by_all(replies, code: str):
    assert sorted(replies) == list(SITES)
    for sid, rep in replies.items():
        assert not rep.ok, f"{sid} scored the crafted model"
        assert rep.error_kind == "disclosure", (sid, rep.error)
        assert f"[model_{code}]" in rep.error and "(rule model_provenance)" in rep.error, (sid, rep.error)
        assert rep.payload == {}, f"{sid} released something with its refusal"


def _accepted_by_all(replies):
    assert sorted(replies) == list(SITES)
    for sid, rep in replies.items():
        assert rep.ok, (sid, rep.error)


def _doc(model) -> dict:
    return json.loads(model_to_json(model))


def _text(doc: dict) -> str:
    """A model file as a coordinator would rewrite it: its checksum recomputed, so it loads."""
    return json.dumps(seal_model_document(doc))


def _step_beta(doc: dict, tables) -> list[float]:
    """Standardized coefficients eta = 60 (z_age - z_0): risk 0 below the oldest patient, 1 for them alone."""
    prep = doc["state"]["preprocessor"]
    j = prep["terms"].index("age")
    ages = np.sort(pd.concat(list(tables.values()))["age"].to_numpy())
    z0 = ((ages[-2] + ages[-1]) / 2 - prep["center"][j]) / prep["scale"][j]
    beta = np.zeros(len(doc["state"]["beta_standardized"]))
    beta[0], beta[1 + j] = -60.0 * z0, 60.0
    return beta.tolist()


# -- honest models pass ---------------------------------------------------------------------------------------
def test_the_honest_model_file_carries_its_transcript_and_is_evaluated(fed, logreg, honest_request):
    doc = _doc(logreg)
    training = decode_training(doc["training"])
    assert training["kind"] == "logreg" and len(training["transcript"]) == 2 + logreg.n_iter_
    _accepted_by_all(_send(fed, model_to_json(logreg), honest_request))


def test_a_saved_and_reloaded_model_is_evaluated(fed, logreg, honest_request, tmp_path):
    from ehr_fed import load_model

    logreg.save(tmp_path / "m.json")
    loaded = load_model(tmp_path / "m.json")
    assert approved_digest(loaded) == approved_digest(logreg)
    _accepted_by_all(_send(fed, model_to_json(loaded), honest_request))
    _accepted_by_all(_send(fed, (tmp_path / "m.json").read_text(), honest_request))


def test_an_honest_boosting_model_is_evaluated(fed, gbdt):
    result = evaluate(fed, gbdt, per_site=False, lace=False, n_bins=50)
    assert 0.5 < result.overall["auc"] < 1.0
    _accepted_by_all(_send(fed, model_to_json(gbdt), fed.transport.last(TASK)))


# -- crafted logistic regressions -------------------------------------------------------------------------------
def test_a_crafted_step_function_model_is_refused(fed, logreg, honest_request, tables):
    doc = _doc(logreg)
    doc["state"]["beta_standardized"] = _step_beta(doc, tables)
    _refused_by_all(_send(fed, _text(doc), honest_request), "coefficients")


def test_coefficients_a_millionth_off_the_transcript_are_refused(fed, logreg, honest_request):
    doc = _doc(logreg)
    beta = np.asarray(doc["state"]["beta_standardized"])
    doc["state"]["beta_standardized"] = (beta * (1 + 1e-6)).tolist()
    _refused_by_all(_send(fed, _text(doc), honest_request), "coefficients")


def test_a_crafted_model_without_a_transcript_is_refused(fed, logreg, honest_request, tables):
    doc = _doc(logreg)
    doc["state"]["beta_standardized"] = _step_beta(doc, tables)
    del doc["training"]
    _refused_by_all(_send(fed, _text(doc), honest_request), "no_transcript")


def test_a_changed_design_is_refused(fed, logreg, honest_request):
    """The same coefficients over a design that moves the centre of age next to one patient."""
    doc = _doc(logreg)
    prep = doc["state"]["preprocessor"]
    prep["center"][prep["terms"].index("age")] += 7.0
    _refused_by_all(_send(fed, _text(doc), honest_request), "design")


def test_a_transcript_reforged_to_give_the_crafted_model_is_refused(fed, logreg, honest_request, tables):
    """The crafted coefficients with a transcript whose last record is re-signed: by a key outside the ceremony,
    and by a member that is not the decrypting site the contributors agreed to."""
    doc = _doc(logreg)
    training = decode_training(doc["training"])
    beta = _step_beta(doc, tables)
    training["beta_path"][-1] = beta
    last = training["transcript"][-1]
    signer = last["signer"]
    other = next(s for s in SITES if s != signer)
    for keys in (SiteKeys.generate(signer), fed.transport.inner.nodes[other].keys):
        forged = sign_release(keys, study=last["study"], session=last["session"], round=last["round"],
                              task=last["task"], params_digest=last["params_digest"],
                              participants=last["participants"],
                              arrays={"gradient": np.zeros(len(beta)), "hessian": np.zeros(1), "loglik": np.zeros(1)})
        t = copy.deepcopy(training)
        t["transcript"][-1] = forged
        d = copy.deepcopy(doc)
        d["training"] = encode_training(t)
        d["state"]["beta_standardized"] = beta
        _refused_by_all(_send(fed, _text(d), honest_request), "signature")


def test_a_crafted_model_is_refused_for_per_site_metrics_too(fed, logreg, tables):
    """The plaintext per-site query scores with the same check."""
    evaluate(fed, logreg, per_site=True, lace=False, n_bins=50)
    like = fed.transport.last("evaluation.site_metrics", "query")
    doc = _doc(logreg)
    doc["state"]["beta_standardized"] = _step_beta(doc, tables)
    _refused_by_all(_send(fed, _text(doc), like, task="evaluation.site_metrics", action="query"), "coefficients")


# -- crafted boosting models ------------------------------------------------------------------------------------
def _trees(doc: dict) -> list[dict]:
    return doc["state"]["xgboost"]["learner"]["gradient_booster"]["model"]["trees"]


def test_a_crafted_boosting_tree_is_refused(fed, gbdt, tables):
    """The first tree's root split moved to between the two oldest patients (one patient on its right)."""
    evaluate(fed, gbdt, per_site=False, lace=False, n_bins=50)
    like = fed.transport.last(TASK)
    doc = _doc(gbdt)
    root = _trees(doc)[0]
    ages = np.sort(pd.concat(list(tables.values()))["age"].to_numpy())
    root["split_indices"][0] = [f["name"] for f in doc["feature_schema"]].index("age")
    root["split_conditions"][0] = float(np.float32((ages[-2] + ages[-1]) / 2))
    _refused_by_all(_send(fed, _text(doc), like), "trees")


def test_a_boosting_leaf_value_off_by_a_little_is_refused(fed, gbdt):
    evaluate(fed, gbdt, per_site=False, lace=False, n_bins=50)
    like = fed.transport.last(TASK)
    doc = _doc(gbdt)
    tree = _trees(doc)[1]
    leaf = tree["left_children"].index(-1)
    tree["split_conditions"][leaf] = float(np.float32(tree["split_conditions"][leaf] * (1 + 1e-5)))
    tree["base_weights"][leaf] = tree["split_conditions"][leaf]
    _refused_by_all(_send(fed, _text(doc), like), "trees")


def test_a_boosting_transcript_of_a_dropped_tree_is_refused(fed, gbdt):
    """A model with one of its trees removed (and its records) is not the trained model."""
    evaluate(fed, gbdt, per_site=False, lace=False, n_bins=50)
    like = fed.transport.last(TASK)
    doc = _doc(gbdt)
    training = decode_training(doc["training"])
    training["transcript"] = training["transcript"][:1]
    doc["training"] = encode_training(training)
    del _trees(doc)[1:]
    _refused_by_all(_send(fed, _text(doc), like), "unfinished")


# -- externally trained models -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def external_model(tables):
    """A model trained outside the federation (a local fit on other rows: its records are signed by another
    ceremony's keys)."""
    other = make_tables((200,), seed=99)["site_a"]
    features = ["age", "sex_female", "los_days", "charlson", "lab_creatinine"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FederatedLogisticRegression(encrypted=False).fit(other[features], other["label"])


def test_an_external_model_is_refused_unless_approved(fed, honest_request, external_model):
    """Its records are of another study and signed by keys no site pinned."""
    _refused_by_all(_send(fed, model_to_json(external_model), honest_request), "session")


def test_an_approved_external_digest_is_evaluated(ceremony, tables, external_model):
    keys, _ = ceremony
    digest = approved_digest(external_model)
    policy = PrivacyPolicy(approved_models=[digest])
    fed2 = _federation(tables, keys, site_policies={s: policy for s in SITES})
    try:
        result = evaluate(fed2, external_model, per_site=False, lace=False, n_bins=50)
        assert 0.5 < result.overall["auc"] < 1.0
        like = fed2.transport.last(TASK)
        _accepted_by_all(_send(fed2, model_to_json(external_model), like))
        # the approval names one model: another digest is still checked against its transcript
        doc = _doc(external_model)
        doc["state"]["beta_standardized"][1] += 0.5
        assert approved_digest(doc) != digest
        _refused_by_all(_send(fed2, _text(doc), like), "session")
    finally:
        fed2.close()


def test_privately_trained_models_are_evaluated(fed, gbdt):
    """The replay covers the private fits too: the fixed private Newton plan with its averaged iterates, and
    boosting's noisy level releases with their post-processing (on the session's pinned cuts, given as public
    bin edges)."""
    bounds = {"age": [18, 110], "sex_female": [0, 1], "los_days": [0, 60], "charlson": [0, 20],
              "lab_creatinine": [0.1, 15]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = FederatedLogisticRegression(dp={"epsilon": 50.0, "feature_bounds": bounds, "rounds": 4}).fit(fed)
        gb = FederatedGradientBoostingClassifier(n_estimators=2, max_depth=2, max_bin=8, bin_edges=gbdt.bin_edges_,
                                                 dp={"epsilon": 50.0, "feature_bounds": bounds}).fit(fed)
    assert "dp" in decode_training(_doc(lr)["training"])["base"]
    for model in (lr, gb):
        assert model.dp_["epsilon"] > 0
        result = evaluate(fed, model, per_site=False, lace=False, n_bins=50)
        assert result.overall["n"] == 310
        _accepted_by_all(_send(fed, model_to_json(model), fed.transport.last(TASK)))
    doc = _doc(lr)
    doc["state"]["beta_standardized"][1] += 1e-4  # not the mean of the last iterates
    _refused_by_all(_send(fed, _text(doc), fed.transport.last(TASK)), "coefficients")


def test_approved_models_takes_only_model_digests(logreg):
    from ehr_fed.privacy.policy import PolicyError

    with pytest.raises(PolicyError, match="approved_models: .*sha256:<64 hex digits>"):
        PrivacyPolicy.from_mapping({"approved_models": ["logreg.json"]})
    digest = approved_digest(logreg)
    assert digest.startswith("sha256:") and PrivacyPolicy.from_mapping({"approved_models": [digest]})
