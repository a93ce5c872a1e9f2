"""``ehr-fed keys``: the distributed ceremony through the real entry point, and every mistake as exit code 2."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from ehr_fed.cli.main import main
from ehr_fed.federation import Federation
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.testing import FEATURES, make_tables
from ehr_fed.privacy import PrivacyPolicy

SITES = ("site_a", "site_b", "site_c")


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run ``ehr-fed keys ...``; return the exit code, the JSON printed on stdout (if any) and stderr."""
    capsys.readouterr()
    code = main(["keys", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


@pytest.fixture
def three_sites(tmp_path, capsys):
    """Each site makes its keys in its own folder; returns paths, passphrase files and fingerprints."""
    sites = {}
    for sid in SITES:
        folder = tmp_path / sid
        folder.mkdir()
        pp = folder / "passphrase"
        pp.write_text(f"correct horse {sid}\n")
        code, out, err = run(capsys, "init", "--site-id", sid, "--out", folder, "--passphrase-file", pp)
        assert code == 0, err
        sites[sid] = {"keys": folder / f"{sid}.site.json", "bundle": folder / f"{sid}.bundle.json",
                      "pp": pp, "fp": out["fingerprint"]}
    return sites


def pin_all(capsys, sites) -> None:
    """Every site pins the others' fingerprints (read out of band) and accepts their bundles."""
    for sid, s in sites.items():
        argv = ["pin", "--keys", s["keys"], "--passphrase-file", s["pp"]]
        for other, o in sites.items():
            if other != sid:
                argv += ["--peer", f"{other}={o['fp']}", "--bundle", o["bundle"]]
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        assert out["accepted"] == sorted(set(sites) - {sid}) and out["not_yet_accepted"] == []


def test_init_writes_an_encrypted_0600_key_file_and_a_public_bundle(three_sites, capsys):
    s = three_sites["site_a"]
    assert stat.S_IMODE(os.stat(s["keys"]).st_mode) == 0o600
    doc = json.loads(s["keys"].read_text())
    assert "encrypted" in doc and "kex_private" not in doc and "sign_private" not in doc
    keys = SiteKeys.load(s["keys"], s["pp"].read_bytes().strip())
    assert keys.public_bundle().fingerprint() == s["fp"]
    for secret in (keys.kex_private, keys.sign_private):
        import base64

        assert base64.b64encode(secret).decode() not in s["keys"].read_text()
    bundle = json.loads(s["bundle"].read_text())
    assert bundle["fingerprint"] == s["fp"] and not {"encrypted", "kex_private", "sign_private"} & set(bundle)
    code, out, _ = run(capsys, "show", s["bundle"])
    assert code == 0 and out["kind"] == "bundle" and out["fingerprint"] == s["fp"]


@pytest.mark.parametrize("scheme", ["single", "threshold"])
def test_distributed_ceremony_of_three_sites_gives_a_working_federation(three_sites, capsys, tmp_path, scheme):
    sites = three_sites
    pin_all(capsys, sites)
    relay = tmp_path / "relay"  # what the coordinator holds and passes on
    a = sites["site_a"]
    code, out, err = run(capsys, "deal", "--keys", a["keys"], "--passphrase-file", a["pp"], "--scheme", scheme,
                         "--bits", 1024, "--allow-insecure", "--out", relay)
    assert code == 0, err
    assert out["members"] == list(SITES) and sorted(os.listdir(relay)) == [
        "coordinator.json", "site_b.wrapped.json", "site_c.wrapped.json"]
    coordinator = json.loads((relay / "coordinator.json").read_text())
    assert coordinator["scheme"] == scheme and not {"paillier_private", "paillier_share"} & set(coordinator)
    for sid in ("site_b", "site_c"):
        s = sites[sid]
        code, acc, err = run(capsys, "accept", "--keys", s["keys"], "--passphrase-file", s["pp"],
                             "--relay", relay / f"{sid}.wrapped.json", "--coordinator", relay / "coordinator.json")
        assert code == 0, err
        assert acc["public_key"] == out["public_key"]
    keys = {sid: SiteKeys.load(s["keys"], s["pp"].read_bytes().strip()) for sid, s in sites.items()}
    if scheme == "single":
        assert len({k.paillier_private for k in keys.values()}) == 1 and all(k.paillier_private for k in keys.values())
    else:
        assert all(k.paillier_private is None for k in keys.values())
        assert len({k.paillier_share for k in keys.values()}) == 3 and all(k.paillier_share for k in keys.values())
    # keys show: public facts of each file, never a secret
    for sid, s in sites.items():
        code, info, _ = run(capsys, "show", s["keys"])
        assert code == 0 and info["site_id"] == sid and info["scheme"] == scheme and info["fingerprint"] == s["fp"]
        assert info["public_key"] == out["public_key"] and info["encrypted_at_rest"] is True
        assert info["holds"] == ("private key (single scheme)" if scheme == "single"
                                 else "key share (threshold scheme)")
        assert info["pinned"] == {o: sites[o]["fp"] for o in SITES if o != sid}
        shown = json.dumps(info)
        import base64

        for secret in (keys[sid].kex_private, keys[sid].sign_private, keys[sid].paillier_private,
                       keys[sid].paillier_share):
            assert secret is None or base64.b64encode(secret).decode() not in shown
    code, info, _ = run(capsys, "show", relay / "coordinator.json")
    assert info["members"] == {sid: s["fp"] for sid, s in sites.items()} and info["holds"] == "public material only"
    assert info["threshold"] == (2 if scheme == "threshold" else None)
    # the keys work: an encrypted, masked federation fits the same model as the plaintext one
    tables = make_tables((120, 140, 130), seed=5)
    policy = PrivacyPolicy(max_params_fraction=0.5)
    from ehr_fed.models import FederatedLogisticRegression

    with Federation.in_process(tables, policy=policy, site_keys=keys) as fed:
        enc = FederatedLogisticRegression(features=FEATURES).fit(fed)
    with Federation.in_process(tables, policy=policy, encrypted=False) as fed:
        plain = FederatedLogisticRegression(features=FEATURES, encrypted=False).fit(fed)
    np.testing.assert_allclose(enc.coef_, plain.coef_, atol=1e-8)


def test_a_substituted_bundle_is_refused_and_nothing_changes(three_sites, capsys, tmp_path):
    b = three_sites["site_b"]
    # the coordinator relays its own bundle in the name of site_a
    code, out, _ = run(capsys, "init", "--site-id", "site_a", "--out", tmp_path / "attacker")
    assert code == 0 and out["fingerprint"] != three_sites["site_a"]["fp"]
    before = b["keys"].read_bytes()
    code, out, err = run(capsys, "pin", "--keys", b["keys"], "--passphrase-file", b["pp"],
                         "--peer", f"site_a={three_sites['site_a']['fp']}",
                         "--bundle", tmp_path / "attacker" / "site_a.bundle.json")
    assert code == 2 and out is None
    assert "substituted" in err and three_sites["site_a"]["fp"] in err and "Traceback" not in err
    assert b["keys"].read_bytes() == before
    # a bundle whose fingerprint was never pinned is refused too, naming the pin command
    code, _, err = run(capsys, "pin", "--keys", b["keys"], "--passphrase-file", b["pp"],
                       "--bundle", three_sites["site_c"]["bundle"])
    assert code == 2 and "no pinned fingerprint for 'site_c'" in err and "ehr-fed keys pin" in err
    assert b["keys"].read_bytes() == before


def test_a_coordinator_file_listing_a_substituted_member_is_refused(three_sites, capsys, tmp_path):
    sites = three_sites
    pin_all(capsys, sites)
    a, b = sites["site_a"], sites["site_b"]
    relay = tmp_path / "relay"
    assert run(capsys, "deal", "--keys", a["keys"], "--passphrase-file", a["pp"], "--bits", 1024,
               "--allow-insecure", "--out", relay)[0] == 0
    doc = json.loads((relay / "coordinator.json").read_text())
    doc["sites"]["site_c"] = json.loads((tmp_path / "site_b" / "site_b.bundle.json").read_text()) | {
        "site_id": "site_c"}
    (relay / "evil.json").write_text(json.dumps(doc))
    code, _, err = run(capsys, "accept", "--keys", b["keys"], "--passphrase-file", b["pp"],
                       "--relay", relay / "site_b.wrapped.json", "--coordinator", relay / "evil.json")
    assert code == 2 and "substituted" in err and "site_c" in err


def test_a_wrong_passphrase_is_refused(three_sites, capsys, tmp_path):
    s = three_sites["site_a"]
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    before = s["keys"].read_bytes()
    code, out, err = run(capsys, "pin", "--keys", s["keys"], "--passphrase-file", wrong,
                         "--peer", f"site_b={three_sites['site_b']['fp']}")
    assert code == 2 and out is None and "wrong passphrase" in err and "Traceback" not in err
    assert s["keys"].read_bytes() == before


def test_ceremony_threshold_encrypted_and_no_overwrite_without_force(tmp_path, capsys):
    pp = tmp_path / "pp"
    pp.write_text("a passphrase\n")
    out_dir = tmp_path / "keys"
    argv = ["ceremony", "--sites", ",".join(SITES), "--out", out_dir, "--bits", 1024, "--allow-insecure",
            "--scheme", "threshold", "--threshold", 3, "--passphrase-file", pp]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert out["scheme"] == "threshold" and out["threshold"] == 3 and out["encrypted"] is True
    for sid in SITES:
        doc = json.loads((out_dir / f"{sid}.site.json").read_text())
        assert "encrypted" in doc and "paillier_share" not in doc
        keys = SiteKeys.load(out_dir / f"{sid}.site.json", b"a passphrase")
        assert keys.paillier_share and keys.paillier_private is None
    before = (out_dir / "site_a.site.json").read_bytes()
    code, _, err = run(capsys, *argv)
    assert code == 2 and "pass --force" in err
    assert (out_dir / "site_a.site.json").read_bytes() == before
    assert run(capsys, *argv, "--force")[0] == 0
    assert (out_dir / "site_a.site.json").read_bytes() != before


MISTAKES = [
    (["show", "{tmp}/nope.json"], "nope.json: no such file"),
    (["show", "{tmp}/notjson.json"], "is not a key file"),
    (["pin", "--keys", "{a_bundle}", "--peer", "site_b={b_fp}"], "is a site public bundle (<site>.bundle.json"),
    (["pin", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--peer", "site_b"], "expected ID=FINGERPRINT"),
    (["pin", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--peer", "site_b=12zz"],
     "is not a site fingerprint"),
    (["pin", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--bundle", "{a_keys}"], "not a site public bundle"),
    (["pin", "--keys", "{a_keys}", "--passphrase-file", "{tmp}/missing_pp", "--peer", "site_b={b_fp}"],
     "missing_pp: no such file"),
    (["pin", "--keys", "{a_keys}", "--peer", "site_b={b_fp}"], "is encrypted: set EHR_FED_KEY_PASSPHRASE"),
    (["deal", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--bits", "1024", "--out", "{tmp}/r"],
     "below the minimum of 2048 bits"),
    (["deal", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--bits", "1024", "--allow-insecure",
      "--out", "{tmp}/r"], "has accepted no other member's bundle"),
    (["deal", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--threshold", "2", "--out", "{tmp}/r"],
     "--threshold applies to --scheme threshold only"),
    (["accept", "--keys", "{a_keys}", "--passphrase-file", "{a_pp}", "--relay", "{a_bundle}", "--coordinator",
      "{a_bundle}"], "not a relay file"),
    (["init", "--site-id", "site_a", "--out", "{tmp}/site_a", "--passphrase-file", "{a_pp}"], "pass --force"),
    (["ceremony", "--sites", "site_a,site_b", "--out", "{tmp}/k", "--bits", "1024"], "below the minimum"),
]


@pytest.mark.parametrize("argv, message", MISTAKES, ids=[" ".join(m[0][:2]) + f" #{i}" for i, m in
                                                        enumerate(MISTAKES)])
def test_every_mistake_is_one_message_and_exit_code_2(three_sites, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.delenv("EHR_FED_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("EHR_FED_KEY_PASSPHRASE_FILE", raising=False)
    (tmp_path / "notjson.json").write_text("hello\n")
    a = three_sites["site_a"]
    fill = {"tmp": tmp_path, "a_keys": a["keys"], "a_bundle": a["bundle"], "a_pp": a["pp"],
            "b_fp": three_sites["site_b"]["fp"]}
    code, out, err = run(capsys, *[x.format(**fill) for x in argv])
    assert code == 2 and out is None
    assert message in err and err.startswith("error: ehr-fed keys ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
