"""``ehr-fed site``: inspect a site configuration and its audit log."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("site", help="site runtime: check a site config, show its audit log")
    sub = p.add_subparsers(dest="site_command", metavar="ACTION")
    c = sub.add_parser("check", help="load a site YAML (table, policy, keys) and print a summary")
    c.add_argument("config")
    c.set_defaults(func=check)
    a = sub.add_parser("audit", help="summarise a site's audit log (what it released)")
    a.add_argument("log")
    a.set_defaults(func=audit)
    s = sub.add_parser(
        "serve",
        help="serve the site on a local socket for its Flower SuperNode (see docs/deployment.md)",
        description="Keep the site (feature table, policy, keys, audit log) loaded and answer the "
        "messages its SuperNode's ClientApp relays over a Unix socket. Start the SuperNode with "
        "--node-config 'site-id=\"ID\" site-config=\"CONFIG\" site-socket=\"SOCKET\"'.",
    )
    s.add_argument("config", help="the site YAML")
    s.add_argument("--socket", required=True, help="path of the Unix socket to create (mode 0600)")
    s.set_defaults(func=serve)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def check(args: argparse.Namespace) -> int:
    from ehr_fed.federation import SiteNode

    node = SiteNode.from_config(args.config)
    print(json.dumps({"site_id": node.site_id, "rows": len(node.table), "study": node.study,
                      "policy": node.policy.model_dump(), "holds_private_key": node.holds_private_key,
                      "peers": sorted(node.keys.peers)}, indent=1))
    return 0


def audit(args: argparse.Namespace) -> int:
    from collections import Counter

    from ehr_fed.privacy import AuditLog

    entries = AuditLog.read(args.log)
    by = Counter((e["task"], e["action"], e["kind"]) for e in entries)
    print(json.dumps({"entries": len(entries), "bytes": sum(e.get("bytes", 0) for e in entries),
                      "by_task": [{"task": t, "action": a, "kind": k, "n": n} for (t, a, k), n in by.items()]},
                     indent=1))
    return 0


def serve(args: argparse.Namespace) -> int:
    from ehr_fed.federation.transports.flower_site import serve as serve_site

    try:
        serve_site(args.config, args.socket)
    except KeyboardInterrupt:
        pass
    return 0
