"""Private federated logistic regression: DP off is bit-identical, DP on records what it spent."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ehr_fed.cli.main import main
from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.models import FederatedLogisticRegression
from ehr_fed.models.logreg_private import read_dp_record

from .data import BOUNDS
from .data import site_table as _site_table

FEATURES = ["age", "sex_female", "los_days", "charlson", "lab_creatinine", "cond_cancer"]
#: the outcome model: intercept, age, sex, los, Charlson, creatinine, cancer (logit scale)
COEF = (-4.0, 0.03, 0.4, 0.08, 0.15, 0.8, 0.5)


def site_table(site: str, n: int, seed: int) -> pd.DataFrame:
    return _site_table(site, n, seed, COEF)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {f"s{i}": site_table(f"s{i}", 3000, 70 + i) for i in range(3)}


def _fed(tables, **kw):
    return Federation.in_process(tables, encrypted=False, **kw)


def test_dp_off_is_bit_identical(tables):
    with _fed(tables) as fed:
        base = FederatedLogisticRegression(encrypted=False).fit(fed)
        off = FederatedLogisticRegression(encrypted=False, dp={"epsilon": float("inf")}).fit(fed)
    assert np.array_equal(base.beta_, off.beta_) and np.array_equal(base.information_, off.information_)
    assert base.history_ == off.history_ and not hasattr(base, "dp_") and not hasattr(off, "dp_")


def test_private_fit_spends_at_most_its_epsilon_and_stays_useful(tables, tmp_path):
    pooled = pd.concat(tables.values(), ignore_index=True)
    with _fed(tables) as fed:
        base = FederatedLogisticRegression(encrypted=False).fit(fed)
        model = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 4.0, "feature_bounds": BOUNDS}).fit(fed)
    rec = model.dp_
    assert 3.8 < rec["epsilon"] <= 4.0 and rec["delta"] == 1e-6 and rec["releases"] == 2 + 5
    assert rec["clip_norm"] == pytest.approx(1.5 * np.sqrt(len(model.terms_) + 1))
    assert set(rec["noise"]) == {"models.row_count", "models.preprocess_sums", "logreg.newton"}
    assert abs(model.n_samples_ - 9000) < 100  # a noisy count
    auc = roc_auc_score(pooled["label"], model.predict_proba(pooled)[:, 1])
    auc0 = roc_auc_score(pooled["label"], base.predict_proba(pooled)[:, 1])
    assert auc > auc0 - 0.02
    assert not np.array_equal(model.beta_, base.beta_)
    # the model file carries epsilon and delta, and loads back
    path = tmp_path / "m.json"
    model.save(path)
    doc = json.loads(path.read_text())
    assert doc["dp"]["epsilon"] == pytest.approx(rec["epsilon"]) and doc["dp"]["delta"] == 1e-6
    assert read_dp_record(path)["quantisation"]["gradient_scale"] > 0
    from ehr_fed import load_model

    again = load_model(path)
    np.testing.assert_array_equal(again.predict_proba(pooled), model.predict_proba(pooled))


def test_site_budget_refuses_a_second_private_fit(tables):
    policy = PrivacyPolicy(dp={"epsilon": 3.0})
    with _fed(tables, policy=policy) as fed:
        m = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 2.5, "feature_bounds": BOUNDS}).fit(fed)
        assert m.dp_["epsilon"] <= 2.5
        with pytest.raises(Exception, match=r"refuses 'models.row_count'.*remaining budget: epsilon 0\.\d+ of 3"):
            FederatedLogisticRegression(encrypted=False, dp={"epsilon": 2.5, "feature_bounds": BOUNDS}).fit(fed)
        with pytest.raises(Exception, match="requires differential privacy"):
            fed.dp = None
            fed.policy = PrivacyPolicy()  # the coordinator forgets dp: the sites still require it
            FederatedLogisticRegression(encrypted=False).fit(fed)


def test_unknown_feature_range_is_a_clear_error(tables):
    t = {k: v.assign(mystery=1.0) for k, v in tables.items()}
    with _fed(t) as fed, pytest.raises(ValueError, match=r"no clipping range is known for features \['age', 'mystery'\]"):
        FederatedLogisticRegression(encrypted=False, features=["age", "mystery"], dp=2.0).fit(fed)


STUDY = __import__("pathlib").Path(__file__).resolve().parents[2] / "mappings" / "studies" / "readmission_30d.yaml"


@pytest.fixture(scope="module")
def federation_yaml(tables, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpfed")
    names = [f["name"] for f in yaml.safe_load(STUDY.read_text())["features"]]
    sites = []
    for sid, t in tables.items():  # the study's columns: ours where we have them, the rest never observed
        full = t[["site_id", "person_key", "index_time", "label"]].copy()
        for n in names:
            full[n] = t[n] if n in t.columns else np.nan
        full.to_parquet(root / f"{sid}.parquet", index=False)
        sites.append({"id": sid, "table": f"{sid}.parquet"})
    cfg = {"study": str(STUDY), "sites": sites, "transport": {"kind": "in_process"}, "keys": {"n_length": 2048},
           "privacy": {"min_cell_count": 10, "min_sites": 3, "max_params_fraction": 0.3}}
    path = root / "federation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_epsilon_trains_a_private_model(federation_yaml, tmp_path, capsys):
    out = tmp_path / "model.json"
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(out), "--plaintext",
               "--features", "age,sex_female,los_days,cond_cancer", "--epsilon", "3", "--delta", "1e-7"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    spent = re.search(r"differential privacy: epsilon ([0-9.]+), delta 1e-07 spent", cap.out)
    assert spent and 2.5 < float(spent.group(1)) <= 3.0
    assert json.loads(out.read_text())["dp"]["delta"] == 1e-7
    rc = main(["train", "logreg", "--federation", str(federation_yaml), "--out", str(tmp_path / "m2.json"),
               "--plaintext", "--epsilon", "-1"])
    assert rc == 1 and "dp.epsilon: Input should be greater than 0" in capsys.readouterr().err


def test_private_fit_runs_over_paillier_encrypted_masked_sums(tables):
    small = {k: v.iloc[:1500] for k, v in tables.items()}
    with Federation.in_process(small, encrypted=True, key_bits=1024, allow_insecure=True) as fed:
        enc = FederatedLogisticRegression(dp={"epsilon": 2.0, "feature_bounds": BOUNDS}).fit(fed)
    with _fed(small) as fed:
        plain = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 2.0, "feature_bounds": BOUNDS}).fit(fed)
    # same plan, same noise scale; independent noise, so compare what the models are for: discrimination
    assert enc.dp_["epsilon"] == pytest.approx(plain.dp_["epsilon"])
    # the preprocessing releases have fixed shapes: the same noise exactly
    for task in ("models.row_count", "models.preprocess_sums"):
        assert enc.dp_["noise"][task] == plain.dp_["noise"][task]
    # the design follows from noisy preprocessing counts, so the two fits may keep a different number of
    # terms; the Newton noise is then that of its own design (gradient l2 = g2 + sqrt(d)), the same otherwise
    rounds = {name: m.dp_["noise"]["logreg.newton"] for name, m in (("enc", enc), ("plain", plain))}
    d = {name: len(m.beta_) for name, m in (("enc", enc), ("plain", plain))}
    for a, b in zip(rounds["enc"], rounds["plain"], strict=False):
        assert a["loglik"] == b["loglik"]
        assert a["gradient"]["l2"] - b["gradient"]["l2"] == pytest.approx(np.sqrt(d["enc"]) - np.sqrt(d["plain"]))
        if d["enc"] == d["plain"]:
            assert a == b
    pooled = pd.concat(small.values(), ignore_index=True)
    auc = {name: roc_auc_score(pooled["label"], m.predict_proba(pooled)[:, 1])
           for name, m in (("enc", enc), ("plain", plain))}
    assert auc["enc"] > 0.65 and abs(auc["enc"] - auc["plain"]) < 0.06, auc


def test_a_hidden_noisy_positive_count_does_not_break_the_private_fit():
    """At a small epsilon the noisy positive count can fall below min_cell_count and come back hidden (NaN)."""
    from ehr_fed.models.logreg_dp import decode_preprocess
    from ehr_fed.privacy.dp import NoisedOutput

    d = 2
    raw = {"n": np.array([1000.0]), "n_pos": np.array([np.nan]), "n_obs": np.array([1000.0, 990.0]),
           "sum": np.array([10.0, -20.0]), "sumsq": np.array([300.0, 400.0])}
    noise = {"n_obs": NoisedOutput("n_obs", 4.0, 0.1, 0.0, 1.0, 1.0)}
    out = decode_preprocess(raw, {"dp_clip": {"feature_bounds": [[0, 10], [0, 5]], "quantum": 1024}}, noise)
    assert out["n_pos"][0] == 1.0 and all(np.isfinite(v).all() for v in out.values()) and out["sum"].size == d


def test_information_packing_keeps_the_row_bound_and_halves_off_diagonal_noise_variance():
    from ehr_fed.models.logreg_dp import pack_information, unpack_information
    from ehr_fed.models.logreg_newton import pack_upper, triangle_size

    rng = np.random.default_rng(5)
    d, c = 9, 6.0
    for _ in range(200):  # one clipped row's term p (1 - p) z z': L2 of the released vector <= C^2 / 4
        z = rng.normal(size=d) * rng.exponential(size=d)
        z *= min(1.0, c / np.linalg.norm(z))
        p = rng.uniform(0.01, 0.99)
        term = p * (1 - p) * np.outer(z, z)
        assert np.linalg.norm(pack_information(term)) <= c * c / 4 * (1 + 1e-12)
        assert np.linalg.norm(pack_information(term)) == pytest.approx(np.linalg.norm(term))
        assert np.allclose(unpack_information(pack_information(term), d), term)
    e = np.zeros(d)
    e[0] = c  # the worst case of the plain triangle reaches the same bound: no sensitivity is lost
    assert np.linalg.norm(pack_upper(np.outer(e, e) / 4)) == pytest.approx(c * c / 4)
    # the same noise on every released entry: off-diagonal entries of the unpacked matrix keep 1/sqrt(2)
    noise = np.stack([unpack_information(rng.normal(size=triangle_size(d)), d) for _ in range(4000)])
    iu = np.triu_indices(d, 1)
    assert noise[:, iu[0], iu[1]].std() == pytest.approx(1 / np.sqrt(2), rel=0.03)
    assert noise[:, np.arange(d), np.arange(d)].std() == pytest.approx(1.0, rel=0.03)


def test_setup_releases_split_their_budget_one_tenth_row_count_and_sites_charge_what_the_record_says(
        tables, tmp_path):
    from ehr_fed.models.logreg_private import PREPROCESS_WEIGHTS
    from ehr_fed.privacy.dp import DEFAULT_SPLIT, rho_for_epsilon

    policy = PrivacyPolicy(dp={"epsilon": 4.0})
    with _fed(tables, policy=policy, audit_dir=tmp_path) as fed:
        m = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 2.0, "feature_bounds": BOUNDS}).fit(fed)
    assert PREPROCESS_WEIGHTS == (0.1, 0.9)
    audit = [json.loads(line) for line in (tmp_path / "s0.audit.jsonl").read_text().splitlines()]
    charged = {}
    for e in audit:
        if e.get("action") == "dp_charge":
            charged.setdefault(e["task"], []).append(e["dp"]["rho"] + e["dp"].get("xi", 0.0))
    pre = rho_for_epsilon(2.0, 1e-6) * DEFAULT_SPLIT["preprocess"] / (DEFAULT_SPLIT["preprocess"]
                                                                      + DEFAULT_SPLIT["model"])
    (row,), (sums,) = charged["models.row_count"], charged["models.preprocess_sums"]
    # each release spends (up to the Skellam calibration's rounding) its share of the preprocess group
    assert row == pytest.approx(0.1 * pre, rel=1e-3) and sums == pytest.approx(0.9 * pre, rel=1e-3)
    assert len(charged["logreg.newton"]) == m.dp_["rounds"]
    # the recorded noise is the one of that share (Skellam of variance ~ l2^2 / (2 rho) for one count)
    assert m.dp_["noise"]["models.row_count"]["n"]["sigma"] == pytest.approx((2 * 0.1 * pre) ** -0.5, rel=0.02)
    assert m.dp_["epsilon"] <= 2.0


def test_the_first_newton_round_gives_the_gradient_80_percent_and_the_later_rounds_release_no_information(
        tables):
    from ehr_fed.models.logreg_private import DEFAULT_INFORMATION_ROUNDS, DEFAULT_WEIGHT_GRADIENT

    assert DEFAULT_WEIGHT_GRADIENT == 0.8 and DEFAULT_INFORMATION_ROUNDS == 1
    sent, replies = [], []
    with _fed(tables) as fed:
        real = fed.secure_sum

        def spy(task, params, layout):
            out = real(task, params, layout)
            if task == "logreg.newton":
                sent.append(params)
                replies.append(sorted(out))
            return out

        fed.secure_sum = spy
        m = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 2.0, "feature_bounds": BOUNDS,
                                                             "rounds": 4}).fit(fed)
    rounds = m.dp_["noise"]["logreg.newton"]
    assert len(rounds) == 4
    rho = [{k: o["l2"] ** 2 / (2 * o["sigma"] ** 2) for k, o in r.items()} for r in rounds]
    # rho of an output ~ l2^2 / (2 variance): round 1 splits 0.8 / 0.2, the others put it all on the gradient
    assert rho[0]["gradient"] / rho[0]["hessian"] == pytest.approx(0.8 / 0.2, rel=0.01)
    assert all(set(r) == {"gradient", "loglik"} for r in rho[1:])
    assert replies == [["gradient", "hessian", "loglik"]] + [["gradient", "loglik"]] * 3  # released, not only planned
    # every round has the same budget (the gradient of a later round gets its whole share)
    totals = [sum(r.values()) for r in rho]
    assert totals == pytest.approx([totals[0]] * 4, rel=0.02)
    assert rho[1]["gradient"] == pytest.approx(rho[0]["gradient"] / 0.8, rel=0.02)
    assert len(sent) == 4 and all(p["rule"]["hessian_window"] == 4 for p in sent)
    assert all(p["dp_clip"]["weight_gradient"] == 0.8 and p["dp_clip"]["information_rounds"] == 1 for p in sent)
    assert m.dp_["average_last"] == 2


class _NoNoise:
    """A release whose noise shares are 0, to see the sums a site's clipping and weighting bound."""

    def noise(self, name, shape):
        return np.zeros(shape, dtype=np.int64)


