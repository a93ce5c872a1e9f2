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
    if isinstance(exc, FileExistsError) and exc.filename:
        return f"{exc.filename} is a file; a folder was expected there (choose another path)"
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


def check_enough_sites(fed) -> None:
    """Raise a :class:`~ehr_fed.privacy.DisclosureError` before any round when the federation lists fewer
    sites than its privacy policy's ``min_sites`` (every site would refuse every sum: retrying cannot help)."""
    from ehr_fed.privacy import DisclosureError

    ids = list(fed.site_ids)
    need = int(fed.policy.min_sites)
    nodes = getattr(getattr(fed, "transport", None), "nodes", None)
    if isinstance(nodes, dict):  # in-process sites may hold stricter policies of their own
        need = max([need, *(int(n.policy.min_sites) for n in nodes.values() if getattr(n, "policy", None))])
    if len(ids) < need:
        raise DisclosureError(
            f"the federation lists {len(ids)} site(s) ({', '.join(ids)}), and the sites' privacy policy requires "
            f"min_sites={need}: every sum over fewer sites is refused. Add sites to the federation YAML's "
            "`sites:` (or, if every site agrees, lower privacy.min_sites)", rule="min_sites")


def check_columns(fed, columns: list[str] | None, flag: str) -> None:
    """Raise :class:`UsageError` when ``columns`` names features the federation's study does not have."""
    if not columns:
        return
    feats = getattr(getattr(fed, "study", None), "features", None)
    if not feats:
        return
    names = [f if isinstance(f, str) else f.name for f in feats]
    unknown = [c for c in columns if c not in names]
    if unknown:
        import difflib

        hints = {c: difflib.get_close_matches(c, names, n=1) for c in unknown}
        said = ", ".join(f"{c!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for c, h in hints.items())
        raise UsageError(f"{flag}: {said} not feature(s) of the study; its features are: {', '.join(names)}")
