"""The ``ehr-fed`` command line.

Each sub-command lives in its own module of :mod:`ehr_fed.cli` that defines
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from ehr_fed import __version__

#: modules of ehr_fed.cli, each adding its own sub-commands
COMMAND_MODULES = (
    "harmonize",
    "mapping",
    "synth",
    "keys",
    "stats",
    "train",
    "evaluate",
    "predict",
    "site",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ehr-fed",
        description="Federated analytics on hospital EHR data: harmonize, analyse, train, use.",
    )
    parser.add_argument("--version", action="version", version=f"ehr-fed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        spec = importlib.util.find_spec(f"ehr_fed.cli.{name}")
        if spec is None:
            continue
        importlib.import_module(f"ehr_fed.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
