"""``ehr-fed stats``: federated descriptive statistics of a federation, to JSON or HTML."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("stats", help="federated descriptive statistics (Table 1, histograms, ...)",
                              description="Federated statistics of every feature through the sites' "
                                          "privacy policy; writes a JSON or HTML report.")
    p.add_argument("--federation", required=True, help="federation YAML (as written by `ehr-fed synth`)")
    p.add_argument("--study", help="study spec YAML (default: the federation's)")
    p.add_argument("--out", required=True, help="output file, .json or .html")
    p.add_argument("--columns", help="comma-separated features (default: all of the study)")
    p.add_argument("--plaintext", action="store_true", help="no encryption (testing only)")
    p.add_argument("--key-bits", type=int, default=None, help="Paillier key size (default from the YAML)")
    p.add_argument("--allow-insecure", "--insecure-test-keys", dest="insecure_test_keys", action="store_true", help="allow keys < 2048 bits (tests only)")
    p.add_argument("--cache-dir", help="feature table cache (default: beside the federation YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ehr_fed.federation import Federation
    from ehr_fed.stats.report import build_report, write_html, write_json

    if not args.out.endswith((".json", ".html")):
        print(f"ehr-fed stats: --out must end in .json or .html, got {args.out!r}", file=sys.stderr)
        return 2
    from ehr_fed.cli.filekind import expect_kind

    expect_kind(args.federation, "federation", "ehr-fed stats")
    fed = Federation.from_yaml(args.federation, study=args.study, encrypted=not args.plaintext,
                               key_bits=args.key_bits, allow_insecure=args.insecure_test_keys,
                               cache_dir=args.cache_dir)
    try:
        from ehr_fed.cli.common import check_columns, check_enough_sites

        cols = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        check_columns(fed, cols, "--columns")
        check_enough_sites(fed)
        report = build_report(fed, cols)
    finally:
        fed.close()
    (write_html if args.out.endswith(".html") else write_json)(report, args.out)
    log.info("wrote %s", args.out)
    return 0
