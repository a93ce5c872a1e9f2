"""A site's SuperNode tells its ClientApp that a task is waiting: one byte through a local FIFO.

In process isolation the site's ClientApp learns of a task only by asking the SuperNode's Runtime API
(``AcquireTask``), and every ask is a request the SuperNode serves: polling every 50 ms was a third of
the requests of an exchange and most of the SuperNode's CPU. With ``--notify PATH`` on both
``ehr-fed site supernode`` and ``ehr-fed site clientapp``, the SuperNode writes one byte to the FIFO
``PATH`` each time it creates a task for its ClientApp, and the ClientApp asks the Runtime API
when the byte arrives (and, as before, every ``--poll-interval`` seconds in case one was missed).
The byte carries nothing: the task, its message and the FAB check go through Flower's Runtime API as
without it. Put the FIFO in a folder only the site's users can reach (the socket folder, 0700).
"""

from __future__ import annotations

import errno
import os
import select
import stat
from pathlib import Path


class NotifyError(RuntimeError):
    """The notification path cannot be used."""


def ensure_fifo(path: str | Path) -> Path:
    """Create the FIFO ``path`` (mode 0600) unless it exists; refuse a path that is something else."""
    path = Path(path)
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise NotifyError(f"cannot create the notification FIFO {path} ({exc.strerror}): "
                          "pass --notify a path in an existing folder") from None
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        raise NotifyError(f"{path} exists and is not a FIFO: pass --notify a new path (it is created)")
    return path


class Notifier:
    """The SuperNode's side: :meth:`notify` writes one byte, never blocks, never fails the node."""

    def __init__(self, path: str | Path):
        self.path = ensure_fifo(path)
        self._fd: int | None = None

    def notify(self) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(self._fd, b"\0")
        except OSError as exc:
            # ENXIO: no ClientApp has it open; EAGAIN: bytes already waiting; EPIPE: the reader left
            if exc.errno == errno.EPIPE and self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Waiter:
    """The ClientApp's side: :meth:`wait` returns True as soon as a byte arrived, False after ``timeout``."""

    def __init__(self, path: str | Path):
        self.path = ensure_fifo(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # a writer of our own keeps the FIFO from reading as closed while no SuperNode has it open
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        for fd in (self._fd, self._keep):
            try:
                os.close(fd)
            except OSError:
                pass
