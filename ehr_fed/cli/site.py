"""``ehr-fed site``: check a site, read its audit log, and run its processes for a Flower federation."""

from __future__ import annotations

import argparse
import json
import sys


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
        help="serve the site on a local socket for its ClientApp (see docs/deployment.md)",
        description="Keep the site (feature table, policy, keys, audit log) loaded and answer the "
        "messages the site's ClientApp ('ehr-fed site clientapp') relays over a Unix socket. The "
        "socket's folder must have mode 0700; only this user (and --allow-uid) may connect.",
    )
    s.add_argument("config", help="the site YAML")
    s.add_argument("--socket", required=True, help="path of the Unix socket to create (mode 0600, folder 0700)")
    s.add_argument("--state-dir", help="where the replay memory is kept (default: state/ beside the site YAML)")
    s.add_argument("--allow-uid", type=int, action="append", default=[],
                   help="also accept this uid as a peer (a ClientApp run as another system user)")
    s.set_defaults(func=serve)
    ca = sub.add_parser(
        "clientapp",
        help="the site's long-lived Flower ClientApp: runs only this installed ehr-fed app",
        description="Answer the tasks of a SuperNode started with '--isolation process': only runs whose "
        "app bundle (FAB) is the one shipped with this ehr-fed are answered, by relaying to "
        "'ehr-fed site serve'; any other app is refused unrun.",
    )
    ca.add_argument("--runtime-api", required=True, help="the SuperNode's Runtime API, host:port (its --host/--port)")
    ca.add_argument("--socket", required=True, help="the site service's socket")
    ca.add_argument("--trust-fab", action="append", default=[], metavar="SHA256",
                    help="also run the app bundle with this SHA-256 (after reviewing it)")
    from ehr_fed.federation.transports import flower_clientapp as fca
    from ehr_fed.federation.transports import flower_supernode as fsn

    fca.add_poll_arguments(ca, fca.DEFAULT_POLL, fca.DEFAULT_HOT_POLL, fca.DEFAULT_HOT_WINDOW)
    fca.add_notify_argument(ca)
    ca.set_defaults(func=clientapp)
    sn = sub.add_parser(
        "supernode",
        help="run Flower's SuperNode with short waits (arguments after -- go to flower-supernode)",
        description="Flower's flower-supernode, unchanged except for its waits: the idle poll (3 s in "
        "Flower 1.41/1.42) is --hot-poll seconds within --hot-window seconds of the last message, "
        "--poll-interval seconds otherwise; its waits for a reply (0.5 s) are 5 ms.",
    )
    fca.add_poll_arguments(sn, fsn.DEFAULT_POLL, fsn.DEFAULT_HOT_POLL, fsn.DEFAULT_HOT_WINDOW)
    fca.add_notify_argument(sn)
    sn.add_argument("supernode_args", nargs="*", metavar="-- FLOWER-SUPERNODE-ARGS")
    sn.set_defaults(func=supernode)
    nk = sub.add_parser("node-key", help="create the SuperNode's authentication key pair (register the .pub)")
    nk.add_argument("--out", required=True, help="folder for supernode.key (0600) and supernode.pub")
    nk.add_argument("--name", default="supernode")
    nk.set_defaults(func=node_key)
    ah = sub.add_parser("app-hash", help="print the SHA-256 of the Flower app bundle this ehr-fed runs")
    ah.set_defaults(func=app_hash)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def check(args: argparse.Namespace) -> int:
    from ehr_fed.cli.filekind import expect_kind
    from ehr_fed.federation import SiteNode

    expect_kind(args.config, "site", "ehr-fed site check")
    node = SiteNode.from_config(args.config)
    print(json.dumps({"site_id": node.site_id, "rows": len(node.table), "study": node.study,
                      "policy": node.policy.model_dump(), "holds_private_key": node.holds_private_key,
                      "peers": sorted(node.keys.peers)}, indent=1))
    return 0


def audit(args: argparse.Namespace) -> int:
    from collections import Counter

    entries = _audit_entries(args.log)
    by = Counter((e["task"], e["action"], e["kind"]) for e in entries)
    print(json.dumps({"entries": len(entries), "bytes": sum(e.get("bytes", 0) for e in entries),
                      "by_task": [{"task": t, "action": a, "kind": k, "n": n} for (t, a, k), n in by.items()]},
                     indent=1))
    return 0


def _audit_entries(path: str) -> list[dict]:
    """The entries of a site's audit log; a file that is not one is named as what it is."""
    from ehr_fed.cli.filekind import file_kind
    from ehr_fed.privacy import AuditLog

    expected = "an audit log (one JSON object per line, written by a site: its `audit_log:`)"
    try:
        entries = AuditLog.read(path)
    except ValueError as exc:  # json.JSONDecodeError: not JSON lines
        found = file_kind(path)
        what = f" it is {found[0]} file ({found[1]});" if found else ""
        raise ValueError(f"{path} is not {expected}:{what} {exc}") from None
    bad = next((i for i, e in enumerate(entries, 1)
                if not isinstance(e, dict) or not {"task", "action", "kind"} <= set(e)), None)
    if bad is not None:
        raise ValueError(f"{path} is not {expected}: entry {bad} lacks task, action and kind")
    return entries


def serve(args: argparse.Namespace) -> int:
    from ehr_fed.cli.filekind import expect_kind
    from ehr_fed.federation.transports.flower_site import SiteServiceError
    from ehr_fed.federation.transports.flower_site import serve as serve_site

    expect_kind(args.config, "site", "ehr-fed site serve")
    try:
        serve_site(args.config, args.socket, args.state_dir, tuple(args.allow_uid))
    except SiteServiceError as exc:
        print(f"ehr-fed site serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def clientapp(args: argparse.Namespace) -> int:
    from ehr_fed.federation.transports.flower_clientapp import run

    return run(args.runtime_api, args.socket, tuple(args.trust_fab), args.poll_interval,
               hot_poll=args.hot_poll, hot_window=args.hot_window, notify=args.notify)


def supernode(args: argparse.Namespace) -> int:
    from ehr_fed.federation.transports.flower_supernode import run

    run(list(args.supernode_args), args.poll_interval, args.hot_poll, args.hot_window, args.notify)
    return 0


def node_key(args: argparse.Namespace) -> int:
    from ehr_fed.federation.transports.flower_tls import make_supernode_auth_keys

    keys = make_supernode_auth_keys(args.out, args.name)
    print(json.dumps({"private_key": str(keys.private_key), "public_key": str(keys.public_key),
                      "next": f"on the coordinator host: flwr supernode register {keys.public_key.name}"}, indent=1))
    return 0


def app_hash(args: argparse.Namespace) -> int:
    from ehr_fed.federation.transports.flower_clientapp import trusted_fab_hashes

    print(next(iter(trusted_fab_hashes())))
    return 0
