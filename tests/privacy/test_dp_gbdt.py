"""Private gradient boosting: exact sensitivities, the summed noise, the budget, the model file, utility."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from ehr_fed import load_model
from ehr_fed.federation import Federation, FederationError, PrivacyPolicy
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier, private
from ehr_fed.models.gbdt.packing import bin_mask, field_widths
from ehr_fed.privacy import DisclosureError
from ehr_fed.privacy import dp as dpmod
from ehr_fed.privacy.budget import ledger_path
from ehr_fed.privacy.dp import DPConfig, Release, ReleasePlan, calibrate

from .data import BOUNDS
from .data import site_table as _site_table

SMALL = dict(encrypted=False, n_estimators=8, max_depth=3, max_bin=16, learning_rate=0.3)
#: the outcome model: intercept, age, sex, los, Charlson, creatinine, cancer (logit scale)
COEF = (-5.5, 0.04, 0.6, 0.12, 0.25, 1.0, 0.9)


def site_table(site: str, n: int, seed: int) -> pd.DataFrame:
    return _site_table(site, n, seed, COEF)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {f"s{i}": site_table(f"s{i}", 3000, 40 + i) for i in range(3)}


@pytest.fixture(scope="module")
def test_rows() -> pd.DataFrame:
    return site_table("t", 6000, 99)


def _fed(tables, **kw):
    return Federation.in_process(tables, encrypted=False, **kw)


# ------------------------------------------------------------------------------------ sensitivities
def test_histogram_sensitivities_are_the_per_row_bounds_in_quantised_units():
    params = {"features": ["a", "b", "c", "d"], "precision": 12, "channels": 3}
    sens = {s.name: s for s in private._hist_sens(params)}
    # one row: one bin per feature, |g_q| <= 2**12, 0 <= h_q <= 2**10, count 1
    assert (sens["grad"].l1, sens["grad"].l2) == (4 * 4096.0, 2 * 4096.0)
    assert (sens["hess"].l1, sens["hess"].l2) == (4 * 1024.0, 2 * 1024.0)
    assert (sens["count"].l1, sens["count"].l2) == (4.0, 2.0)
    assert [s.name for s in private._hist_sens({**params, "channels": 2})] == ["grad", "hess"]
    assert (private._init_sens({})[0].l1, private._init_sens({})[0].l2) == (2.0, math.sqrt(2))
    # the bound holds for the real task: the largest |g_q| and h_q a row can produce
    from ehr_fed.models.gbdt.histogram import logistic_grad_hess, quantize

    g, h = logistic_grad_hess(np.array([-40.0, 40.0, 0.0]), np.array([1.0, 0.0, 1.0]))
    assert np.abs(quantize(g, 12)).max() == 4096 and quantize(h, 12).max() == 1024
    with pytest.raises(ValueError, match="positive weights"):
        private._hist_sens({**params, "dp_channel_weights": {"grad": 1.0, "hess": 1.0}})


def test_private_fields_are_widened_by_the_noise_tail_bound():
    class Fed:
        site_ids = ["a", "b", "c"]

    model = FederatedGradientBoostingClassifier(n_estimators=5, max_depth=2)
    session = private.PrivateBoosting(model, Fed(), DPConfig(epsilon=1.0), {}, names=["x"], need_cuts=False)
    session.n_bound = 1000.0
    params = {"features": ["x"] * 5, "precision": 12, "channels": 3, "dp": session.p, "dp_index": 3}
    widths = session.histogram_layout(params, 2, 17)["hist"]["widths"]
    plain = field_widths(1000, 12, 3)
    assert widths[0][0] == 34 and all(w > p for w, p in zip(widths[0][1], plain, strict=True))
    noise = calibrate(session.plan, "model", private._hist_sens(params), "", 3)
    for w, c in zip(widths[0][1], ("grad", "hess", "count"), strict=True):
        assert 2 ** (w - 1) > 1000 * {"grad": 4096, "hess": 1024, "count": 1}[c] + 40 * noise[c].sigma


# ------------------------------------------------------------------------------------ noise
def skellam_gof(x: np.ndarray, variance: float, n_bins: int = 20) -> float:
    """p-value of a chi-square goodness-of-fit test of integer samples against Skellam(v/2, v/2)."""
    dist = stats.skellam(variance / 2, variance / 2)
    inner = np.unique(dist.ppf(np.linspace(0, 1, n_bins + 1)[1:-1]))  # integer bin edges
    cdf = np.concatenate([[0.0], dist.cdf(inner), [1.0]])
    expected = np.diff(cdf) * x.size
    observed = np.bincount(np.searchsorted(inner, x, side="left"), minlength=inner.size + 1)
    return float(stats.chisquare(observed, expected).pvalue)


def test_each_share_and_the_summed_noise_follow_their_skellam_distributions():
    plan = ReleasePlan(epsilon=2.0, releases={"model": 4})
    params = {"features": ["a"] * 6, "precision": 12, "channels": 3}
    outs = calibrate(plan, "model", private._hist_sens(params), "gbdt.histograms", 0)
    rng = np.random.default_rng(20261201)
    rel = Release(task="gbdt.histograms", group="model", plan=plan, outputs=outs, n_shares=3, rng=rng)
    n = 4000
    total = sum(private.noise_wire(np.zeros(n * 3, dtype=np.int64), 3, rel).reshape(n, 3) for _ in range(3))
    for c, name in enumerate(("grad", "hess", "count")):
        v = outs[name].variance
        x = total[:, c]
        # variance: chi-square interval of the sample variance at the 0.1 % level
        lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
        assert lo < x.var(ddof=1) / v < hi, name
        # shape: chi-square goodness of fit against the Skellam(v/2, v/2) distribution
        assert skellam_gof(x, v) > 0.001, name
    # per-channel scale follows the calibration: sigma ~ l2 / sqrt(2 rho_channel), rho split 0.5 / 0.3 / 0.2
    # (the Skellam's 1/v^2 terms add a little to the small-variance count channel)
    ratio = outs["grad"].sigma / outs["count"].sigma
    assert ratio == pytest.approx(4096 * math.sqrt(0.2 / 0.5), rel=1e-2)


def _root_request(feats: list[str], cuts: list, training_id: str) -> dict:
    """A valid first-level boosting request (every setting, empty transcript), without DP."""
    from ehr_fed.models.gbdt.predictor import Tree
    from ehr_fed.models.gbdt.release import LevelRequest
    from ehr_fed.models.gbdt.transcript import routing_payload

    return {"features": feats, "cuts": cuts, "cut_source": {"kind": "public"}, "max_bin": 16, "precision": 12, "base_score": 0.3, "channels": 3,
            "min_count": 10, "training_id": training_id, "reg_lambda": 1.0, "gamma": 0.0,
            "min_child_weight": 1.0, "learning_rate": 0.3, "max_depth": 1, "n_estimators": 1,
            "sibling": "derive", "transcript": [[]], "trees": [], "tree": routing_payload(Tree()),
            **LevelRequest((0,), (0,), ()).to_params()}


def test_the_federation_sum_carries_exactly_the_calibrated_noise(tables, monkeypatch):
    """Through the real sites and transport: the summed histogram the decrypting site's release step gets,
    private minus exact, is the sum of the sites' noise shares."""
    import dataclasses

    from ehr_fed.federation import tasks as fedtasks
    from ehr_fed.models.gbdt.tasks import release_splits

    seeds = itertools.count(7)
    monkeypatch.setattr(dpmod.secrets, "randbits", lambda k: next(seeds))
    summed = []

    def capture(arrays, params, ctx):  # the real release step, recording the sum it is given
        summed.append(np.asarray(arrays["hist"]).copy())
        return release_splits(arrays, params, ctx)

    task = fedtasks.get_task("gbdt.histograms")
    monkeypatch.setitem(fedtasks._REGISTRY, "gbdt.histograms", dataclasses.replace(task, post_decrypt=capture))
    feats = list(BOUNDS)
    # cuts given by the test: taken for the exact reference sum only by sites without a small-cell rule
    with _fed(tables, policy=PrivacyPolicy(min_cell_count=1)) as fed:
        from ehr_fed.models.gbdt.binning import BinMapper

        cuts = [np.linspace(1, 50, 15)] * len(feats)
        mapper = BinMapper(cuts, 16)
        mask = bin_mask(mapper.n_cuts(), mapper.n_bins)
        n_valid = int(mask.sum())
        res = fed.secure_sum("gbdt.histograms", _root_request(feats, cuts, "exact"), {
            "hist": {"widths": [[n_valid, field_widths(9000, 12, 3)]], "max_terms": 3}})
        assert sorted(res) == ["link", "splits"]  # the histogram itself never reaches the coordinator
        exact = summed.pop()
        noise, plan = [], None
        for i in range(12):
            plan = ReleasePlan(epsilon=4.0, releases={"model": 12}, plan_id=f"p{i}").to_params()
            params = {**_root_request(feats, cuts, f"t{i}"), "dp": plan, "dp_index": i,
                      "dp_channel_weights": dict(private.DEFAULT_CHANNEL_WEIGHTS[3]), "dp_max_leaf": 1.0,
                      "dp_min_hessian_sigmas": 2.0}
            outs = calibrate(ReleasePlan.model_validate(plan), "model", private._hist_sens(params), "", i)
            widths = [dpmod.field_width(9000 * u + dpmod.noise_room(outs[c]))
                      for c, u in (("grad", 4096), ("hess", 1024), ("count", 1))]
            fed.secure_sum("gbdt.histograms", params, {"hist": {"widths": [[n_valid, widths]], "max_terms": 3}})
            noise.append((summed.pop() - exact).reshape(-1, 3))
    noise = np.concatenate(noise)
    for c, name in enumerate(("grad", "hess", "count")):
        v = outs[name].variance
        x = noise[:, c].astype(float)
        lo, hi = stats.chi2.ppf([0.0005, 0.9995], x.size - 1) / (x.size - 1)
        assert lo < x.var(ddof=1) / v < hi, name
        assert skellam_gof(x, v) > 0.001, name