def test_weighted_events_keep_every_newton_output_within_the_one_row_sensitivity():
    from ehr_fed.models.logreg_dp import _newton_sens, newton_clip, private_newton
    from ehr_fed.privacy.budget import cap_events, patient_weights

    rng = np.random.default_rng(3)
    d = 5
    clip = newton_clip(d, None, 0.8)
    beta = rng.normal(size=d)
    rest = pd.DataFrame({"person_key": [f"p{i // 2}" for i in range(60)],
                         "index_time": pd.date_range("2021-01-01", periods=60), "label": rng.integers(0, 2, 60)})
    Zrest = rng.normal(size=(60, d))
    for trial in range(20):
        m = int(rng.integers(2, 9))  # one patient with m events, rows far beyond the clip norm, one label
        big = pd.DataFrame({"person_key": "q", "index_time": pd.date_range("2022-01-01", periods=m),
                            "label": int(trial % 2)})
        Zbig = np.tile(rng.normal(size=d) * 50.0, (m, 1)) + rng.normal(size=(m, d))
        full = pd.concat([rest, big], ignore_index=True)
        kept = cap_events(full, 3)  # what a site keeps for the Newton rounds at weighted_events 3
        Z = np.vstack([Zrest, Zbig])[kept.index.to_numpy()]
        outs = []
        for table, design in ((kept, Z), (kept[kept["person_key"] != "q"], Z[(kept["person_key"] != "q").to_numpy()])):
            w = patient_weights(table, 1)
            params = {"dp_clip": clip, "beta": list(beta), "dp_index": 0}
            outs.append(private_newton(design, table["label"].to_numpy(float), beta, params, _NoNoise(), w))
        sens = {s.name: s for s in _newton_sens(params)}
        for name in ("gradient", "hessian", "loglik"):
            diff = outs[0][name].astype(float) - outs[1][name].astype(float)
            assert np.linalg.norm(diff) <= sens[name].l2 and np.abs(diff).sum() <= sens[name].l1, (trial, name)
    # unweighted, the same patient's 3 kept rows would exceed the one-row bound: the weights are what holds it
    w1 = np.ones(len(kept))
    a = private_newton(Z, kept["label"].to_numpy(float), beta, params, _NoNoise(), w1)["gradient"]
    keep = (kept["person_key"] != "q").to_numpy()
    b = private_newton(Z[keep], kept["label"].to_numpy(float)[keep], beta, params, _NoNoise(), w1[keep])["gradient"]
    assert np.linalg.norm(a.astype(float) - b) > sens["gradient"].l2
    with pytest.raises(ValueError, match="weights"):
        private_newton(Z, kept["label"].to_numpy(float), beta, params, _NoNoise(), np.full(len(kept), 2.0))


