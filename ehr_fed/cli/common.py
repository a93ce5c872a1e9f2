"""What every ``ehr-fed`` command shares: user errors as one message, overwrite guards, private files.

A user mistake (a missing file, a typo in a path, an invalid config, a refusing site, an unwritable
output) ends a command with one ``error: ...`` line on stderr and a non-zero exit code, never a traceback;
:func:`user_message` turns the exceptions the toolkit raises for such mistakes into that line.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: exit codes shared by the commands (``predict`` documents its own, compatible set)
EXIT_ERROR, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """A command-line mistake found before any work started (exit code 2)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the user can fix this" (their message is the whole story)."""
    from ehr_fed.federation import FederationError
    from ehr_fed.federation.config import FederationConfigError
    from ehr_fed.mapping import ConfigError
    from ehr_fed.models.persistence import ModelFormatError
    from ehr_fed.privacy import DisclosureError

    types: list[type[BaseException]] = [UsageError, FederationError, FederationConfigError, ConfigError,
                                        ModelFormatError, DisclosureError, ValueError, KeyError, OSError]
    for module, name in (("ehr_fed.evaluation", "EvaluationError"), ("ehr_fed.cohort.table", "PersonKeyError"),
                         ("ehr_fed.cohort", "QuarantineThresholdError")):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # pragma: no cover - optional parts of the toolkit
            pass
    return tuple(types)


def user_message(exc: BaseException) -> str:
    """One readable line (or block) for a user mistake."""
    from ehr_fed.mapping import ConfigError

    if isinstance(exc, ConfigError):
        problems = [str(p) for p in getattr(exc, "problems", [])]
        return "\n".join(problems + [f"{len(problems)} problem(s) in the config files; fix them and rerun"])
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or directory; check the path"
    if isinstance(exc, IsADirectoryError) and exc.filename:
        return f"{exc.filename} is a folder, a file was expected"
    if isinstance(exc, NotADirectoryError) and exc.filename:
        return f"{exc.filename}: a part of this path is a file, not a folder"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"{exc.filename}: permission denied; choose a path you can write (or read)"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{exc.filename or 'output'}: no space left on the device"
    if isinstance(exc, KeyError):
        return str(exc.args[0]) if exc.args else "missing key"
    text = str(exc).strip()
    return text or type(exc).__name__


def check_overwrite(paths: list[Path] | Path, force: bool, what: str) -> None:
    """Raise :class:`UsageError` when any of ``paths`` exists and ``force`` is false."""
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise UsageError(f"{shown} already exist(s); pass --force to overwrite the {what}")


def check_writable(path: Path) -> None:
    """Raise :class:`UsageError` unless ``path`` (a file to write) can be created or replaced.

    Run before long work, so an unwritable output fails in a second, not after the whole computation.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name to write")
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied in {probe}; choose another --out")


def private_file(path: Path) -> Path:
    """Restrict ``path`` to its owner (mode 0600): for patient-level outputs."""
    os.chmod(path, 0o600)
    return path
