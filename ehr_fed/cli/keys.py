"""``ehr-fed keys``: site identity keys, fingerprint pinning, the Paillier key ceremony, key file inspection.

The distributed ceremony, each step run where its site runs (only public or wrapped material travels)::

    ehr-fed keys init   --site-id site_a --out keys/            # every site: identity keys, prints fingerprint
    ehr-fed keys pin    --keys keys/site_a.site.json --peer site_b=<fp> --bundle site_b.bundle.json ...
    ehr-fed keys deal   --keys keys/site_a.site.json --scheme threshold --out relay/   # the creator site
    ehr-fed keys accept --keys keys/site_b.site.json --relay relay/site_b.wrapped.json \\
                        --coordinator relay/coordinator.json     # every other site
    ehr-fed keys show   keys/site_b.site.json                    # public facts only, never secrets

``keys ceremony`` runs the same steps for sites that all live on this machine (demos, tests).

Every user mistake ends the command with one ``error:`` line and exit code 2 (:data:`EXIT_KEYS`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

#: exit code of every user mistake in ``ehr-fed keys``
EXIT_KEYS = 2

_KINDS = {
    "site": "a site key file (<site>.site.json, written by `ehr-fed keys init`)",
    "bundle": "a site public bundle (<site>.bundle.json, written by `ehr-fed keys init`)",
    "coordinator": "the coordinator's public key file (coordinator.json, written by `ehr-fed keys deal`)",
    "wrapped": "a relay file (<site>.wrapped.json, written by `ehr-fed keys deal`)",
}


_WRAPPED_WHAT = {"private": "the private key", "share": "a key share"}


class KeysUsageError(Exception):
    """A mistake in an ``ehr-fed keys`` command line or in the files it was given."""


# ----------------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="site keys, fingerprint pinning and the Paillier key ceremony",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")

    i = sub.add_parser("init", help="make this site's identity keys (run where the site runs)",
                       description="Generate the site's X25519 and Ed25519 identity keys. Writes "
                                   "<out>/<site>.site.json (0600, private part encrypted under the "
                                   "passphrase) and <out>/<site>.bundle.json (public: send it to the "
                                   "others) and prints the bundle fingerprint to read out to the other "
                                   "sites' administrators.")
    i.add_argument("--site-id", required=True, help="this site's id, as in the federation YAML")
    i.add_argument("--out", required=True, help="directory for the key file and the public bundle")
    _passphrase_arg(i)
    i.add_argument("--force", action="store_true", help="replace existing files (the old keys are lost)")
    i.set_defaults(func=_guarded(init))

    pn = sub.add_parser("pin", help="pin other sites' fingerprints and accept their bundles",
                        description="Pin the fingerprints the other sites' administrators gave you out of "
                                    "band (--peer ID=FINGERPRINT), then accept their public bundles "
                                    "(--bundle). A bundle whose fingerprint is not pinned is refused, and "
                                    "then nothing is changed.")
    pn.add_argument("--keys", required=True, help="this site's key file")
    pn.add_argument("--peer", action="append", default=[], metavar="ID=FINGERPRINT",
                    help="a member's fingerprint as read out of band (repeat per member)")
    pn.add_argument("--bundle", action="append", default=[], metavar="FILE",
                    help="a member's <site>.bundle.json (repeat per member)")
    pn.add_argument("--force", action="store_true", help="replace a fingerprint pinned earlier")
    _passphrase_arg(pn)
    pn.set_defaults(func=_guarded(pin))

    d = sub.add_parser("deal", help="the creator site makes the Paillier key and wraps it for each member",
                       description="Run at the creator site once every member's bundle is accepted. "
                                   "'single': every member receives the private key; 'threshold': every "
                                   "member receives its own t-of-n share and no site holds the private key. "
                                   "Writes <out>/<site>.wrapped.json per recipient (only that site can "
                                   "open it) and <out>/coordinator.json (public material only).")
    d.add_argument("--keys", required=True, help="the creator site's key file")
    d.add_argument("--scheme", choices=("single", "threshold"), default="single")
    d.add_argument("--threshold", type=int, help="shares needed to decrypt (threshold scheme; default a "
                                                 "majority of the sites)")
    d.add_argument("--bits", type=int, default=2048, help="Paillier modulus size (>= 2048)")
    d.add_argument("--out", required=True, help="relay directory (what the coordinator passes on)")
    d.add_argument("--allow-insecure", dest="allow_insecure", action="store_true",
                   help="allow keys below 2048 bits (tests only)")
    d.add_argument("--force", action="store_true", help="deal again although this site already holds a key, "
                                                        "or overwrite relay files")
    _passphrase_arg(d)
    d.set_defaults(func=_guarded(deal))

    a = sub.add_parser("accept", help="a member opens the key (or share) the creator wrapped for it",
                       description="Checks the creator's signature with its pinned bundle, that "
                                   "coordinator.json lists exactly the members this site pinned, unwraps "
                                   "the key material and checks it against the announced public key.")
    a.add_argument("--keys", required=True, help="this site's key file")
    a.add_argument("--relay", required=True, help="<relay>/<this site>.wrapped.json")
    a.add_argument("--coordinator", required=True, help="<relay>/coordinator.json")
    a.add_argument("--allow-insecure", dest="allow_insecure", action="store_true",
                   help="accept keys below 2048 bits (tests only)")
    a.add_argument("--force", action="store_true", help="replace key material this site already holds")
    _passphrase_arg(a)
    a.set_defaults(func=_guarded(accept))

    c = sub.add_parser("ceremony", help="run the whole ceremony for sites that all live on this machine",
                       description="For demos and tests: generates every site's identity, pins and accepts "
                                   "the bundles, deals (--scheme) and accepts, all in this process. Writes "
                                   "<out>/<site>.site.json (0600; encrypted when a passphrase is given) "
                                   "and <out>/coordinator.json (public material only).")
    c.add_argument("--sites", required=True, help="comma-separated site ids")
    c.add_argument("--out", required=True, help="directory for the key files")
    c.add_argument("--creator", help="site that creates the Paillier keypair (default the first)")
    c.add_argument("--scheme", choices=("single", "threshold"), default="single")
    c.add_argument("--threshold", type=int, help="shares needed to decrypt (threshold scheme)")
    c.add_argument("--bits", type=int, default=2048, help="Paillier modulus size (>= 2048)")
    c.add_argument("--allow-insecure", "--insecure-test-keys", dest="insecure_test_keys", action="store_true",
                   help="allow < 2048 bits (tests only)")
    c.add_argument("--force", action="store_true", help="overwrite existing key files in --out")
    _passphrase_arg(c)
    c.set_defaults(func=_guarded(ceremony))

    s = sub.add_parser("show", help="print the public facts of a key file, bundle or coordinator.json",
                       description="Site id, scheme, fingerprints, pinned peers and what key material the "
                                   "file holds. Never prints secrets and needs no passphrase.")
    s.add_argument("file")
    s.set_defaults(func=_guarded(show))
    p.set_defaults(func=lambda a: (p.print_help(), EXIT_KEYS)[1])


def _passphrase_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-file", metavar="FILE",
                        help="file holding the key-file passphrase (default: $EHR_FED_KEY_PASSPHRASE or "
                             "the file named by $EHR_FED_KEY_PASSPHRASE_FILE)")


def _guarded(func):
    """Run an action; a user mistake becomes one ``error:`` line and exit code 2, never a traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from ehr_fed.crypto import CryptoError
        from ehr_fed.federation.keys import KeyCeremonyError

        try:
            return int(func(args) or 0)
        except (KeysUsageError, KeyCeremonyError, CryptoError, ValueError, OSError) as exc:
            from ehr_fed.cli.common import user_message

            action = getattr(args, "keys_command", None) or func.__name__
            print(f"error: ehr-fed keys {action}: {user_message(exc)}", file=sys.stderr)
            return EXIT_KEYS

    return run