def test_newton_rounds_use_up_to_three_weighted_events_per_patient_and_the_setup_one(monkeypatch):
    import ehr_fed.models.logreg_tasks as tasks
    from ehr_fed.models.logreg_private import DEFAULT_WEIGHTED_EVENTS

    assert DEFAULT_WEIGHTED_EVENTS == 3
    tables = {}
    for i in range(3):  # 1000 patients per site, 4 index events each
        t = site_table(f"s{i}", 4000, 90 + i)
        t["person_key"] = [f"s{i}-{j // 4}" for j in range(4000)]
        t["index_time"] = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.arange(4000) % 4 * 40, unit="D")
        tables[f"s{i}"] = t
    seen = []
    real = tasks.private_newton

    def spy(Z, y, beta, params, rel, weights=None):
        seen.append((params["dp"].get("weighted_events"), Z.shape[0], np.asarray(weights).copy()))
        return real(Z, y, beta, params, rel, weights)

    monkeypatch.setattr(tasks, "private_newton", spy)
    with _fed(tables) as fed:
        m = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 4.0, "feature_bounds": BOUNDS}).fit(fed)
        one = FederatedLogisticRegression(encrypted=False, dp={"epsilon": 4.0, "feature_bounds": BOUNDS,
                                                               "weighted_events": 1}).fit(fed)
    assert m.dp_["weighted_events"] == 3 and m.dp_["events_per_patient"] == 1
    assert one.dp_["weighted_events"] == 1
    assert abs(m.n_samples_ - 3000) < 100  # the row count and the preprocessing sums: one event per patient
    rounds = m.dp_["rounds"]
    assert len(seen) == 2 * 3 * rounds
    for k, rows, w in seen[:3 * rounds]:  # every site, every round: 3 of each patient's 4 events, weight 1/3
        assert k == 3 and rows == 3000 and np.allclose(w, 1 / 3)
    for k, rows, w in seen[3 * rounds:]:
        assert k == 1 and rows == 1000 and np.allclose(w, 1.0)
    # the sensitivity recorded is the one-row bound in both fits (each for its own number of terms: the noisy
    # preprocessing may leave a different term out of each fit), so the weights do not raise the noise
    for fit in (m, one):
        d, rec = len(fit.beta_), fit.dp_
        bound = rec["quantisation"]["gradient_scale"] * rec["clip_norm"] + math.sqrt(d)
        assert all(r["gradient"]["l2"] == pytest.approx(bound, rel=1e-12) for r in rec["noise"]["logreg.newton"])
    if len(m.beta_) == len(one.beta_):
        assert m.dp_["noise"]["logreg.newton"][0]["gradient"] == one.dp_["noise"]["logreg.newton"][0]["gradient"]
