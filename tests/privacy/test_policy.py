"""Privacy policy files, small-cell rules and the audit log."""

from __future__ import annotations

import numpy as np
import pytest

from ehr_fed.privacy import AuditLog, PolicyError, PrivacyPolicy, merge_histogram, suppress


def test_defaults_and_yaml(tmp_path):
    p = PrivacyPolicy()
    assert (p.min_cell_count, p.min_sites, p.max_params_fraction, p.allowed_tasks) == (10, 3, 0.33, None)
    f = tmp_path / "policy.yaml"
    f.write_text("min_cell_count: 5\nallowed_tasks: ['stats.*']\n")
    q = PrivacyPolicy.from_yaml(f)
    assert q.min_cell_count == 5 and q.min_sites == 3
    assert q.allows_task("stats.count") and not q.allows_task("logreg.newton")


def test_every_problem_reported(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("min_cell_count: 0\nmax_params_fraction: 2\ncolour: red\n")
    with pytest.raises(PolicyError) as exc:
        PrivacyPolicy.from_yaml(f)
    msg = str(exc.value)
    assert "min_cell_count" in msg and "max_params_fraction" in msg and "colour" in msg


def test_suppress_masks_dependents():
    n, s, idx = suppress(np.array([0, 3, 12, 9]), 10, np.array([0.0, 5.0, 20.0, 7.0]))
    assert idx == [1, 3]
    np.testing.assert_array_equal(np.isnan(n), [False, True, False, True])
    np.testing.assert_array_equal(np.isnan(s), [False, True, False, True])


@pytest.mark.parametrize("counts", [[0, 3, 4, 20, 0, 2, 1, 9], [12, 0, 0, 1], [5, 5], [30]])
def test_merge_keeps_total_and_min(counts):
    merged, groups = merge_histogram(np.array(counts, float), 10)
    assert merged.sum() == sum(counts)
    assert np.all((merged == 0) | (merged >= 10))
    for g in groups:
        assert merged[g[0]] == sum(counts[i] for i in g)


def test_merge_total_below_minimum_is_suppressed():
    merged, groups = merge_histogram(np.array([1.0, 2.0]), 10)
    assert np.isnan(merged).all() and groups == [[0, 1]]


def test_audit_log_lines(tmp_path):
    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    log.record(site_id="s", task="t", action="query", round=2, kind="count",
               payload={"x": np.zeros((2, 3)), "c": b"abc"}, nbytes=51)
    (entry,) = AuditLog.read(tmp_path / "a" / "audit.jsonl")
    assert entry["sizes"] == {"x": {"shape": [2, 3], "dtype": "float64"}, "c": {"bytes": 3}}
    assert {"time", "task", "round", "kind", "bytes"} <= set(entry)