# -- files ----------------------------------------------------------------------------------------------
def _passphrase(args: argparse.Namespace) -> bytes | None:
    """The passphrase from ``--passphrase-file``, else the environment, else ``None``."""
    from ehr_fed.federation.keys import passphrase_from_env

    if getattr(args, "passphrase_file", None):
        path = Path(args.passphrase_file)
        try:
            secret = path.read_bytes().strip()
        except FileNotFoundError:
            raise KeysUsageError(f"--passphrase-file {path}: no such file; check the path") from None
        if not secret:
            raise KeysUsageError(f"--passphrase-file {path} is empty; write the passphrase into it")
        return secret
    return passphrase_from_env()


def _require_passphrase_or_test_mode(args: argparse.Namespace) -> bytes | None:
    from ehr_fed.crypto.keys import insecure_keys_allowed
    from ehr_fed.federation.keys import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV

    secret = _passphrase(args)
    if secret is None and not insecure_keys_allowed():
        raise KeysUsageError(
            f"no passphrase to encrypt the private keys with: pass --passphrase-file FILE, or set "
            f"{PASSPHRASE_ENV} (or {PASSPHRASE_FILE_ENV}=<file holding it>)")
    return secret


def kind_of(data: Any) -> str | None:
    """Which ehr-fed key file a parsed JSON document is: ``site``, ``bundle``, ``coordinator``, ``wrapped``."""
    if not isinstance(data, dict):
        return None
    if "recipient" in data and "blob" in data:
        return "wrapped"
    if "site_id" in data and ("encrypted" in data or "kex_private" in data):
        return "site"
    if "sites" in data and "paillier_public" in data:
        return "coordinator"
    if {"site_id", "kex", "sign"} <= set(data):
        return "bundle"
    return None


