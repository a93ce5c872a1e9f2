"""A malicious coordinator: crafted TaskMessages sent to real SiteNodes through the in-process transport.

``MaliciousCoordinator`` builds real sites (their own tables, default policies), puts them behind the real
:class:`InProcessTransport` (every message and reply crosses the dict border) and lets a test send any
action, task, parameters and round it likes, then read what each site released.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation.messages import Reply, TaskMessage, new_nonce
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.testing import make_table
from ehr_fed.federation.transports.in_process import InProcessTransport
from ehr_fed.privacy import PrivacyPolicy

MIN = 10


class MaliciousCoordinator:
    """Sends whatever it likes to real sites and keeps every reply."""

    def __init__(self, tables: dict[str, pd.DataFrame], policy: PrivacyPolicy | None = None, study: str = "s1"):
        self.study = study
        self.nodes = {sid: SiteNode(sid, t, policy or PrivacyPolicy(), study=study) for sid, t in tables.items()}
        self.transport = InProcessTransport(self.nodes)
        self.session = new_nonce()
        self._round = itertools.count(1)
        self.replies: list[Reply] = []

    def send(self, action: str, task: str, payload: dict | None = None, sites=None) -> dict[str, Reply]:
        r = next(self._round)
        msgs = {sid: TaskMessage(action, task, self.study, self.session, r, new_nonce(), payload or {})
                for sid in (sites or self.nodes)}
        out = self.transport.send(msgs, 60.0)
        self.replies.extend(out.values())
        return out

    def query(self, task: str, params: dict | None = None, sites=None) -> dict[str, Reply]:
        return self.send("query", task, {"params": params or {}}, sites)

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
def small_site_tables() -> dict[str, pd.DataFrame]:
    """Three ordinary sites and one small one (14 rows: its label groups are below the minimum)."""
    tables = {f"site_{c}": make_table(f"site_{c}", n, 7 + i) for i, (c, n) in enumerate(zip("abc", (80, 120, 100),
                                                                                          strict=True))}
    tables["site_d"] = make_table("site_d", 14, 42)
    return tables


@pytest.fixture
def attacker(small_site_tables):
    m = MaliciousCoordinator(small_site_tables)
    yield m
    m.close()


def small(values) -> list[float]:
    """The values in 1 .. MIN-1 (NaN / None ignored)."""
    a = np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))], dtype=float)
    a = a[np.isfinite(a)]
    return a[(a > 0) & (a < MIN)].tolist()
