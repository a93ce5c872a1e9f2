"""Problems found in a mapping config or study spec, reported all at once.

A :class:`Problem` names the file, the line, a short reason code (stable, so
tests and tools can match on it), what is wrong and what would fix it. A
:class:`ConfigError` carries every problem of one validation pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in a YAML config.

    Parameters
    ----------
    file : str
        The config file (as given by the user).
    line : int or None
        1-based line of the offending key or value; None when unknown.
    code : str
        Reason code: ``yaml_syntax``, ``unknown_key``, ``wrong_type``, ``missing_key``,
        ``unknown_feature_kind``, ``unknown_concept_set``, ``unknown_lab``, ``unknown_unit``,
        ``unknown_vocabulary``, ``duplicate_name``, ``duplicate_key``, ``invalid_value``, ...
    message : str
        What is wrong.
    fix : str
        What to do about it.
    """

    file: str
    line: int | None
    code: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}: {self.code} {self.message}{fix}"


class ConfigError(ValueError):
    """A config file has problems; ``problems`` lists every one found in one pass."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))

    @property
    def codes(self) -> list[str]:
        """The reason codes, in order (handy in tests)."""
        return [p.code for p in self.problems]


def suggest(name: str, valid: Iterable[str]) -> str:
    """Human hint listing the valid names, with the closest match first when there is one."""
    valid = sorted(set(valid))
    close = difflib.get_close_matches(str(name), valid, n=1)
    listing = ", ".join(valid[:15]) + (f", ... ({len(valid)} in all)" if len(valid) > 15 else "")
    listing = listing if valid else "(none defined)"
    if close:
        return f"did you mean {close[0]!r}? valid: {listing}"
    return f"use one of: {listing}"
