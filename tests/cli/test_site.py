"""``ehr-fed site serve|node-key|app-hash``: the commands a hospital runs for a Flower federation."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import yaml

from ehr_fed.cli.main import main
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.transports.flower_clientapp import build_app_fab


def test_app_hash_is_the_fab_flwr_run_builds(capsys):
    assert main(["site", "app-hash"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(build_app_fab()).hexdigest()


def test_node_key_writes_a_private_key_only_its_owner_reads(tmp_path, capsys):
    assert main(["site", "node-key", "--out", str(tmp_path / "node")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert oct(os.stat(out["private_key"]).st_mode & 0o777) == "0o600"
    assert open(out["public_key"]).read().startswith("ecdsa-sha2-nistp384 ")
    assert "flwr supernode register supernode.pub" in out["next"]


def test_serve_refuses_a_socket_folder_others_can_enter(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    pd.DataFrame({"site_id": "a", "person_key": ["p"], "label": [0], "age": [1.0]}).to_parquet(site / "t.parquet")
    SiteKeys.generate("a").save(site / "k.json")
    (site / "site.yaml").write_text(yaml.safe_dump({"site_id": "a", "table": "t.parquet", "keys": "k.json"}))
    shared = tmp_path / "run"
    shared.mkdir()
    os.chmod(shared, 0o755)
    assert main(["site", "serve", str(site / "site.yaml"), "--socket", str(shared / "s.sock")]) == 2
    err = capsys.readouterr().err
    assert "must belong to this user and have mode 0700" in err and f"chmod 700 {shared}" in err
