"""A site's per-study privacy budget: refusal before computing, persistence, DP required by policy."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import Federation, FederationError, PrivacyPolicy
from ehr_fed.federation.tasks import site_task
from ehr_fed.privacy import BudgetLedger, DisclosureError, epsilon_spent
from ehr_fed.privacy.budget import cap_events, ledger_path
from ehr_fed.privacy.dp import OutputSensitivity, ReleasePlan, active_release, dp_task

CALLS: list[str] = []
_LOCK = threading.Lock()


@site_task("tests.dp_spy", kind="count")
def _spy(table: pd.DataFrame, params: dict, ctx) -> dict:
    with _LOCK:
        CALLS.append(ctx.site_id)
    rel = active_release()
    noise = rel.noise("n", 1) if rel is not None else 0
    return {"n": np.array([len(table)], dtype=np.int64) + noise}


dp_task("tests.dp_spy", "stats", lambda params: [OutputSensitivity("n", 1.0, 1.0)])


def _tables(n_sites: int = 3, rows: int = 50) -> dict[str, pd.DataFrame]:
    return {f"s{i}": pd.DataFrame({"site_id": f"s{i}", "person_key": [f"p{i}_{j % 40}" for j in range(rows)],
                                   "index_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(range(rows), "D"),
                                   "label": np.arange(rows) % 2, "x": np.arange(rows, dtype=float)})
            for i in range(n_sites)}


LAYOUT = {"n": {"widths": [[1, [30]]], "max_terms": 3}}


def _ask(fed, epsilon: float):
    plan = ReleasePlan(epsilon=epsilon, delta=1e-6, releases={"stats": 1}).to_params()
    return fed.secure_sum("tests.dp_spy", {"dp": plan}, LAYOUT)


def test_budget_refuses_before_computing_and_survives_a_restart(tmp_path):
    CALLS.clear()
    policy = PrivacyPolicy(dp={"epsilon": 1.0, "delta": 1e-6})
    with Federation.in_process(_tables(), policy=policy, encrypted=False, audit_dir=tmp_path) as fed:
        out = _ask(fed, 0.8)
        assert abs(np.asarray(out["n"]).ravel()[0] - 120) < 200  # 3 x 40 patients (one event each) + noise
        assert sorted(CALLS) == ["s0", "s1", "s2"]
        with pytest.raises((FederationError, DisclosureError), match=r"remaining budget: epsilon 0\.2"):
            _ask(fed, 0.8)
        assert len(CALLS) == 3  # refused before the task ran at any site
    ledger = json.loads(ledger_path(tmp_path / "s0.audit.jsonl").read_text())
    charges = ledger["studies"][""]["charges"]
    assert len(charges) == 1 and charges[0]["task"] == "tests.dp_spy"
    audit = [json.loads(line) for line in (tmp_path / "s0.audit.jsonl").read_text().splitlines()]
    dp_lines = [e for e in audit if e.get("action") == "dp_charge"]
    assert len(dp_lines) == 1 and 0.7 < dp_lines[0]["dp"]["epsilon_spent"] <= 0.8  # at most the planned 0.8
    # a restarted federation (new site objects, same files) still knows what was spent
    with Federation.in_process(_tables(), policy=policy, encrypted=False, audit_dir=tmp_path) as fed:
        with pytest.raises((FederationError, DisclosureError), match="over its budget epsilon=1"):
            _ask(fed, 0.8)
        _ask(fed, 0.3)  # what remains can still be spent (under RDP composition 0.8 then 0.3 stays below 1)
    assert len(CALLS) == 6


def test_policy_requiring_dp_refuses_a_request_without_a_plan():
    policy = PrivacyPolicy(dp={"epsilon": 2.0})
    with Federation.in_process(_tables(), policy=policy, encrypted=False) as fed:
        with pytest.raises((FederationError, DisclosureError), match="requires differential privacy"):
            fed.secure_sum("tests.dp_spy", {}, LAYOUT)


@site_task("tests.no_private_form", kind="count")
def _exact_count(table: pd.DataFrame, params: dict, ctx) -> dict:
    CALLS.append(f"exact:{ctx.site_id}")
    return {"n": np.array([len(table)], dtype=np.int64)}


def test_task_without_private_form_is_refused():
    CALLS.clear()
    plan = ReleasePlan(epsilon=1.0, releases={"stats": 1}).to_params()
    with Federation.in_process(_tables(), encrypted=False) as fed:
        with pytest.raises((FederationError, DisclosureError), match="has no differentially private form"):
            fed.secure_sum("tests.no_private_form", {"dp": plan}, LAYOUT)
    assert CALLS == []  # refused before it computed anything


def test_ledger_composes_charges_and_writes_atomically(tmp_path):
    from ehr_fed.privacy.dp import DPConfig, Release, calibrate

    plan = ReleasePlan(epsilon=1.0, releases={"stats": 2})
    outs = calibrate(plan, "stats", [OutputSensitivity("n", 1, 1)])
    rel = Release("t", "stats", plan, outs)
    path = tmp_path / "a.dp_budget.json"
    led = BudgetLedger(path)
    budget = DPConfig(epsilon=1.0)
    for r in range(2):
        led.charge("study1", rel, session="x", round=r, budget=budget)
    assert not list(tmp_path.glob(".a.dp_budget.json.*"))  # no temporary file left behind
    fresh = BudgetLedger(path)
    assert 0.95 < fresh.spent("study1", 1e-6) <= 1.0  # two planned halves of epsilon 1
    assert fresh.spent("other", 1e-6) == 0.0
    assert fresh.spent("study1", 1e-6) == pytest.approx(epsilon_spent([(rel.rho, rel.xi)] * 2, 1e-6))
    with pytest.raises(DisclosureError, match=r"remaining budget: epsilon 0\.02\d* of 1 \(2 release"):
        fresh.check("study1", rel, budget, "s0")


def test_cap_events_keeps_k_rows_per_patient_the_same_every_time():
    t = pd.DataFrame({"person_key": ["a", "a", "b", "a", "c", "c"], "index_time": pd.to_datetime(
        ["2024-03-01", "2024-01-01", "2024-01-05", "2024-02-01", "2024-01-01", "2024-05-01"]),
        "v": [1, 2, 3, 4, 5, 6]})
    one = cap_events(t, 1)
    assert one["person_key"].value_counts().to_dict() == {"a": 1, "b": 1, "c": 1}
    assert one["v"].tolist() == sorted(one["v"])  # order kept
    assert cap_events(t.iloc[::-1], 1)["v"].sort_values().tolist() == one["v"].tolist()  # row order irrelevant
    two = cap_events(t, 2)
    assert len(two) == 5 and set(one["v"]) <= set(two["v"])
    assert cap_events(t, 5) is t
    # over many patients the kept event is not always the first one
    many = pd.DataFrame({"person_key": np.repeat([f"p{i}" for i in range(200)], 3),
                         "index_time": np.tile(pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]), 200),
                         "v": np.tile([0, 1, 2], 200)})
    counts = cap_events(many, 1)["v"].value_counts()
    assert counts.min() > 40


def test_boosting_under_a_dp_federation_trains_privately_and_checks_its_bounds_before_any_release():
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    with Federation.in_process(_tables(), policy=PrivacyPolicy(dp={"epsilon": 1.0}), encrypted=False) as fed:
        # the federation's dp is the default; a feature without a public clipping range stops the fit
        # before any private release (only the schema query was made)
        with pytest.raises(ValueError, match=r"no clipping range is known for features \['x'\]"):
            FederatedGradientBoostingClassifier(encrypted=False).fit(fed)
        assert [h["label"] for h in fed.history] == ["query gbdt.schema"]


def test_patient_weights_let_a_patient_weigh_at_most_k_rows_however_many_it_has():
    from ehr_fed.privacy.budget import patient_weights

    t = pd.DataFrame({"person_key": ["a"] * 5 + ["b"] * 2 + ["c"], "v": range(8)})
    w = patient_weights(t, 1)
    assert w.tolist() == pytest.approx([0.2] * 5 + [0.5] * 2 + [1.0])
    w2 = patient_weights(t, 2)
    assert w2.tolist() == pytest.approx([0.4] * 5 + [1.0] * 3)  # a patient with m <= k rows keeps weight 1
    for k in (1, 2, 3):  # each patient's rows weigh min(m, k) together, each row at most 1
        got = pd.Series(patient_weights(t, k)).groupby(t["person_key"]).sum().to_dict()
        assert got == pytest.approx({"a": min(5, k), "b": min(2, k), "c": 1.0})
    assert patient_weights(t.drop(columns="person_key"), 1).tolist() == [1.0] * 8  # no key: a row is a patient
    assert patient_weights(t.iloc[:0], 1).size == 0


def test_only_a_task_whose_private_form_weights_rows_keeps_the_weighted_events():
    plan = ReleasePlan(epsilon=1.0, releases={"model": 1}, weighted_events=3)
    assert plan.kept_events(row_weights=True) == 3 and plan.kept_events(row_weights=False) == 1
    assert ReleasePlan(epsilon=1.0, releases={"model": 1}).kept_events(True) == 1
    wider = ReleasePlan(epsilon=1.0, releases={"model": 1}, events_per_patient=4, weighted_events=2)
    assert wider.kept_events(True) == 4  # never fewer than events_per_patient
    with pytest.raises(ValueError, match="weighted_events"):
        ReleasePlan(epsilon=1.0, releases={"model": 1}, weighted_events=0)
