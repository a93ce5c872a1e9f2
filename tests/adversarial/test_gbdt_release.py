"""Boosting releases only what the rules allow, decided at the decrypting site (issue 13).

An honest fit runs through the real in-process transport with a spy that keeps every message and reply;
a malicious coordinator then replays captured requests with crafted trees, leaf values, transcripts and
decrypt parameters to the real sites. Every released node and child holds >= min_cell_count pooled rows,
no histogram reaches the coordinator, and every crafted request is refused (rule ``transcript``).
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from ehr_fed.federation import Federation
from ehr_fed.federation.coordinator import FederationError
from ehr_fed.federation.messages import TaskMessage, new_nonce
from ehr_fed.federation.testing import FEATURES, make_table, test_ceremony
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier
from ehr_fed.models.gbdt.binning import BinMapper
from ehr_fed.models.gbdt.grower import LocalHistogramSource
from ehr_fed.models.gbdt.predictor import Tree, apply_tree
from ehr_fed.models.gbdt.release import RELEASE_COLUMNS, LevelReleaser, LevelRequest
from ehr_fed.models.gbdt.splitting import SplitParams
from ehr_fed.models.gbdt.transcript import decode_record, encode_record
from ehr_fed.privacy import DisclosureError

from .conftest import MIN

SITES = ("site_a", "site_b", "site_c")
FIT = dict(n_estimators=3, max_depth=3, max_bin=32, learning_rate=0.3)
COL = {c: i for i, c in enumerate(RELEASE_COLUMNS)}
_ROUNDS = itertools.count(100_000)


class Spy:
    """Transport wrapper: keeps every message and reply; ``tamper(msg) -> msg`` may rewrite messages in flight."""

    def __init__(self, inner, tamper=None):
        self.inner, self.tamper = inner, tamper
        self.sent: list[tuple[str, TaskMessage]] = []  # (site, message)
        self.replies: list = []

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        if self.tamper is not None:
            messages = {sid: self.tamper(m) for sid, m in messages.items()}
        self.sent.extend(messages.items())
        out = self.inner.send(messages, timeout)
        self.replies.extend(r for r in out.values() if hasattr(r, "payload"))
        return out

    def close(self):
        self.inner.close()


def _tables() -> dict[str, pd.DataFrame]:
    return {sid: make_table(sid, n, 31 + i) for i, (sid, n) in enumerate(zip(SITES, (160, 240, 200), strict=True))}


def _federation(encrypted: bool, tamper=None):
    keys, _ = test_ceremony(SITES)
    fed = Federation.in_process(_tables(), encrypted=encrypted, allow_insecure=True, site_keys=keys if encrypted
                                else None, study="s1")
    fed.transport = Spy(fed.transport, tamper)
    return fed


@pytest.fixture(scope="module")
def honest():
    """An encrypted fit (spied), a second training in the same session, and the plaintext fit."""
    fed = _federation(encrypted=True)
    model = FederatedGradientBoostingClassifier(encrypted=True, **FIT).fit(fed)
    n_first = len(fed.transport.sent)
    other = FederatedGradientBoostingClassifier(encrypted=True, **{**FIT, "learning_rate": 0.2}).fit(fed)
    plain_fed = _federation(encrypted=False)
    plain = FederatedGradientBoostingClassifier(encrypted=False, **FIT).fit(plain_fed)
    yield {"fed": fed, "spy": fed.transport, "model": model, "other": other, "n_first": n_first, "plain": plain}
    fed.close()
    plain_fed.close()


def _histogram_requests(spy, start=0, stop=None) -> list[TaskMessage]:
    """One captured ``gbdt.histograms`` secure-sum message per round (the one sent to site_a)."""
    return [m for sid, m in spy.sent[start:stop]
            if m.action == "secure_sum" and m.task == "gbdt.histograms" and sid == "site_a"]


def _resend(fed, msg: TaskMessage, params: dict) -> dict:
    """The captured request with ``params`` instead, as a fresh message to every site."""
    payload = dict(msg.payload, params=params)
    r = next(_ROUNDS)  # fresh: after every honest round
    msgs = {sid: TaskMessage("secure_sum", msg.task, msg.study, msg.session, r, new_nonce(), payload) for sid in SITES}
    return fed.transport.inner.send(msgs, 60.0)


def _assert_refused(replies: dict, match: str) -> None:
    for sid, rep in replies.items():
        assert not rep.ok, sid
        assert rep.error_kind == "disclosure" and "[transcript]" in rep.error and match in rep.error, (sid, rep.error)


def _pooled() -> pd.DataFrame:
    return pd.concat(_tables().values(), ignore_index=True)


# -- what the coordinator receives -------------------------------------------------------------------------
def test_no_histogram_and_no_node_below_the_minimum_reaches_the_coordinator(honest):
    spy, model = honest["spy"], honest["model"]
    contributions = [r for r in spy.replies if r.action == "secure_sum" and r.task == "gbdt.histograms"]
    opened = [r for r in spy.replies if r.action == "decrypt" and r.task == "gbdt.histograms"]
    assert contributions and len(opened) == len(contributions) // len(SITES)
    for r in contributions:  # each site's histograms: masked ciphertexts only
        assert r.ok and r.payload["masked"] and all(isinstance(v, bytes) for v in r.payload["arrays"].values())
    counts = []
    for r in opened:
        assert r.ok and set(r.payload["arrays"]) == {"splits", "link"}  # no histogram left the decrypting site
        rows = np.asarray(r.payload["arrays"]["splits"])
        split = rows[:, COL["split"]] == 1
        counts += rows[split][:, [COL["c_left"], COL["c_right"]]].ravel().tolist()
        counts += rows[~split][:, COL["c_left"]].tolist()
        assert set(r.payload["release"]["arrays"]) == {"splits", "link"}
    assert counts and min(counts) >= MIN
    for t in model.trees_:
        assert min(t.count) >= MIN
    # ... while the pooled histograms the decrypting site held do have bins of 1 .. MIN-1 rows
    pooled = _pooled()
    src = LocalHistogramSource(pooled[FEATURES].to_numpy(), pooled["label"].to_numpy(),
                               BinMapper(model.bin_edges_, FIT["max_bin"]), model.base_score_, model.precision_)
    n_small = 0
    for i, tree in enumerate(model.trees_):
        src.begin_tree(model.trees_[:i])
        c = src.histograms(tree, list(range(tree.n_nodes)))[..., 2]
        n_small += int(((c > 0) & (c < MIN)).sum())
    assert n_small > 100


def test_honest_fits_encrypted_equals_plaintext_and_exports_to_xgboost(honest, tmp_path):
    model, plain = honest["model"], honest["plain"]
    assert [t.to_routing() for t in model.trees_] == [t.to_routing() for t in plain.trees_]
    pooled = _pooled()
    booster = xgb.Booster(model_file=str(model.save_xgboost_json(tmp_path / "m.json")))
    p_xgb = booster.predict(xgb.DMatrix(pooled[FEATURES].to_numpy(), feature_names=FEATURES))
    assert np.abs(p_xgb - model.predict_proba(pooled)[:, 1]).max() < 1e-6


# -- a malicious coordinator -----------------------------------------------------------------------------
def test_a_crafted_tree_isolating_one_row_is_refused(honest):
    fed, spy = honest["fed"], honest["spy"]
    msg = _histogram_requests(spy, 0, honest["n_first"])[0]  # the root request of the first tree
    pooled = _pooled()
    tree = Tree()
    ages = np.sort(pooled["age"].to_numpy().astype(np.float32))
    lo, hi = tree.split(0, FEATURES.index("age"), 0, (ages[-2] + ages[-1]) / 2, False, 1.0)  # the oldest patient
    assert (apply_tree(tree, pooled[FEATURES].to_numpy().astype(np.float32)) == hi).sum() == 1
    params = copy.deepcopy(msg.payload["params"])
    params["tree"] = tree.to_routing()
    params.update(LevelRequest((lo, hi), (hi,), ((lo, 0, hi),)).to_params())
    _assert_refused(_resend(fed, msg, params), "tree being grown differs from its released splits")
    # forging the record that would justify it breaks the decrypting site's signature
    later = next(m for m in _histogram_requests(spy, 0, honest["n_first"]) if m.payload["params"]["transcript"][-1])
    params = copy.deepcopy(later.payload["params"])
    record = decode_record(params["transcript"][-1][0])
    forged = np.frombuffer(bytes.fromhex(record["arrays"]["splits"]["f8"]), dtype="<f8").copy()
    forged[COL["bin"]], forged[COL["feature"]] = 0, FEATURES.index("age")
    record["arrays"]["splits"]["f8"] = forged.tobytes().hex()
    params["transcript"][-1][0] = encode_record(record)
    _assert_refused(_resend(fed, later, params), "does not verify: the values were altered")


def test_a_record_signed_by_a_member_that_did_not_decrypt_is_refused(honest):
    """A coordinator with another member (site_b, its own pinned key) re-signs a level's release with a forged
    split: a valid member signature, but not that of the decrypting site the contributors agreed to."""
    from ehr_fed.federation.releases import decode_arrays, sign_release

    fed, spy = honest["fed"], honest["spy"]
    keys, _ = test_ceremony(SITES)
    later = next(m for m in _histogram_requests(spy, 0, honest["n_first"]) if m.payload["params"]["transcript"][-1])
    params = copy.deepcopy(later.payload["params"])
    record = decode_record(params["transcript"][-1][0])
    assert record["signer"] == "site_a"
    arrays = decode_arrays(record["arrays"])
    arrays["splits"] = arrays["splits"].copy()
    arrays["splits"].reshape(-1)[COL["bin"]] = 0
    forged = sign_release(keys["site_b"], study=record["study"], session=record["session"], round=record["round"],
                          task=record["task"], params_digest=record["params_digest"],
                          participants=record["participants"], arrays=arrays)
    params["transcript"][-1][0] = encode_record(forged)
    _assert_refused(_resend(fed, later, params), "agreed to decryption by 'site_a'")


def test_altered_leaf_values_are_refused(honest):
    fed, spy = honest["fed"], honest["spy"]
    msg = next(m for m in _histogram_requests(spy, 0, honest["n_first"]) if m.payload["params"]["trees"])
    params = copy.deepcopy(msg.payload["params"])
    leaf = np.asarray(params["trees"][0]["leaf_value"], dtype=np.float64).copy()
    leaf[np.flatnonzero(np.asarray(params["trees"][0]["left"]) == -1)[0]] += 0.5
    params["trees"][0]["leaf_value"] = leaf
    _assert_refused(_resend(fed, msg, params), "finished tree (routing, thresholds or leaf values) differs")


def test_two_trees_differing_by_one_row_cannot_be_requested(honest):
    """The differencing pair: the honest node and the same node with one more row, through a threshold moved to
    just past one row's value. The sites refuse the second (and any routing their transcript does not give)."""
    fed, spy = honest["fed"], honest["spy"]
    msg = next(m for m in _histogram_requests(spy, 0, honest["n_first"]) if m.payload["params"]["transcript"][-1])
    params = copy.deepcopy(msg.payload["params"])
    tree = params["tree"]
    j = int(tree["feature"][0])
    x = _pooled()[FEATURES].to_numpy().astype(np.float32)
    thr = np.float32(tree["threshold"][0])
    above = np.sort(x[:, j][x[:, j] >= thr])
    moved = np.nextafter(above[0], np.float32(np.inf))  # one more row (the lowest value above) goes left
    honest_tree = Tree(**{k: list(v) for k, v in tree.items()}, parent=[-1] * len(tree["left"]),
                       split_bin=[-1] * len(tree["left"]), base_weight=[0.0] * len(tree["left"]),
                       loss_change=[0.0] * len(tree["left"]), sum_hessian=[0.0] * len(tree["left"]),
                       count=[0] * len(tree["left"]))
    rows_before = np.bincount(apply_tree(honest_tree, x), minlength=3)
    crafted = copy.deepcopy(tree)
    crafted["threshold"] = np.asarray(tree["threshold"], dtype=np.float64).copy()
    crafted["threshold"][0] = float(moved)
    honest_tree.threshold[0] = float(moved)
    rows_after = np.bincount(apply_tree(honest_tree, x), minlength=3)
    assert abs(int(rows_after[1]) - int(rows_before[1])) == (x[:, j] == above[0]).sum() >= 1
    params["tree"] = crafted
    _assert_refused(_resend(fed, msg, params), "tree being grown differs")


