"""Short waits for Flower's own loops where Flower 1.41/1.42 offers no option.

Two waits dominate a short exchange on loopback, neither of them configurable:

- an object that a message names but that is not yet stored (its sender is still uploading) is
  retried after 1 s, then 2 s, 4 s ... (``pull_objects``: ``initial_backoff=1``, ``backoff_cap=10``).
  A receiver usually learns of a message a few milliseconds before its objects are stored, so nearly
  every message waited a full second at each of its three hops;
- an idle SuperNode sleeps 3 s between pulls (see :mod:`flower_supernode`).

:func:`fast_object_pulls` makes the object retries of one Flower module start at ``initial`` seconds
(capped at ``cap``). It changes only these defaults of Flower's own function, in the process that calls
it (ehr-fed's ServerApp, the site's SuperNode launcher and ClientApp).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

INITIAL_BACKOFF = 0.005
BACKOFF_CAP = 0.1


def _paced(fn: Any, initial: float, cap: float) -> Any:
    if getattr(fn, "_ehrfed_paced", False):
        return fn

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", initial)
        kwargs.setdefault("backoff_cap", cap)
        return fn(*args, **kwargs)

    wrapped._ehrfed_paced = True  # type: ignore[attr-defined]
    return wrapped


def fast_object_pulls(module: ModuleType, initial: float = INITIAL_BACKOFF, cap: float = BACKOFF_CAP) -> None:
    """Retry missing objects after ``initial`` s (doubling up to ``cap`` s) in ``module``'s object pulls."""
    for name in ("pull_objects", "pull_and_inflate_object_from_tree"):
        if hasattr(module, name):
            setattr(module, name, _paced(getattr(module, name), initial, cap))
