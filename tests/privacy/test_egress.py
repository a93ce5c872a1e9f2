"""Egress: run a full federated analysis (statistics, Table 1, a model, boosting, evaluation) and inspect
every message that leaves a site, derived counts included (N - n, ones = n - zeros)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ehr_fed import stats
from ehr_fed.federation import Federation, SiteContext, site_task
from ehr_fed.federation.testing import FEATURES, make_table, make_tables, test_ceremony

COUNT_NAMES = {"n", "n_rows", "n_missing", "n_ones", "n_zeros", "positives", "hist", "pos", "neg", "stats"}
#: tasks whose outputs named like counts are not counts (boosting's packed integer fields)
#: outputs named like counts that count something else (quantised gradients; numbers of sites hiding a cell)
NOT_COUNTS = {"gbdt.histograms", "stats.flags"}


def _derived(a: dict) -> list[np.ndarray]:
    """Counts a reader of a moments release can form by subtraction."""
    if not {"n", "n_rows", "n_missing", "n_ones", "n_zeros"} <= set(a):
        return []
    n, rows, miss = (np.asarray(a[k], dtype=float) for k in ("n", "n_rows", "n_missing"))
    ones, zeros = np.asarray(a["n_ones"], dtype=float), np.asarray(a["n_zeros"], dtype=float)
    return [rows - n, rows - miss, n - ones, n - zeros]


@site_task("test.egress_gradient", kind="gradient")
def _gradient(table: pd.DataFrame, params: dict, ctx: SiteContext):
    x = table[["age", "los_days"]].fillna(0).to_numpy(float) / 100
    r = table["label"].to_numpy(float) - 0.3
    return {"g": x.T @ r, "h": x.T @ x}


class Recorder:
    """Transport wrapper keeping every reply (what left each site)."""

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


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, obj


def test_nothing_row_level_leaves_a_site(tmp_path):
    tables = make_tables()
    tables["site_d"] = make_table("site_d", 14, 42)   # a small site: its label groups are below 10
    keys, _ = test_ceremony(tuple(tables))
    fed = Federation.in_process(tables, encrypted=True, site_keys=keys, audit_dir=tmp_path,
                                policy={"max_params_fraction": 0.1})
    rec = Recorder(fed.transport)
    fed.transport = rec
    stats.describe(fed, FEATURES)
    stats.describe(fed, FEATURES, by="label")
    stats.describe_by_site(fed, FEATURES)
    stats.table_one(fed, FEATURES)
    stats.federated_bin_edges(fed, FEATURES, 32)
    from ehr_fed.evaluation import evaluate
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    gbdt = FederatedGradientBoostingClassifier(n_estimators=2, max_depth=2, max_bin=16).fit(fed)
    evaluate(fed, gbdt, n_bins=1000, per_site=False)  # per-site metrics: ratios that may equal a row value
    fed.query("stats.count", {})
    assert {"gbdt.init", "gbdt.histograms", "evaluation.score_histograms", "evaluation.lace_histograms"} <= {
        r.task for r in rec.replies if r.action == "decrypt" and r.ok}
    fed.secure_sum("test.egress_gradient", {}, {"g": (1e6, 4), "h": (1e6, 4)})
    refused = [(r.site_id, r.task, r.error_kind) for r in rec.replies if not r.ok]
    assert refused == [("site_d", "test.egress_gradient", "disclosure")]  # 2 params > 0.1 x 14 rows

    pooled = pd.concat(tables.values())
    keys_ = set(pooled["person_key"])
    row_values = set(pooled[["age", "los_days", "lab_creatinine"]].stack().to_numpy().tolist())
    row_values = {v for v in row_values if np.isfinite(v) and v != round(v)}
    date_re = re.compile(r"\d{4}-\d{2}-\d{2}")
    times = set(pooled["index_time"].astype("int64").tolist())
    problems = []
    for rep in rec.replies:
        for path, v in _leaves(rep.to_dict()):
            if isinstance(v, (str, bytes)):
                text = v if isinstance(v, str) else v.hex()
                if any(k in text for k in keys_) or (isinstance(v, str) and date_re.search(v)):
                    problems.append((rep.site_id, path, "identifier or date"))
            elif isinstance(v, (int, float, np.ndarray)) and not isinstance(v, bool):
                arr = np.atleast_1d(np.asarray(v, dtype=float))
                if set(arr[np.isfinite(arr)].tolist()) & (row_values | times):
                    problems.append((rep.site_id, path, "row-level value"))
                name = path.rsplit("/", 1)[-1]
                in_result = "/result/" in path or path.startswith("/payload/arrays/")
                if (name in COUNT_NAMES and in_result and rep.action in ("query", "decrypt")
                        and rep.task not in NOT_COUNTS):
                    small = arr[np.isfinite(arr) & (arr > 0) & (arr < 10)]
                    if small.size:
                        problems.append((rep.site_id, path, f"cells below 10: {small.tolist()}"))
        if rep.ok and rep.action in ("query", "decrypt") and rep.task not in NOT_COUNTS:
            released = rep.payload.get("result") if rep.action == "query" else rep.payload.get("arrays")
            for d in _derived(released or {}):
                small = d[np.isfinite(d) & (d > 0) & (d < 10)]
                if small.size:
                    problems.append((rep.site_id, rep.task, f"derived cells below 10: {small.tolist()}"))
    assert problems == []
    # the small site really was suppressed somewhere, and said so
    assert any(r.site_id == "site_d" and r.payload.get("suppressed") for r in rec.replies)
    # every reply that left a site is in that site's audit log
    from ehr_fed.privacy import AuditLog
    for sid in tables:
        entries = AuditLog.read(tmp_path / f"{sid}.audit.jsonl")
        assert len(entries) == sum(1 for r in rec.replies if r.site_id == sid)  # refusals too
        assert {"time", "task", "round", "sizes", "kind"} <= set(entries[0])