def test_records_of_another_training_do_not_link(honest):
    """Splicing: the first training's tree into the second training's request (same session, same keys)."""
    fed, spy = honest["fed"], honest["spy"]
    mine = next(m for m in _histogram_requests(spy, 0, honest["n_first"]) if len(m.payload["params"]["trees"]) == 1)
    theirs = next(m for m in _histogram_requests(spy, honest["n_first"]) if len(m.payload["params"]["trees"]) == 1
                  and not m.payload["params"]["transcript"][-1])
    params = copy.deepcopy(theirs.payload["params"])
    params["transcript"][0] = copy.deepcopy(mine.payload["params"]["transcript"][0])
    params["trees"][0] = copy.deepcopy(mine.payload["params"]["trees"][0])
    _assert_refused(_resend(fed, theirs, params), "does not link to this training's settings")
    # and the same training's records out of order
    params = copy.deepcopy(mine.payload["params"])
    params["transcript"][0] = params["transcript"][0][::-1]
    _assert_refused(_resend(fed, mine, params), "does not link")


def test_the_decrypting_site_computes_on_the_signed_parameters_only():
    """A coordinator that rewrites the grower settings of the decrypt request (a lower min_count, say) is refused."""
    def tamper(m):
        if m.action == "decrypt" and m.task == "gbdt.histograms":
            params = dict(m.payload["params"], min_count=1)
            return TaskMessage(m.action, m.task, m.study, m.session, m.round, m.nonce, dict(m.payload, params=params))
        return m

    fed = _federation(encrypted=False, tamper=tamper)
    try:
        with pytest.raises(FederationError, match="parameters .*the contributors signed"):
            FederatedGradientBoostingClassifier(encrypted=False, **FIT).fit(fed)
    finally:
        fed.close()


