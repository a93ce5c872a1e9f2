"""A malicious coordinator's crafted requests, sent to real sites through the in-process transport.

Each attack must be refused by every site with a reason code, and nothing computed may leave a site.
"""

from __future__ import annotations

import pytest

from ehr_fed.privacy import PrivacyPolicy

from .conftest import MaliciousCoordinator

NEWTON_STATE = {"missing_values": "indicator", "standardize": True, "center_columns": True,
                "feature_names": ["age", "person_key"], "mean": [0.0, 0.0], "terms": ["age", "person_key"],
                "term_source": [0, 1], "term_is_indicator": [False, False], "center": [0.0, 0.0],
                "scale": [1.0, 1.0]}


def _refused(replies, code):
    assert replies, "no site was asked"
    for sid, rep in replies.items():
        assert not rep.ok, f"{sid} computed the request"
        assert rep.error_kind == "disclosure" and f"rule {code}" in rep.error, (sid, rep.error)
        assert rep.payload == {}, f"{sid} released something with its refusal"


@pytest.mark.parametrize("task, params", [
    ("logreg.newton", {"preprocess": {}, "beta": [0.0], "fit_intercept": True, "label": "label"}),
    ("models.preprocess_sums", {"features": ["age"], "label": "label"}),
    ("models.row_count", {}),
    ("gbdt.init", {}),
    ("gbdt.histograms", {}),
    ("evaluation.score_histograms", {"model": "{}", "n_bins": 10}),
    ("stats.histogram", {"columns": ["age"], "edges": [[0, 50, 200]], "by": None}),
])
def test_query_of_a_secure_sum_task_is_refused(attacker, task, params):
    """The 'query' bypass: per-site gradients, histograms and counts asked for as plaintext replies."""
    _refused(attacker.query(task, params), "release_mode")


@pytest.mark.parametrize("action, task, params", [
    ("query", "stats.moments", {"columns": ["age", "person_key"], "by": None}),
    ("query", "stats.moments", {"columns": ["age"], "by": "person_key"}),
    ("query", "stats.moments", {"columns": ["index_time"], "by": None}),
    ("secure_sum", "models.preprocess_sums", {"features": ["age", "label"], "label": "label"}),
    ("secure_sum", "models.preprocess_sums", {"features": ["age"], "label": "sex_female"}),
    ("secure_sum", "logreg.newton", {"preprocess": NEWTON_STATE, "beta": [0.0, 0.0, 0.0],
                                     "fit_intercept": True, "label": "label"}),
])
def test_meta_columns_as_features_outcome_swaps_and_per_record_groups_are_refused(attacker, action, task, params):
    payload = {"params": params}
    if action == "secure_sum":
        payload.update(layout={"x": [1e9, 4]}, encrypted=False, participants=sorted(attacker.nodes),
                       decryptor=sorted(attacker.nodes)[0])
    _refused(attacker.send(action, task, payload), "meta_columns")


def test_allow_list_names_the_release_mode(small_site_tables):
    m = MaliciousCoordinator(small_site_tables, PrivacyPolicy(allowed_tasks=["stats.count:secure_sum"]))
    try:
        plain = m.query("stats.count", {})
        layout = {"n": [1e9, 4], "positives": [1e9, 4]}
        parts = sorted(m.nodes)
        summed = m.send("secure_sum", "stats.count", {"params": {}, "layout": layout, "encrypted": False,
                                                      "participants": parts, "decryptor": parts[0]})
    finally:
        m.close()
    _refused(plain, "allowed_tasks")
    assert all(rep.ok for rep in summed.values())