def test_noisy_histograms_are_made_consistent_across_features():
    rng = np.random.default_rng(3)
    mask = bin_mask(np.array([3, 5, 1]), 7)
    hist = np.zeros((2, 3, 7, 3), dtype=np.int64)
    hist[:, mask] = rng.integers(-50, 200, size=(2, int(mask.sum()), 3))
    hist[1][mask, 1] -= 400  # a node whose noisy Hessian came out negative
    out = private.make_consistent(hist, mask, 3)
    sums = out.sum(axis=2)
    assert (sums == sums[:, :1]).all()  # every feature adds up to the node's one total
    assert (sums[1, :, 1] == 0).all() and (sums[:, :, 2] >= 0).all()  # Hessian / count totals clamped at 0
    assert (out[:, ~mask] == 0).all()  # padding bins stay empty
    # the total is the mean of the features' noisy sums
    assert sums[0, 0, 0] == np.rint((hist[0, :, :, 0] * mask).sum(axis=1).mean())


# ------------------------------------------------------------------------------------ the estimator
def test_dp_off_is_bit_identical(tables):
    with _fed(tables) as fed:
        base = FederatedGradientBoostingClassifier(**SMALL).fit(fed)
        off = FederatedGradientBoostingClassifier(**SMALL, dp={"epsilon": float("inf")}).fit(fed)
    assert base.to_xgboost_json() == off.to_xgboost_json()
    assert not hasattr(base, "dp_") and not hasattr(off, "dp_")