def test_the_release_step_refuses_a_node_below_the_minimum():
    rng = np.random.default_rng(3)
    hist = np.zeros((1, 2, 5, 3), dtype=np.int64)
    counts = np.array([3, 2, 0, 1, 0])  # a node of 6 rows
    for j in range(2):
        hist[0, j, :, 2] = counts
        hist[0, j, :, 1] = counts * 512
        hist[0, j, :, 0] = counts * rng.integers(-100, 100)
    hist[0, 1] = hist[0, 0]
    with pytest.raises(DisclosureError, match=r"\[small_cell\].*fewer pooled rows than min_cell_count=10"):
        LevelReleaser().release(0, LevelRequest((0,), (0,), ()), hist, np.array([3, 3]),
                                SplitParams(min_count=10, precision=12))


def test_a_second_training_with_shifted_cuts_is_refused(honest):
    """Two trainings whose bins differ by one row's value would difference that row: the sites recompute the
    cuts from the signed sketch the request cites (and pin the session's cuts, persistently)."""
    fed, spy = honest["fed"], honest["spy"]
    root = _histogram_requests(spy, 0, honest["n_first"])[0]
    params = copy.deepcopy(root.payload["params"])
    params["training_id"] = "another"
    j = FEATURES.index("age")
    cuts = [np.asarray(c, dtype=np.float64).copy() for c in params["cuts"]]
    cuts[j][3] = np.nextafter(np.float32(cuts[j][3]), np.float32(np.inf))
    params["cuts"] = cuts
    _assert_refused(_resend(fed, root, params), "bin cuts do not follow from the signed sketch release they cite")
    params["cuts"] = copy.deepcopy(root.payload["params"]["cuts"])  # the session's cuts: a new training is fine
    assert all(rep.ok for rep in _resend(fed, root, params).values())


