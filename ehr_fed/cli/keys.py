"""``ehr-fed keys``: the key ceremony and key file inspection."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("keys", help="site keys and the Paillier key ceremony")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    c = sub.add_parser("ceremony", help="run the key ceremony for the given sites and write key files",
                       description="One site (--creator, default the first) creates the Paillier keypair "
                                   "and hands its private key to every other site wrapped under that "
                                   "site's own X25519 key. Writes <out>/<site>.site.json (0600) per site "
                                   "and <out>/coordinator.json (public material only).")
    c.add_argument("--sites", required=True, help="comma-separated site ids")
    c.add_argument("--out", required=True, help="directory for the key files")
    c.add_argument("--creator", help="site that creates the Paillier keypair")
    c.add_argument("--bits", type=int, default=2048, help="Paillier modulus size (>= 2048)")
    c.add_argument("--allow-insecure", "--insecure-test-keys", dest="insecure_test_keys", action="store_true", help="allow < 2048 bits (tests only)")
    c.add_argument("--force", action="store_true", help="overwrite existing key files in --out")
    c.set_defaults(func=ceremony)
    s = sub.add_parser("show", help="print the public part of a key file")
    s.add_argument("file")
    s.set_defaults(func=show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def ceremony(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import SiteKeys, fingerprint, run_ceremony

    ids = [s.strip() for s in args.sites.split(",") if s.strip()]
    if len(set(ids)) != len(ids) or not ids:
        print(f"ehr-fed keys ceremony: --sites must list distinct site ids, got {ids}", file=sys.stderr)
        return 2
    out = Path(args.out)
    targets = [out / f"{sid}.site.json" for sid in ids] + [out / "coordinator.json"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        print(f"ehr-fed keys ceremony: key files already exist ({', '.join(existing)}); replacing them "
              "locks the sites out of models and data encrypted under the old keys. To do so anyway, "
              "pass --force to overwrite them, or choose another --out", file=sys.stderr)
        return 2
    keys = {sid: SiteKeys.generate(sid) for sid in ids}
    try:
        ckeys = run_ceremony(keys, creator=args.creator, n_length=args.bits,
                             allow_insecure=args.insecure_test_keys)
    except ValueError as exc:
        print(f"ehr-fed keys ceremony: {exc}", file=sys.stderr)
        return 2
    for sid, k in keys.items():
        k.save(out / f"{sid}.site.json")
    ckeys.save(out / "coordinator.json")
    print(json.dumps({"public_key": fingerprint(ckeys.paillier_public), "creator": ckeys.creator,
                      "files": [str(out / f"{s}.site.json") for s in ids] + [str(out / "coordinator.json")]},
                     indent=1))
    return 0


def show(args: argparse.Namespace) -> int:
    from ehr_fed.federation.keys import fingerprint

    try:
        data = json.loads(Path(args.file).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        print(f"error: {args.file} is not a key file (expected the JSON written by ehr-fed keys ceremony)",
              file=sys.stderr)
        return 1
    pub = data.get("paillier_public")
    import base64
    info = {"site_id": data.get("site_id"), "holds_private_key": bool(data.get("paillier_private")),
            "public_key": fingerprint(base64.b64decode(pub)) if pub else None,
            "peers": sorted(data.get("peers") or data.get("sites") or [])}
    print(json.dumps(info, indent=1))
    return 0