def test_private_fit_is_useful_at_epsilon_8_and_spends_at_most_its_budget(tables, test_rows):
    with _fed(tables) as fed:
        base = FederatedGradientBoostingClassifier(**SMALL).fit(fed)
    with _fed(tables) as fed:  # a session pins its boosting bin cuts: the private cuts differ, a new session
        model = FederatedGradientBoostingClassifier(**SMALL, dp={"epsilon": 8.0, "feature_bounds": BOUNDS}).fit(fed)
    auc = roc_auc_score(test_rows["label"], model.predict_proba(test_rows)[:, 1])
    auc0 = roc_auc_score(test_rows["label"], base.predict_proba(test_rows)[:, 1])
    assert auc0 > 0.7 and auc > auc0 - 0.04, (auc, auc0)
    rec = model.dp_
    assert 0 < rec["epsilon"] <= 8.0 and rec["delta"] == 1e-6 and rec["epsilon_planned"] == 8.0
    assert rec["levels_planned"] == 8 * 3 and 1 <= rec["levels_released"] <= 24
    assert rec["releases"] == 2 + rec["levels_released"]
    assert set(rec["noise"]) == {"gbdt.init", "gbdt.dp_bin_counts", "gbdt.histograms"}
    assert abs(model.n_samples_ - 9000) < 50  # a noisy count
    # the cuts were taken from noisy counts on the public grid: grid edges only
    grid = np.linspace(0, 110, 65)
    assert np.isin(model.bin_edges_[0].astype(np.float64), grid).all()
    # leaves are clamped
    assert max(abs(v) for t in model.trees_ for v in t.leaf_value) <= 0.3 * 1.0 + 1e-7


def test_federation_dp_is_the_default_and_bin_edges_given_skip_the_cut_release(tables):
    edges = [np.array([30.0, 60.0, 80.0]), np.array([0.5]), np.array([2.0, 5.0]), np.array([1.5, 4.5]),
             np.array([1.0, 1.5]), np.array([0.5])]
    policy = PrivacyPolicy(dp={"epsilon": 3.0})
    with _fed(tables, policy=policy) as fed:
        model = FederatedGradientBoostingClassifier(**SMALL, bin_edges=edges).fit(fed)
        labels = [h["label"] for h in fed.history]
    assert "secure_sum gbdt.dp_bin_counts" not in labels and model.dp_["epsilon"] <= 3.0
    assert set(model.dp_["noise"]) == {"gbdt.init", "gbdt.histograms"}