def read_kind(path: str | Path, want: str | None = None) -> tuple[str, dict]:
    """Read an ehr-fed key JSON file; with ``want``, refuse a file of another kind."""
    path = Path(path)
    if path.is_dir():
        raise KeysUsageError(f"{path} is a folder; give the file ({_KINDS.get(want or '', 'a key file')})")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeysUsageError(f"{path}: no such file; check the path") from None
    except (ValueError, UnicodeDecodeError):
        data = None
    kind = kind_of(data)
    if kind is None:
        expected = _KINDS.get(want or "", "the JSON written by ehr-fed keys init / deal")
        raise KeysUsageError(f"{path} is not a key file (expected {expected})")
    if want and kind != want:
        raise KeysUsageError(f"{path} is {_KINDS[kind]}, not {_KINDS[want]}; pass the right file")
    return kind, data


def _load_site(path: str | Path, secret: bytes | None):
    from ehr_fed.federation.keys import SiteKeys

    read_kind(path, "site")
    return SiteKeys.load(path, secret)


def _save_site(keys, path: str | Path, secret: bytes | None) -> Path:
    return keys.save(path, secret) if secret is not None else keys.save(path)


def _write_public_json(path: Path, data: dict) -> Path:
    """Atomically write a public JSON file (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def _refuse_existing(paths: list[Path], force: bool, why: str) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise KeysUsageError(f"{', '.join(existing)} already exist(s); {why}. To do so anyway pass --force, "
                             "or choose another --out")


def _print(info: dict) -> None:
    print(json.dumps(info, indent=1))


def _check_bits(bits: int, allow_insecure: bool) -> None:
    from ehr_fed.crypto.keys import MIN_KEY_BITS

    if bits < MIN_KEY_BITS and not allow_insecure:
        raise KeysUsageError(f"--bits {bits} is below the minimum of {MIN_KEY_BITS} bits; use --bits "
                             f"{MIN_KEY_BITS} or more (--allow-insecure accepts short keys, for tests only)")


# -- actions --------------------------------------------------------------------------------------------
def init(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import SiteKeys

    sid = str(args.site_id).strip()
    if not sid or any(ch in sid for ch in "/\\") or sid.startswith("."):
        raise KeysUsageError(f"--site-id {args.site_id!r} is not a site id (letters, digits, '_' or '-')")
    out = Path(args.out)
    site_file, bundle_file = out / f"{sid}.site.json", out / f"{sid}.bundle.json"
    _refuse_existing([site_file, bundle_file], args.force,
                     "replacing them makes new identity keys, which every other site must pin again")
    secret = _require_passphrase_or_test_mode(args)
    keys = SiteKeys.generate(sid)
    bundle = keys.public_bundle()
    keys.accept_bundle(bundle)  # its own bundle, kept in the public part of the file
    _save_site(keys, site_file, secret)
    _write_public_json(bundle_file, {"kind": "ehr-fed site bundle", **bundle.to_dict()})
    _print({"site_id": sid, "fingerprint": bundle.fingerprint(), "key_file": str(site_file),
            "bundle": str(bundle_file), "encrypted": secret is not None,
            "next": f"send {bundle_file.name} to the other sites and read them the fingerprint out of band"})
    return 0


def _parse_peer(text: str) -> tuple[str, str]:
    from ehr_fed.federation.keys import normalize_fingerprint

    sid, sep, fp = str(text).partition("=")
    if not sep or not sid.strip() or not fp.strip():
        raise KeysUsageError(f"--peer {text!r}: expected ID=FINGERPRINT, e.g. site_b=1a2b-3c4d-5e6f-7a8b-9c0d")
    return sid.strip(), normalize_fingerprint(fp.strip())


def pin(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import SitePublicBundle

    if not args.peer and not args.bundle:
        raise KeysUsageError("nothing to do: give --peer ID=FINGERPRINT and/or --bundle FILE")
    peers = [_parse_peer(p) for p in args.peer]
    bundles = [SitePublicBundle.from_dict(read_kind(b, "bundle")[1]) for b in args.bundle]
    secret = _passphrase(args)
    keys = _load_site(args.keys, secret)
    for sid, fp in peers:
        if sid == keys.site_id:
            raise KeysUsageError(f"--peer {sid}=...: that is this site itself; pin the other members")
        old = keys.pinned.get(sid)
        if old and old != fp:
            if not args.force:
                raise KeysUsageError(f"site {keys.site_id} already pinned {old} for {sid!r}, not {fp}; if "
                                     f"{sid} really made new keys, confirm with its administrator and pass "
                                     "--force")
            keys.peers.pop(sid, None)
        keys.pin(sid, fp)
    for b in bundles:  # all or nothing: a refused bundle leaves the key file as it was
        keys.accept_bundle(b)
    _save_site(keys, args.keys, secret)
    _print({"site_id": keys.site_id, "pinned": dict(sorted(keys.pinned.items())),
            "accepted": sorted(s for s in keys.peers if s != keys.site_id),
            "not_yet_accepted": sorted(set(keys.pinned) - set(keys.peers))})
    return 0


def deal(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import deal_paillier, fingerprint

    _check_bits(args.bits, args.allow_insecure)
    if args.threshold is not None and args.scheme != "threshold":
        raise KeysUsageError("--threshold applies to --scheme threshold only")
    secret = _passphrase(args)
    keys = _load_site(args.keys, secret)
    members = sorted(set(keys.peers) | {keys.site_id})
    if len(members) < 2:
        raise KeysUsageError(f"site {keys.site_id} has accepted no other member's bundle; run `ehr-fed keys "
                             "pin --keys ... --peer ID=FINGERPRINT --bundle ID.bundle.json` for each first")
    missing = sorted(set(keys.pinned) - set(keys.peers))
    if missing:
        raise KeysUsageError(f"site {keys.site_id} pinned {missing} but has not accepted their bundles; run "
                             "`ehr-fed keys pin --bundle <their bundle.json>` first")
    if (keys.paillier_private or keys.paillier_share) and not args.force:
        raise KeysUsageError(f"{args.keys} already holds a Paillier key; dealing again locks the sites out of "
                             "everything encrypted under the old one. Pass --force to deal a new key")
    out = Path(args.out)
    relay_files = {sid: out / f"{sid}.wrapped.json" for sid in members if sid != keys.site_id}
    _refuse_existing([*relay_files.values(), out / "coordinator.json"], args.force,
                     "they are the relay files of an earlier deal")
    ckeys, relay = deal_paillier(keys, args.bits, scheme=args.scheme, threshold=args.threshold,
                                 allow_insecure=args.allow_insecure)
    for sid, wrapped in relay.items():
        _write_public_json(relay_files[sid], {"kind": "ehr-fed wrapped key", **wrapped.to_dict()})
    _write_public_json(out / "coordinator.json", ckeys.to_dict())
    _save_site(keys, args.keys, secret)
    _print({"creator": keys.site_id, "scheme": ckeys.scheme, "threshold": ckeys.threshold or None,
            "members": members, "public_key": fingerprint(ckeys.paillier_public),
            "relay": [str(p) for p in relay_files.values()], "coordinator": str(out / "coordinator.json"),
            "next": "hand each <site>.wrapped.json and coordinator.json to that site (through the "
                    "coordinator is fine: only that site can open it); this process holds no secret after exit"})
    return 0


def accept(args: argparse.Namespace) -> int:
    from ehr_fed import crypto
    from ehr_fed.federation.keys import CoordinatorKeys, WrappedKey, accept_wrapped, fingerprint

    wrapped = WrappedKey.from_dict(read_kind(args.relay, "wrapped")[1])
    ckeys = CoordinatorKeys.from_dict(read_kind(args.coordinator, "coordinator")[1])
    pk = crypto.public_key_from_bytes(ckeys.paillier_public)
    crypto.check_key_size(pk.n, allow_insecure=args.allow_insecure, what=f"the Paillier key in {args.coordinator}")
    secret = _passphrase(args)
    keys = _load_site(args.keys, secret)
    _check_members(keys, ckeys, args.coordinator)
    if wrapped.kind != ("share" if ckeys.scheme == "threshold" else "private"):
        raise KeysUsageError(f"{args.relay} holds a {wrapped.kind}, but {args.coordinator} announces the "
                             f"{ckeys.scheme} scheme; they come from different deals")
    if (keys.paillier_private or keys.paillier_share) and keys.paillier_public != ckeys.paillier_public \
            and not args.force:
        raise KeysUsageError(f"{args.keys} already holds another Paillier key; accepting this one replaces it "
                             "(pass --force to do so)")
    with _insecure_test_mode(args.allow_insecure):
        accept_wrapped(keys, wrapped, ckeys.paillier_public, ckeys.verification)
    _save_site(keys, args.keys, secret)
    _print({"site_id": keys.site_id, "scheme": keys.scheme, "creator": wrapped.creator,
            "public_key": fingerprint(ckeys.paillier_public),
            "holds": "key share" if keys.scheme == "threshold" else "private key",
            "share_index": wrapped.index or None, "threshold": ckeys.threshold or None})
    return 0


@contextlib.contextmanager
def _insecure_test_mode(enabled: bool):
    """With ``--allow-insecure``: the explicit test mode (``EHR_FED_ALLOW_INSECURE_KEYS=1``) for this call,
    which is how the library's share loading accepts short keys."""
    from ehr_fed.crypto.keys import INSECURE_KEYS_ENV

    before = os.environ.get(INSECURE_KEYS_ENV)
    if enabled:
        os.environ[INSECURE_KEYS_ENV] = "1"
    try:
        yield
    finally:
        if enabled:
            if before is None:
                os.environ.pop(INSECURE_KEYS_ENV, None)
            else:
                os.environ[INSECURE_KEYS_ENV] = before