def test_sibling_modes_grow_the_same_trees_and_a_lost_parent_stops_the_fit(honest):
    from ehr_fed.models.gbdt import tasks as gbdt_tasks

    fed = _federation(encrypted=False)
    try:
        both = FederatedGradientBoostingClassifier(encrypted=False, sibling="both", **FIT).fit(fed)
    finally:
        fed.close()
    assert [t.to_routing() for t in both.trees_] == [t.to_routing() for t in honest["plain"].trees_]

    def forget(m):  # the decrypting site "restarts" before each level below the root
        if m.action == "decrypt" and m.task == "gbdt.histograms" and len(m.payload["params"]["derive"]):
            gbdt_tasks.clear_cache()
        return m

    fed = _federation(encrypted=False, tamper=forget)
    try:
        with pytest.raises(FederationError, match="does not hold that parent's summed histogram"):
            FederatedGradientBoostingClassifier(encrypted=False, **FIT).fit(fed)
    finally:
        fed.close()


# -- a private (DP) training: same protocol, noisy sums post-processed at the decrypting site ---------------
DP_BOUNDS = {"age": [0, 110], "sex_female": [0, 1], "los_days": [0, 60], "charlson": [0, 24],
             "lab_creatinine": [0, 15]}
DP_FIT = dict(n_estimators=3, max_depth=2, max_bin=16, learning_rate=0.3)


