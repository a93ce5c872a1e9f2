"""Federation YAML, site YAML and the keys / stats / site commands."""

from __future__ import annotations

import json
import os
import stat

import yaml

from ehr_fed.cli.main import main
from ehr_fed.federation import Federation, SiteNode
from ehr_fed.federation.keys import CoordinatorKeys
from ehr_fed.federation.testing import make_tables


def _federation_dir(tmp_path):
    tables = make_tables()
    sites = []
    for sid, t in tables.items():
        (tmp_path / sid).mkdir()
        t.to_parquet(tmp_path / sid / "features.parquet", index=False)
        sites.append({"id": sid, "table": f"{sid}/features.parquet"})
    cfg = {"sites": sites, "transport": {"kind": "in_process"}, "privacy": {"min_cell_count": 10, "min_sites": 3}}
    (tmp_path / "federation.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "federation.yaml", tables


def test_from_yaml_and_stats_cli(tmp_path):
    path, tables = _federation_dir(tmp_path)
    fed = Federation.from_yaml(path, encrypted=False)
    assert fed.site_ids == list(tables) and fed.policy.min_sites == 3
    assert sum(r["n"] for r in fed.query("stats.count", {}).values()) == 300
    out = tmp_path / "stats.json"
    assert main(["stats", "--federation", str(path), "--out", str(out), "--plaintext",
                 "--columns", "age,sex_female,lab_creatinine"]) == 0
    data = json.loads(out.read_text())
    assert data["table_one"]["N"]["Overall"] == "300" and set(data["histograms"]) == {"age", "sex_female",
                                                                                   "lab_creatinine"}
    html = tmp_path / "stats.html"
    assert main(["stats", "--federation", str(path), "--out", str(html), "--plaintext",
                 "--columns", "age,los_days"]) == 0
    text = html.read_text()
    assert "<h2>Table 1</h2>" in text and text.count("data:image/png;base64,") == 2


def test_keys_cli_and_site_config(tmp_path, capsys):
    assert main(["keys", "ceremony", "--sites", "site_a,site_b,site_c", "--out", str(tmp_path / "keys"),
                 "--bits", "1024", "--insecure-test-keys"]) == 0
    for sid in ("site_a", "site_b", "site_c"):
        assert stat.S_IMODE(os.stat(tmp_path / "keys" / f"{sid}.site.json").st_mode) == 0o600
    coord = json.loads((tmp_path / "keys" / "coordinator.json").read_text())
    assert set(coord) == {"paillier_public", "creator", "sites", "scheme", "threshold", "share_index",
                          "verification"}
    assert not any(k in json.dumps(coord) for k in ("kex_private", "sign_private", "paillier_private", "paillier_share"))
    CoordinatorKeys.load(tmp_path / "keys" / "coordinator.json")
    path, tables = _federation_dir(tmp_path)
    (tmp_path / "site_a.yaml").write_text(yaml.safe_dump({
        "site_id": "site_a", "table": "site_a/features.parquet", "keys": "keys/site_a.site.json",
        "policy": {"min_cell_count": 5}, "audit_log": "audit/site_a.jsonl"}))
    node = SiteNode.from_config(tmp_path / "site_a.yaml")
    assert node.holds_private_key and node.policy.min_cell_count == 5 and len(node.table) == 80
    capsys.readouterr()
    assert main(["site", "check", str(tmp_path / "site_a.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 80


def test_kept_keys_let_a_later_run_verify_a_model_trained_before(tmp_path, monkeypatch):
    """``keys: {dir: ...}`` keeps an in-process federation's site keys (sealed, 0600) between runs, so the
    sites of a later run verify the transcript of a model trained in an earlier one; without it they refuse."""
    import pytest

    from ehr_fed.evaluation import evaluate
    from ehr_fed.federation import FederationError
    from ehr_fed.federation.config import FederationConfigError
    from ehr_fed.models import FederatedLogisticRegression

    path, tables = _federation_dir(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["keys"] = {"n_length": 1024, "dir": "keys"}
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("EHR_FED_KEY_PASSPHRASE", "pilot passphrase")
    with Federation.from_yaml(path, allow_insecure=True) as fed:
        model = FederatedLogisticRegression().fit(fed)
        first = {sid: b.fingerprint() for sid, b in fed.keys.sites.items()}
    files = sorted((tmp_path / "keys").glob("*.site.json"))
    assert [f.name for f in files] == [f"{sid}.site.json" for sid in sorted(tables)]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        assert "encrypted" in json.loads(f.read_text())           # the private part sealed
    with Federation.from_yaml(path, allow_insecure=True) as fed:  # a later run: the same identities
        assert {sid: b.fingerprint() for sid, b in fed.keys.sites.items()} == first
        result = evaluate(fed, model)
        assert result.overall["n"] == sum(len(t) for t in tables.values())
    cfg["keys"] = {"n_length": 1024}                               # no folder: a new ceremony per run
    path.write_text(yaml.safe_dump(cfg))
    with Federation.from_yaml(path, allow_insecure=True) as fed, pytest.raises(FederationError, match="model_"):
        evaluate(fed, model)
    cfg["keys"]["dir"] = "keys"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("EHR_FED_KEY_PASSPHRASE", "another passphrase")
    with pytest.raises(FederationConfigError, match="wrong passphrase"):
        Federation.from_yaml(path, allow_insecure=True)
    files[0].unlink()
    with pytest.raises(FederationConfigError, match="but not of"):
        Federation.from_yaml(path, allow_insecure=True)