def _check_members(keys, ckeys, where) -> None:
    """coordinator.json must list exactly the members whose bundles this site accepted, with those bundles."""
    mine = set(keys.peers) | {keys.site_id}
    theirs = set(ckeys.sites)
    if keys.site_id not in theirs:
        raise KeysUsageError(f"{where} does not list this site {keys.site_id!r} as a member")
    unknown, absent = sorted(theirs - mine), sorted(mine - theirs)
    if unknown:
        raise KeysUsageError(f"{where} lists member(s) {unknown} whose bundles site {keys.site_id} has not "
                             "accepted; pin their fingerprints and accept their bundles first, or refuse the deal")
    if absent:
        raise KeysUsageError(f"{where} leaves out member(s) {absent} that site {keys.site_id} accepted")
    for sid, bundle in ckeys.sites.items():
        if keys.peers.get(sid, bundle) != bundle:
            raise KeysUsageError(
                f"{where} holds a bundle for {sid!r} with fingerprint {bundle.fingerprint()}, but site "
                f"{keys.site_id} accepted {keys.peers[sid].fingerprint()}: it was substituted; refused")


def ceremony(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import SiteKeys, fingerprint, run_ceremony

    ids = [s.strip() for s in args.sites.split(",") if s.strip()]
    if len(set(ids)) != len(ids) or not ids:
        raise KeysUsageError(f"--sites must list distinct site ids, got {ids}")
    if args.threshold is not None and args.scheme != "threshold":
        raise KeysUsageError("--threshold applies to --scheme threshold only")
    _check_bits(args.bits, args.insecure_test_keys)
    out = Path(args.out)
    targets = [out / f"{sid}.site.json" for sid in ids] + [out / "coordinator.json"]
    _refuse_existing(targets, args.force, "replacing them locks the sites out of models and data encrypted "
                                          "under the old keys")
    secret = _require_passphrase_or_test_mode(args)
    keys = {sid: SiteKeys.generate(sid) for sid in ids}
    ckeys = run_ceremony(keys, creator=args.creator, n_length=args.bits, allow_insecure=args.insecure_test_keys,
                         scheme=args.scheme, threshold=args.threshold)
    for sid, k in keys.items():
        _save_site(k, out / f"{sid}.site.json", secret)
    ckeys.save(out / "coordinator.json")
    _print({"public_key": fingerprint(ckeys.paillier_public), "creator": ckeys.creator, "scheme": ckeys.scheme,
            "threshold": ckeys.threshold or None, "encrypted": secret is not None,
            "fingerprints": {sid: k.public_bundle().fingerprint() for sid, k in keys.items()},
            "files": [str(p) for p in targets]})
    return 0


def show(args: argparse.Namespace) -> int:
    kind, data = read_kind(args.file)
    _print({"file": str(args.file), "kind": kind, **_describe(kind, data)})
    return 0


def _describe(kind: str, data: dict) -> dict:
    """Public facts of a key file; never a secret field."""
    import base64

    from ehr_fed.federation.keys import CoordinatorKeys, SitePublicBundle, fingerprint

    def pk_fp(b64):
        return fingerprint(base64.b64decode(b64)) if b64 else None

    if kind == "bundle":
        b = SitePublicBundle.from_dict(data)
        return {"site_id": b.site_id, "fingerprint": b.fingerprint(), "holds": "public keys only"}
    if kind == "wrapped":
        return {"recipient": data.get("recipient"), "creator": data.get("creator"),
                "holds": f"{_WRAPPED_WHAT.get(data.get('kind'), 'the private key')} wrapped for "
                         f"{data.get('recipient')} (only that site can open it)", "share_index": data.get("index") or None}
    if kind == "coordinator":
        c = CoordinatorKeys.from_dict(data)
        return {"scheme": c.scheme, "threshold": c.threshold or None, "creator": c.creator or None,
                "public_key": fingerprint(c.paillier_public) if c.paillier_public else None,
                "members": {s: b.fingerprint() for s, b in sorted(c.sites.items())},
                "share_index": dict(c.share_index) or None, "holds": "public material only"}
    peers = data.get("peers") or {}
    own = peers.get(data["site_id"])
    stated = data.get("fingerprint")
    fp = SitePublicBundle.from_dict(own).fingerprint() if own else stated
    if "encrypted" in data:
        scheme, has_pk = data.get("scheme") or "single", bool(data.get("paillier_public"))
        holds = ("key share (threshold scheme)" if scheme == "threshold" else "private key (single scheme)") \
            if has_pk else "identity keys only (no Paillier key yet)"
    else:
        holds = ("private key (single scheme)" if data.get("paillier_private")
                 else "key share (threshold scheme)" if data.get("paillier_share")
                 else "identity keys only (no Paillier key yet)")
    info = {"site_id": data["site_id"], "scheme": data.get("scheme") or "single", "fingerprint": fp,
            "public_key": pk_fp(data.get("paillier_public")), "holds": holds,
            "encrypted_at_rest": "encrypted" in data,
            "pinned": dict(sorted((data.get("pinned") or {}).items())),
            "accepted": sorted(s for s in peers if s != data["site_id"])}
    if own and stated and stated != fp:
        info["warning"] = f"the file states fingerprint {stated}, but its own bundle gives {fp}"
    return info