@pytest.fixture(scope="module")
def private_fit():
    fed = _federation(encrypted=False)
    model = FederatedGradientBoostingClassifier(encrypted=False, **DP_FIT,
                                                dp={"epsilon": 8.0, "feature_bounds": DP_BOUNDS}).fit(fed)
    yield {"fed": fed, "spy": fed.transport, "model": model}
    fed.close()


def test_a_private_fit_releases_splits_only_and_its_leaves_are_clamped(private_fit):
    spy, model = private_fit["spy"], private_fit["model"]
    opened = [r for r in spy.replies if r.action == "decrypt" and r.task == "gbdt.histograms"]
    assert len(opened) == model.dp_["levels_released"] >= DP_FIT["n_estimators"]
    for r in opened:  # the decrypting site released best splits and a link, never the noisy histograms
        assert r.ok and set(r.payload["arrays"]) == {"splits", "link"}
    requests = _histogram_requests(spy)
    assert all(m.payload["params"]["dp_max_leaf"] == 1.0 for m in requests)
    bound = DP_FIT["learning_rate"] * 1.0
    assert max(abs(v) for t in model.trees_ for v in t.leaf_value) <= bound + 1e-7
    # the sites replayed every tree from the noisy releases: min_child_weight was raised to the noise
    assert model.dp_["min_child_weight"] > 1.0


@pytest.mark.parametrize("change", ["wider leaf clamp", "no raised min_child_weight", "dp dropped"])
def test_a_coordinator_cannot_relax_or_drop_the_private_settings_mid_training(private_fit, change):
    fed, spy = private_fit["fed"], private_fit["spy"]
    msg = _histogram_requests(spy)[-1]  # carries the signed records of the earlier trees
    params = copy.deepcopy(msg.payload["params"])
    assert params["transcript"] and any(params["transcript"])
    if change == "wider leaf clamp":
        params["dp_max_leaf"] = 100.0
    elif change == "no raised min_child_weight":
        params["dp_min_hessian_sigmas"] = 0.0
    else:  # exact (noise-free) sums of the same training
        for key in ("dp", "dp_index", "dp_channel_weights", "dp_max_leaf", "dp_min_hessian_sigmas"):
            params.pop(key)
    replies = _resend(fed, msg, params)
    for sid, rep in replies.items():
        assert not rep.ok, sid
        assert rep.error_kind == "disclosure" and rep.payload == {}, (sid, rep.error)
        if change == "dp dropped":
            assert "[transcript]" in rep.error and "does not link" in rep.error, (sid, rep.error)


def test_the_private_release_step_makes_noisy_sums_consistent_and_keeps_small_nodes_leaves():
    from ehr_fed.models.gbdt.packing import bin_mask
    from ehr_fed.models.gbdt.release import noisy_release

    rng = np.random.default_rng(5)
    n_cuts = np.array([3, 3])
    mask = bin_mask(n_cuts, 5)
    hist = np.zeros((1, 2, 5, 3), dtype=np.int64)
    hist[0][mask] = rng.integers(0, 40, size=(int(mask.sum()), 3)) * np.array([1, 1024, 1])
    hist[0, 1, 0] += [500, 300, 7]  # noise: feature 1 sums to other totals than feature 0
    sp = SplitParams(reg_lambda=1.0, gamma=0.0, min_child_weight=0.0, min_count=MIN, precision=12)
    request = LevelRequest((0,), (0,), ())
    tiny = hist.copy()
    tiny[..., 2] = 0
    tiny[0, :, 0, 2] = MIN // 2  # a node of MIN / 2 rows in every feature
    with pytest.raises(DisclosureError):  # exact sums: the small root is refused
        LevelReleaser().release(0, request, tiny, n_cuts, sp)
    params = {"dp": {"epsilon": 1.0}, "learning_rate": 0.3, "channels": 3, "dp_max_leaf": 1.0}
    noisy = noisy_release(params, mask)
    assert noisy is not None and noisy.leaf_bound == pytest.approx(0.3)
    assert noisy_release({k: v for k, v in params.items() if k != "dp"}, mask) is None
    releaser = LevelReleaser()
    rows = releaser.release(0, request, hist, n_cuts, sp, noisy=noisy)
    kept = releaser.kept[0]
    sums = kept.sum(axis=1)
    assert (sums == sums[:1]).all()  # every feature's bins add up to one total per channel
    small = releaser.release(1, request, tiny, n_cuts, sp, noisy=noisy)  # below min_count: a leaf row
    assert small[0, COL["split"]] == 0 and small[0, COL["feature"]] == -1
    assert rows.shape == (1, len(RELEASE_COLUMNS))
