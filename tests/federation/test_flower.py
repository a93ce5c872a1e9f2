"""The Flower transport: SuperLink and three SuperNodes as separate processes on loopback, with TLS.

A federated computation over Flower must give exactly the result of the in-process transport.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from ehr_fed.federation import Federation, PrivacyPolicy
from ehr_fed.federation.keys import SiteKeys, run_ceremony
from ehr_fed.federation.messages import TaskMessage
from ehr_fed.federation.transports.flower import from_recorddict, to_recorddict
from ehr_fed.federation.transports.flower_local import LoopbackDeployment
from ehr_fed.federation.transports.flower_relay import FlowerRelayTransport
from ehr_fed.models import FederatedLogisticRegression

pytestmark = pytest.mark.flower

FEATURES = ["age", "lab_creatinine", "cond_diabetes"]


def _site_table(site_id: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(65, 12, n)
    crea = rng.lognormal(0.1, 0.3, n)
    crea[rng.random(n) < 0.1] = np.nan
    diab = (rng.random(n) < 0.3).astype(float)
    eta = -3 + 0.03 * (age - 65) + 0.8 * np.nan_to_num(crea - 1.1) + 0.6 * diab
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype("int8")
    return pd.DataFrame({
        "site_id": site_id,
        "person_key": [f"{site_id}-{i:05d}" for i in range(n)],
        "index_time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(n), unit="D"),
        "label": y,
        "age": age, "lab_creatinine": crea, "cond_diabetes": diab,
    })


def test_message_records_round_trip():
    msg = TaskMessage(action="secure_sum", task="t", study="s", session="x", round=2, nonce="ab12",
                      payload={"a": np.arange(6.0).reshape(2, 3), "ct": b"\x00\x01", "none": None,
                               "nested": {"k": [1, 2.5, "x"]}, "empty": []})
    back = TaskMessage.from_flat(from_recorddict(to_recorddict(msg.to_flat())))
    assert back.header() == msg.header()
    np.testing.assert_array_equal(back.payload["a"], msg.payload["a"])
    assert back.payload["ct"] == b"\x00\x01" and back.payload["none"] is None
    assert back.payload["nested"] == {"k": [1, 2.5, "x"]} and back.payload["empty"] == []


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower-sites")
    tables = {f"site_{k}": _site_table(f"site_{k}", 400 + 50 * k, seed=k) for k in range(3)}
    keys = {sid: SiteKeys.generate(sid) for sid in tables}
    coordinator_keys = run_ceremony(keys, n_length=1024, allow_insecure=True)
    policy = {"min_cell_count": 10, "min_sites": 3}
    configs = {}
    for sid, table in tables.items():
        site_dir = root / sid
        site_dir.mkdir()
        table.to_parquet(site_dir / "features.parquet")
        keys[sid].save(site_dir / "site.keys.json")
        cfg = {"site_id": sid, "table": "features.parquet", "keys": "site.keys.json",
               "policy": policy, "audit_log": "audit.jsonl"}
        (site_dir / "site.yaml").write_text(yaml.safe_dump(cfg))
        configs[sid] = site_dir / "site.yaml"
    return {"tables": tables, "keys": keys, "coordinator_keys": coordinator_keys, "policy": policy,
            "configs": configs, "root": root}


def test_flower_logistic_regression_equals_in_process(three_sites, tmp_path):
    s = three_sites
    policy = PrivacyPolicy.from_mapping(s["policy"])
    with Federation.in_process(s["tables"], policy=policy, encrypted=True, site_keys=s["keys"]) as fed:
        local = FederatedLogisticRegression(penalty="none").fit(fed)

    with LoopbackDeployment(s["configs"], workdir=tmp_path / "deploy") as deployment:
        transport = FlowerRelayTransport(flwr_home=deployment.flwr_home, expected_sites=3)
        with Federation(transport, keys=s["coordinator_keys"], policy=policy, encrypted=True) as fed:
            assert fed.site_ids == sorted(s["tables"])
            remote = FederatedLogisticRegression(penalty="none").fit(fed)
        tls_log = (deployment.workdir / "superlink.log").read_text()

    np.testing.assert_array_equal(remote.coef_, local.coef_)
    np.testing.assert_array_equal(remote.intercept_, local.intercept_)
    assert "--insecure" not in tls_log  # the SuperLink served TLS
    for sid in s["tables"]:  # every payload that left a site is in its audit log
        lines = (s["root"] / sid / "audit.jsonl").read_text().splitlines()
        assert lines and all(json.loads(x)["task"] for x in lines)