def test_budget_refusal_comes_before_anything_is_computed(tables, tmp_path):
    policy = PrivacyPolicy(dp={"epsilon": 1.0})
    with _fed(tables, policy=policy, audit_dir=tmp_path) as fed:
        with pytest.raises((FederationError, DisclosureError), match=r"remaining budget: epsilon 1 of 1"):
            FederatedGradientBoostingClassifier(**SMALL, dp={"epsilon": 2.0, "feature_bounds": BOUNDS}).fit(fed)
        assert not any(h["label"].startswith("secure_sum") for h in fed.history)
    for site in tables:  # no release was charged, and no site computed a private sum
        path = ledger_path(tmp_path / f"{site}.audit.jsonl")
        assert not path.exists() or not json.loads(path.read_text())["studies"].get("", {}).get("charges")
        audit = (tmp_path / f"{site}.audit.jsonl").read_text()
        assert "dp_charge" not in audit


def test_the_site_audit_log_records_every_private_level(tables, tmp_path):
    with _fed(tables, audit_dir=tmp_path) as fed:
        model = FederatedGradientBoostingClassifier(**{**SMALL, "n_estimators": 2},
                                                    dp={"epsilon": 4.0, "feature_bounds": BOUNDS}).fit(fed)
    lines = [json.loads(x) for x in (tmp_path / "s0.audit.jsonl").read_text().splitlines()]
    charges = [x for x in lines if x.get("action") == "dp_charge"]
    assert [c["task"] for c in charges[:2]] == ["gbdt.init", "gbdt.dp_bin_counts"]
    assert len(charges) == model.dp_["releases"]
    assert charges[-1]["dp"]["epsilon_spent"] == pytest.approx(model.dp_["epsilon"], rel=1e-6)
    assert set(charges[-1]["dp"]["noise_sigma"]) == {"grad", "hess", "count"}


def test_grid_counts_task_is_refused_without_noise(tables):
    with _fed(tables) as fed, pytest.raises((FederationError, DisclosureError), match="only with differential"):
        fed.secure_sum("gbdt.dp_bin_counts", {"features": ["age"], "grid": [np.linspace(0, 110, 9)]},
                       {"counts": {"widths": [[8, [20]]], "max_terms": 3}})


def test_model_file_carries_epsilon_and_delta_and_loads_back(tables, test_rows, tmp_path):
    with _fed(tables) as fed:
        model = FederatedGradientBoostingClassifier(**{**SMALL, "n_estimators": 3},
                                                    dp={"epsilon": 2.0, "delta": 1e-7,
                                                        "feature_bounds": BOUNDS}).fit(fed)
    path = model.save(tmp_path / "gbdt.json")
    doc = json.loads(path.read_text())
    assert doc["dp"]["epsilon"] == pytest.approx(model.dp_["epsilon"]) and doc["dp"]["delta"] == 1e-7
    assert doc["params"]["dp"]["epsilon"] == 2.0
    again = load_model(path)
    assert again.dp_ == doc["dp"]
    np.testing.assert_array_equal(again.predict_proba(test_rows), model.predict_proba(test_rows))


def test_bad_dp_options_are_clear_errors(tables):
    with _fed(tables) as fed:
        with pytest.raises(ValueError, match=r"level_weights must be 3 positive numbers"):
            FederatedGradientBoostingClassifier(**SMALL, dp={"epsilon": 1.0, "feature_bounds": BOUNDS,
                                                             "level_weights": [1, 2]}).fit(fed)
        with pytest.raises(ValueError, match=r"cut_grid must be an integer in 2..4096"):
            FederatedGradientBoostingClassifier(**SMALL, dp={"epsilon": 1.0, "cut_grid": 1}).fit(fed)


def test_private_boosting_runs_over_paillier_encrypted_masked_sums(tables, test_rows):
    """The noise-widened fields pack and decrypt exactly: encrypted and plaintext private fits agree in kind."""
    small = {k: v.iloc[:800] for k, v in tables.items()}
    params = dict(SMALL, n_estimators=2, max_depth=2, max_bin=8)
    dp = {"epsilon": 8.0, "feature_bounds": BOUNDS}
    with Federation.in_process(small, encrypted=True, key_bits=1024, allow_insecure=True) as fed:
        enc = FederatedGradientBoostingClassifier(**{**params, "encrypted": True}, dp=dp).fit(fed)
    with _fed(small) as fed:
        plain = FederatedGradientBoostingClassifier(**params, dp=dp).fit(fed)
    assert enc.dp_["noise"]["gbdt.init"] == plain.dp_["noise"]["gbdt.init"]
    assert enc.dp_["noise"]["gbdt.histograms"]["0"] == plain.dp_["noise"]["gbdt.histograms"]["0"]
    assert enc.histogram_stats_["bits"] > 0 and abs(enc.n_samples_ - 2400) < 60
    auc = roc_auc_score(test_rows["label"], enc.predict_proba(test_rows)[:, 1])
    assert auc > 0.6, auc
