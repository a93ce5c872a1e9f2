"""A coordinator asks for histograms of one column over shifted edges and subtracts them.

Driven through the real protocol: a real :class:`Federation` (the coordinator API is whatever the attacker
calls it with), real SiteNodes with 1024-bit test keys, the in-process transport, the decrypting site's
interval ledger persisted in its state file and surviving a restart.
"""

import itertools

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation import Federation
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.testing import make_table, test_ceremony
from ehr_fed.federation.transports.in_process import InProcessTransport
from ehr_fed.privacy import PrivacyPolicy
from ehr_fed.stats import describe, table_one
from ehr_fed.stats.federated import histogram

MIN = 10
SITES = ("site_a", "site_b", "site_c")


@pytest.fixture
def tables():
    out = {sid: make_table(sid, 90, 11 + i) for i, sid in enumerate(SITES)}
    # one patient whose age is alone in [50.0, 50.1)
    for t in out.values():
        t.loc[t["age"].between(49.95, 50.15), "age"] = 49.0
    out["site_b"].loc[3, "age"] = 50.05
    return out


def _federation(tables, state_dir):
    keys, ckeys = test_ceremony(SITES)
    nodes = {sid: SiteNode(sid, tables[sid], PrivacyPolicy(), keys[sid], study="s1", allow_insecure=True,
                           state=state_dir / f"{sid}.state.jsonl") for sid in SITES}
    return Federation(InProcessTransport(nodes), keys=ckeys, policy=PrivacyPolicy(), encrypted=True,
                      study="s1", allow_insecure=True)


def _shown(h, j=0):
    """{boundary: cumulative count} that a released (merged) histogram shows for column j, group 0."""
    counts = np.asarray(h.counts)[0, j]
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    return {float(h.edges[j][i]): cum[i] for i in range(1, len(counts)) if counts[i] != 0}


def _small_differences(*shown, total):
    pts = {-np.inf: 0.0, np.inf: total}
    for s in shown:
        pts.update(s)
    vals = [pts[b] for b in sorted(pts)]
    return sorted({round(b - a, 6) for a, b in itertools.combinations(vals, 2) if 0 < b - a < MIN})


def test_shifted_edges_reveal_no_single_patient_even_after_a_restart(tables, tmp_path):
    total = float(sum(len(t) for t in tables.values()))
    truth = sum(int(t["age"].between(50.0, 50.1, inclusive="left").sum()) for t in tables.values())
    assert truth == 1
    with _federation(tables, tmp_path) as fed:
        h1 = histogram(fed, ["age"], np.array([[0.0, 50.0, 120.0]]))
    # the decrypting site restarts (same state file); a new session asks for the shifted edges
    with _federation(tables, tmp_path) as fed:
        h2 = histogram(fed, ["age"], np.array([[0.0, 50.1, 120.0]]))
        h3 = histogram(fed, ["age"], np.array([np.linspace(0.0, 120.0, 1201)]))
    s1, s2, s3 = _shown(h1), _shown(h2), _shown(h3)
    assert 50.0 in s1                      # the first release is exact
    assert 50.1 not in s2                  # the shifted boundary would isolate the patient: merged away
    assert _small_differences(s1, s2, s3, total=total) == []
    # without the ledger the two releases would have differed by exactly the one patient
    naive = sum(int((t["age"] < 50.1).sum()) for t in tables.values()) - s1[50.0]
    assert naive == 1


def test_honest_statistics_still_work_with_the_ledger(tables, tmp_path):
    with _federation(tables, tmp_path) as fed:
        d = describe(fed, ["age", "charlson"])
        t1 = table_one(fed, ["age", "charlson", "sex_female"])
    pooled = pd.concat(tables.values())
    assert d.loc[("overall", "age"), "mean"] == pytest.approx(pooled["age"].mean())
    assert {"q0.25", "q0.5", "q0.75"} <= set(d.columns)
    assert len(t1) >= 3
