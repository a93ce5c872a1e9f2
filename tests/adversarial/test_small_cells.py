"""Small cells through stats, Table 1, evaluation and LACE histograms, gbdt.init and boosting: a malicious
coordinator asks the real sites directly (query) and an honest one runs the workflows; either way no cell
of 1 .. min_cell_count-1 rows is released or recoverable from what is (N - n, overall - group, ones =
n - zeros)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ehr_fed import stats
from ehr_fed.evaluation import evaluate, model_to_json
from ehr_fed.federation import Federation
from ehr_fed.federation.testing import FEATURES, test_ceremony
from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

from .conftest import MIN, small

COUNTS = ("n", "n_rows", "n_missing", "n_ones", "n_zeros")


def released(rep):
    """The plaintext result a site released, or None when it refused (secure-sum-only task)."""
    if not rep.ok:
        assert rep.error_kind == "disclosure" and "[release_mode]" in rep.error, rep.error
        return None
    return rep.payload["result"]


def opened(recorder) -> dict[str, list[dict]]:
    """Arrays of every decrypt reply of an honest run, by task."""
    out: dict[str, list[dict]] = {}
    for r in recorder.replies:
        if r.action == "decrypt" and r.ok:
            out.setdefault(r.task, []).append(r.payload["arrays"])
    return out


def _derived(m: dict) -> list[np.ndarray]:
    a = {k: np.asarray(m[k], dtype=float) for k in COUNTS}
    return [*a.values(), a["n_rows"] - a["n"], a["n_rows"] - a["n_missing"], a["n"] - a["n_ones"],
            a["n"] - a["n_zeros"], a["n_rows"] - a["n_ones"] - a["n_zeros"]]


def test_per_site_moments_release_no_recoverable_small_cell(attacker, small_site_tables):
    cols = [*FEATURES]
    # a bare per-site query (no common suppression flags) is refused by every site
    for rep in attacker.query("stats.moments", {"columns": cols, "by": None}).values():
        assert not rep.ok and rep.error_kind == "disclosure" and "[cross_site_suppression]" in rep.error
    keys, ckeys = test_ceremony(tuple(small_site_tables))
    with Federation.in_process(small_site_tables, site_keys=keys, allow_insecure=True) as fed:
        per = {by: stats.per_site(fed, "stats.moments", {"columns": cols, "by": by}) for by in (None, "label")}
        pooled = {by: stats.moments(fed, cols, by=by) for by in (None, "label")}
        # forged or foreign flags are refused
        good = fed.secure_sum("stats.flags", {"task": "stats.moments", "params": {"columns": cols, "by": None}},
                              {k: (2.0, 4) for k in ("n", "sum", "sumsq", *COUNTS)}).release
        forged = {**good, "arrays": {**good["arrays"], "n": {**good["arrays"]["n"],
                                                           "f8": "00" * (len(good["arrays"]["n"]["f8"]) // 2)}}}
        for bad, why in ((forged, "does not verify"), (good, "other parameters")):
            with pytest.raises(Exception, match=why):
                fed.query("stats.moments", {"columns": cols[:2], "by": None, "flags": bad} if bad is good
                          else {"columns": cols, "by": None, "flags": bad})
    for by in (None, "label"):
        for sid in small_site_tables:
            for arr in _derived(per[by][sid]):
                assert small(arr) == [], (sid, by, arr)
        # pooled minus every other site's per-site value gives no site's hidden cell back
        for sid in small_site_tables:
            for k in COUNTS:
                rest = sum(np.asarray(per[by][t][k], float) for t in small_site_tables if t != sid)
                assert small(np.asarray(pooled[by][k], float) - rest) == [], (sid, by, k)
    # the small site's label groups were hidden, at every site (else pooled - the others gives them back)
    for sid in small_site_tables:
        assert np.isnan(np.asarray(per["label"][sid]["n_rows"], float)).all(), sid
    assert per["label"].suppressed["site_d"]


def test_table_one_prints_no_small_count(small_site_tables):
    tables = dict(small_site_tables)
    for i, t in enumerate(tables.values()):  # a rare flag: 9 ones among label 1 in all, 7 missing values
        t["flag"] = 0.0
        t.loc[t.index[t["label"] == 1][: (3, 3, 3, 0)[i]], "flag"] = 1.0
        t.loc[t.index[t["label"] == 0][:15], "flag"] = 1.0
        t["lab_creatinine"] = t["lab_creatinine"].fillna(1.0)
        t.loc[t.index[: (2, 2, 2, 1)[i]], "lab_creatinine"] = np.nan
    with Federation.in_process(tables, encrypted=False) as fed:
        t1 = stats.table_one(fed, [*FEATURES, "flag"])
    printed = [int(x) for cell in t1.to_numpy().ravel() for x in re.findall(r"(?:^|\s)(\d+) \(", f" {cell}")]
    assert printed and [v for v in printed if 0 < v < MIN] == []
    assert t1.loc["flag, n (%)", "label=1"] == "suppressed" and t1.loc["flag, n (%)", "label=0"] == "suppressed"
    assert t1.loc["lab_creatinine missing, n (%)", "Overall"] == "suppressed"


@pytest.fixture(scope="module")
def model():
    from ehr_fed.federation.testing import make_tables

    pooled = pd.concat(make_tables().values(), ignore_index=True)
    return FederatedGradientBoostingClassifier(n_estimators=3, max_depth=2, encrypted=False).fit(pooled)


@pytest.fixture(scope="module")
def model_text(model):
    return model_to_json(model)


@pytest.mark.parametrize("n_bins", [10_000, 7])
def test_per_site_score_histograms_are_refused_or_merged(attacker, model_text, n_bins):
    out = attacker.query("evaluation.score_histograms", {"model": model_text, "n_bins": n_bins})
    for sid, rep in out.items():
        r = released(rep)
        if r is None:
            continue
        for k in ("pos", "neg", "n"):
            assert small(r[k]) == [], (sid, k)


def _lace_tables(tables):
    return {sid: t.assign(lace=np.clip(np.round(t["los_days"] + t["charlson"]), 0, 19)) for sid, t in tables.items()}


def test_per_site_lace_and_gbdt_init_are_refused_or_hide_small_cells(small_site_tables):
    from .conftest import MaliciousCoordinator

    m = MaliciousCoordinator(_lace_tables(small_site_tables))
    try:
        lace, init = m.query("evaluation.lace_histograms", {}), m.query("gbdt.init", {})
    finally:
        m.close()
    for sid in small_site_tables:
        r = released(lace[sid])
        assert r is None or (small(r["pos"]) == [] and small(r["neg"]) == []), sid
        r = released(init[sid])
        assert r is None or small(r["stats"]) == [], sid


def test_honest_secure_sums_open_no_small_cell(small_site_tables):
    """LACE histograms, gbdt.init and the moments as the decrypting site opens them."""
    tables = _lace_tables(small_site_tables)
    for t in tables.values():  # a pooled small label-1 group in one LACE value, and few positives overall
        t.loc[t["label"] == 1, "lace"] = np.where(t.loc[t["label"] == 1, "los_days"] > 12, 19, 3)
    bound = (1e9, len(tables))
    with Federation.in_process(tables, encrypted=False) as fed:
        fed.transport = rec = Recorder(fed.transport)
        fed.secure_sum("evaluation.lace_histograms", {}, {"pos": bound, "neg": bound})
        fed.secure_sum("gbdt.init", {}, {"stats": bound})
        stats.moments(fed, FEATURES, by="label")
    got = opened(rec)
    assert set(got) >= {"evaluation.lace_histograms", "gbdt.init", "stats.moments", "stats.centered"}
    for task, arrays in got.items():
        for a in arrays:
            for k, v in a.items():
                if k in ("pos", "neg", "stats", *COUNTS):
                    assert small(v) == [], (task, k)
            if task in ("stats.moments", "stats.centered"):
                for arr in _derived(a):
                    assert small(arr) == [], task
    lace = got["evaluation.lace_histograms"][0]
    raw_pos = np.bincount(pd.concat(tables.values()).query("label == 1")["lace"].astype(int), minlength=20)
    assert 0 < raw_pos[19] < MIN  # the small cell exists in the pooled data ...
    assert lace["pos"][19] == 0.0  # ... and was merged into its neighbour before it left


class Recorder:
    """Transport wrapper keeping every reply of an honest run."""

    def __init__(self, inner):
        self.inner, self.replies = inner, []

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        out = self.inner.send(messages, timeout)
        self.replies.extend(r for r in out.values() if hasattr(r, "payload"))
        return out

    def close(self):
        self.inner.close()


def test_honest_evaluation_releases_merged_histograms_only(small_site_tables, model):
    from ehr_fed.evaluation.provenance import approved_digest
    from ehr_fed.privacy import PrivacyPolicy

    # the model was fitted outside this federation: its sites evaluate it as an approved model
    policy = PrivacyPolicy(approved_models=[approved_digest(model)])
    with Federation.in_process(small_site_tables, policy=policy, encrypted=False) as fed:
        fed.transport = rec = Recorder(fed.transport)
        res = evaluate(fed, model, per_site=False, lace=False)
    opened = [r for r in rec.replies if r.action == "decrypt" and r.ok]
    assert {r.task for r in opened} >= {"evaluation.score_histograms", "evaluation.row_count"}
    for r in opened:
        for k in ("pos", "neg", "n"):
            if k in r.payload["arrays"]:
                assert small(r.payload["arrays"][k]) == [], (r.task, k)
    # the AUC comes with a bound that covers the merging
    df = pd.concat(small_site_tables.values())
    from sklearn.metrics import roc_auc_score

    p = model.predict_proba(df)[:, 1]
    assert abs(res.overall["auc"] - roc_auc_score(df["label"], p)) <= res.overall["auc_tie_bound"] + 1e-12


def test_boosting_splits_only_on_groups_of_enough_rows(small_site_tables):
    """Federated trees equal the pooled learner's under the same rule, and every node holds >= MIN rows."""
    with Federation.in_process(small_site_tables, encrypted=False) as fed:
        fm = FederatedGradientBoostingClassifier(n_estimators=4, max_depth=3, encrypted=False, max_bin=32).fit(fed)
    pooled = pd.concat(small_site_tables.values(), ignore_index=True)
    pm = FederatedGradientBoostingClassifier(n_estimators=4, max_depth=3, encrypted=False, max_bin=32,
                                             bin_edges=fm.bin_edges_).fit(pooled)
    np.testing.assert_array_equal(fm.predict_proba(pooled), pm.predict_proba(pooled))
    for t in fm.trees_:
        assert min(int(t.count[i]) for i in range(t.n_nodes)) >= MIN
