"""What every benchmark shares: the checks that decide its exit code, and how it prints its report.

A benchmark records each check it reports with :func:`check` (a name, whether it passed, and the figures
behind it) and ends with ``sys.exit(finish(report))``: the JSON report goes to stdout with a ``checks``
section and ``all_checks_passed``, and the exit code is 1 when any check failed (the failed checks are named
on stderr), so ``make bench`` and CI stop on a wrong result instead of printing it beside the timings.

Figures that are computed rather than measured end to end live under keys that start with ``estimated``
(``estimated_wall_s``, ``estimated_ratios``, ...) and carry a ``method`` line saying how they were computed.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def check(report: dict, name: str, passed: bool, **detail: Any) -> bool:
    """Record the check ``name`` in ``report["checks"]`` (with the figures in ``detail``); return ``passed``."""
    report.setdefault("checks", {})[name] = {"passed": bool(passed), **detail}
    return bool(passed)


def child_ran(report: dict, name: str, result: dict) -> bool:
    """Record the check ``name``: the child run whose output is ``result`` succeeded (no ``error`` key)."""
    if "error" in result:
        return check(report, name, False, error=result["error"])
    return check(report, name, True)


def finish(report: dict) -> int:
    """Print ``report`` as JSON on stdout; return the exit code: 0 if every recorded check passed, else 1."""
    checks = report.get("checks", {})
    failed = [name for name, c in checks.items() if not c["passed"]]
    report["all_checks_passed"] = not failed
    json.dump(report, sys.stdout, indent=2, default=str)
    print()
    if failed:
        print(f"{report.get('benchmark', 'benchmark')}: check(s) failed: {', '.join(failed)} "
              "(see \"checks\" in the JSON report)", file=sys.stderr)
        return 1
    return 0
