"""A coordinator sums the same column over three sites and then over two (another session, other
parameters), so the difference is the third site's cells. Every honest contributor refuses the second."""

import pytest

from ehr_fed import stats
from ehr_fed.federation import Federation
from ehr_fed.federation.coordinator import FederationError
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.testing import make_tables, test_ceremony
from ehr_fed.federation.transports.in_process import InProcessTransport
from ehr_fed.privacy import PrivacyPolicy

SITES = ("site_a", "site_b", "site_c")


def _fed(nodes, ckeys, sites):
    from ehr_fed.evaluation.external import SubsetTransport

    transport = InProcessTransport(nodes)
    if sites != SITES:
        transport = SubsetTransport(transport, list(sites))
    return Federation(transport, keys=ckeys, policy=PrivacyPolicy(min_sites=2), encrypted=True, study="s1",
                      allow_insecure=True)


@pytest.fixture
def nodes(tmp_path):
    tables = make_tables()
    keys, ckeys = test_ceremony(SITES)
    policy = PrivacyPolicy(min_sites=2)
    return ({sid: SiteNode(sid, tables[sid], policy, keys[sid], study="s1", allow_insecure=True,
                           state=tmp_path / f"{sid}.jsonl") for sid in SITES}, ckeys, tables)


def test_same_column_over_fewer_sites_is_refused_even_after_a_restart(nodes, tmp_path):
    nodes, ckeys, tables = nodes
    with _fed(nodes, ckeys, SITES) as fed:
        stats.moments(fed, ["age", "sex_female"])
    # the sites restart (same state files); a new session over two of them asks for age alone
    again = {sid: SiteNode(sid, tables[sid], PrivacyPolicy(min_sites=2), n.keys, study="s1", allow_insecure=True,
                           state=tmp_path / f"{sid}.jsonl") for sid, n in nodes.items()}
    with _fed(again, ckeys, ("site_a", "site_b")) as fed:
        with pytest.raises(FederationError, match="statistics of 'age'.*rule differencing"):
            stats.moments(fed, ["age"])
        # a column never summed before is fine over these two sites
        m = stats.moments(fed, ["los_days"])
    assert float(m["n"][0, 0]) == sum(int(tables[s]["los_days"].notna().sum()) for s in ("site_a", "site_b"))


def test_the_same_sites_may_ask_again_in_any_form(nodes):
    nodes, ckeys, tables = nodes
    with _fed(nodes, ckeys, SITES) as fed:
        stats.moments(fed, ["age", "sex_female"])
        stats.describe(fed, ["age"])
        table = stats.table_one(fed, ["age", "sex_female"])
    assert len(table) >= 3


def test_an_unused_parameter_cannot_rename_a_computation(nodes):
    """Renaming a computation with a parameter the task ignores would dodge the differencing records."""
    nodes, ckeys, tables = nodes
    with _fed(nodes, ckeys, SITES) as fed:
        for task, params in (("stats.moments", {"columns": ["age"], "by": None, "junk": 1}),
                             ("stats.histogram", {"columns": ["age"], "edges": [[0.0, 50.0, 120.0]], "by": None,
                                                  "x": 2})):
            with pytest.raises(FederationError, match=r"takes the parameters .*not \['(junk|x)'\]"):
                fed.secure_sum(task, params, {"n": (1e9, 3)})
