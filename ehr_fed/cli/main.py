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
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen sub-command; a user mistake becomes one ``error:`` line and an exit code.

    Errors the user can fix (see :func:`ehr_fed.cli.common.user_error_types`) exit 1 (2 for usage
    mistakes); anything else is a bug: exit 70 with a one-line message, the traceback only with
    ``--verbose``.
    """
    import traceback

    from ehr_fed.cli.common import EXIT_ERROR, EXIT_USAGE, UsageError, user_error_types, user_message

    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_error_types() as exc:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    except Exception as exc:  # a bug, not a user mistake: still no traceback unless asked for
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: unexpected {type(exc).__name__} in 'ehr-fed {args.command}': {exc} (this is a bug; "
              "rerun with --verbose for the traceback and report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
