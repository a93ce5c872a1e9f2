"""Private federated evaluation: noisy histograms inside the secure sum, charged to every site's budget;
results without differential privacy unchanged, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ehr_fed.evaluation import evaluate
from ehr_fed.evaluation.metrics import local_histograms
from ehr_fed.evaluation.private import DEFAULT_DP_BINS, PrivateEvaluation, resolve
from ehr_fed.federation import Federation
from ehr_fed.privacy.dp import DPConfig

from .conftest import FEATURES, POLICY, pooled


def _fed(tables, logreg, tmp_path, **policy):
    """A federation with the fixture model approved (it was trained under other site keys), audit logs on."""
    from ehr_fed.evaluation.provenance import approved_digest

    pol = {**POLICY, "approved_models": [approved_digest(logreg)], **policy}
    return Federation.in_process(tables, policy=pol, encrypted=False, audit_dir=tmp_path)


def _charges(tmp_path, sid: str) -> list[dict]:
    path = tmp_path / f"{sid}.audit.dp_budget.json"
    return json.loads(path.read_text())["studies"][""]["charges"] if path.exists() else []


def test_without_dp_the_evaluation_is_unchanged_bit_for_bit(plain_fed, tables, logreg, result):
    """dp=None (a federation without dp) and dp=False give the exact evaluation: the pooled histograms equal
    those of the pooled scores, exactly, and no privacy record."""
    off = evaluate(plain_fed, logreg, dp=False)
    for res in (result, off):
        assert res.dp is None and res.n_bins == 10_000 and res.per_site is not None
    np.testing.assert_array_equal(off.pos, result.pos)
    np.testing.assert_array_equal(off.neg, result.neg)
    assert off.overall == result.overall and off.calibration_curve == result.calibration_curve
    assert off.lace == result.lace
    pd.testing.assert_frame_equal(off.per_site, result.per_site)
    data = pooled(tables)
    p = logreg.predict_proba(data[FEATURES])[:, 1]
    h = local_histograms(p, data["label"].to_numpy(dtype=float), 10_000, 1)
    merged = result.pos.sum(), result.neg.sum()
    assert merged == (h["pos"].sum(), h["neg"].sum())
    assert result.overall["n"] == len(data) and result.overall["positives"] == int(data["label"].sum())


def test_a_private_evaluation_is_charged_to_every_site_and_reports_its_epsilon(tables, logreg, tmp_path):
    with _fed(tables, logreg, tmp_path, dp={"epsilon": 4.0}) as fed:
        res = evaluate(fed, logreg, dp={"epsilon": 1.0})
    assert res.per_site is None and res.n_bins == DEFAULT_DP_BINS
    assert res.dp["epsilon_planned"] == 1.0 and 0.9 < res.dp["epsilon"] <= 1.0 and res.dp["delta"] == 1e-6
    assert res.dp["releases"] == 2 and set(res.dp["noise"]) == {"evaluation.score_histograms",
                                                                 "evaluation.lace_histograms"}
    assert res.to_dict()["dp"]["epsilon"] == res.dp["epsilon"]
    for sid in fed.site_ids:
        charges = _charges(tmp_path, sid)
        assert [c["task"] for c in charges] == ["evaluation.score_histograms", "evaluation.lace_histograms"]
        assert all(c["group"] == "evaluation" for c in charges)
        # what the site charged is what the result says was spent (the same calibration, computed at the site)
        from ehr_fed.privacy.dp import epsilon_spent

        assert epsilon_spent([(c["rho"], c["xi"]) for c in charges], 1e-6) == pytest.approx(res.dp["epsilon"])
        lines = [json.loads(line) for line in (tmp_path / f"{sid}.audit.jsonl").read_text().splitlines()]
        dp_lines = [e for e in lines if e.get("action") == "dp_charge"]
        assert len(dp_lines) == 2 and dp_lines[-1]["dp"]["epsilon_spent"] == pytest.approx(res.dp["epsilon"])


def test_the_released_histograms_carry_noise_of_the_declared_size(tables, logreg, tmp_path):
    """The pooled noisy counts differ from the exact ones by about the summed noise's standard deviation."""
    exact_n = len(pooled(tables))
    with _fed(tables, logreg, tmp_path) as fed:
        runs = [evaluate(fed, logreg, dp={"epsilon": 1.0}, lace=False, n_bins=10) for _ in range(3)]
    sigma = PrivateEvaluation(fed, DPConfig(epsilon=1.0), ["evaluation.score_histograms"]).noise(
        "evaluation.score_histograms")["pos"].sigma
    totals = [r.overall["n"] for r in runs]
    assert len(set(totals)) > 1, "three private releases gave the same noisy total: no noise was added"
    # 20 noisy bins (pos and neg), negatives clipped: within 6 sd of the sum's noise
    assert all(abs(t - exact_n) < 6 * sigma * np.sqrt(20) + 1 for t in totals)
    assert all(0.5 < r.overall["auc"] < 1.0 for r in runs)


def test_a_site_requiring_dp_refuses_the_exact_evaluation_and_answers_the_private_one(tables, logreg, tmp_path):
    from ehr_fed.federation.coordinator import FederationError

    with _fed(tables, logreg, tmp_path, dp={"epsilon": 3.0}) as fed:
        with pytest.raises(FederationError, match=r"\[dp_required\]"):
            evaluate(fed, logreg, dp=False, lace=False)
        assert _charges(tmp_path, "site_a") == []
        res = evaluate(fed, logreg, dp={"epsilon": 1.0}, lace=False)
    assert res.dp["releases"] == 1 and len(_charges(tmp_path, "site_a")) == 1


def test_an_evaluation_over_the_budget_is_refused_before_anything_is_charged(tables, logreg, tmp_path):
    from ehr_fed.federation.coordinator import FederationError

    with _fed(tables, logreg, tmp_path, dp={"epsilon": 0.5}) as fed:
        with pytest.raises(FederationError, match=r"\[dp_budget\].*remaining budget: epsilon 0\.5 of 0\.5"):
            evaluate(fed, logreg, dp={"epsilon": 1.0})
    assert all(_charges(tmp_path, sid) == [] for sid in tables)


def test_the_evaluation_dp_is_its_own_not_the_models(plain_fed):
    """The evaluated model's ``dp`` (its training's) does not switch a private evaluation on."""
    assert resolve(plain_fed, None) is None and resolve(plain_fed, False) is None
    assert resolve(plain_fed, 2.0).epsilon == 2.0
