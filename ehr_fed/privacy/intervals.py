"""Histograms over requested edges without differencing between releases.

Merging small bins (:func:`ehr_fed.privacy.cells.merge_histogram`) protects one histogram. Two histograms of
the same column over different edges do not protect each other: with ``[0, 50)`` and ``[0, 50.01)`` both
large, their difference counts the patients aged 50.00-50.01. In general every *interior boundary* ``b`` a
release shows makes the cumulative count ``#(x < b)`` known (the bins of one release sum to the column's
total), so whoever holds several releases knows the count of every interval between any two boundaries
ever shown, from any release.

The :class:`IntervalLedger` therefore keeps, per column, every boundary already shown with its cumulative
count(s), and a new histogram keeps a requested boundary only if every gap between consecutive known
boundaries (old and kept) holds 0 or at least ``min_count`` rows; the bins between kept boundaries are
merged. Releases split by the outcome (``by="label"``) check each group's gaps, and also feed the ledger of
the whole column (their groups sum to it), so ``overall - group`` gives nothing below the minimum either.

The ledger lives at the site that decrypts the sums and persists with its protocol state; it assumes the
column's releases are all over one participant set, which the sites' differencing records enforce (a
computation over another set is refused).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["IntervalLedger", "merge_against"]


def _ok(count: np.ndarray, min_count: int) -> bool:
    """Every count 0 (below one half) or at least ``min_count`` (NaN is neither)."""
    return all(abs(c) < 0.5 or c >= min_count for c in np.asarray(count, dtype=float).ravel().tolist())


class IntervalLedger:
    """Known boundaries of one column: ``{boundary: cumulative counts below it (one per group)}`` and the
    column's total(s). ``groups`` is 1 for whole-column releases, 2 for ``by="label"``."""

    def __init__(self, groups: int, points: Mapping[float, Any] | None = None, total: Any = None):
        self.groups = int(groups)
        self.points: dict[float, np.ndarray] = {float(b): np.asarray(c, dtype=float).reshape(self.groups)
                                                for b, c in (points or {}).items()}
        self.total = None if total is None else np.asarray(total, dtype=float).reshape(self.groups)
        self._order: list[float] = sorted(self.points)  # the boundaries, kept sorted by add()

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "points": [[b, c.tolist()] for b, c in sorted(self.points.items())],
                "total": None if self.total is None else self.total.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntervalLedger:
        return cls(int(d["groups"]), {float(b): c for b, c in d["points"]}, d.get("total"))

    # -- the rule ------------------------------------------------------------------------------
    def admissible(self, boundary: float, cum: np.ndarray, min_count: int) -> bool:
        """Would showing ``boundary`` (with cumulative counts ``cum``) leave every gap at 0 or >= min?"""
        bs = self._order
        i = bisect_left(bs, boundary)
        if i < len(bs) and bs[i] == boundary:
            return True  # already known
        left = self.points[bs[i - 1]] if i > 0 else np.zeros(self.groups)
        right = self.points[bs[i]] if i < len(bs) else self.total
        if not _ok(cum - left, min_count):
            return False
        return right is None or _ok(right - cum, min_count)

    def add(self, boundary: float, cum: np.ndarray) -> None:
        b = float(boundary)
        if b not in self.points:
            insort(self._order, b)
        self.points[b] = np.asarray(cum, dtype=float).reshape(self.groups)


def merge_against(hist: np.ndarray, edges: np.ndarray, min_count: int,
                  ledgers: list[IntervalLedger]) -> tuple[np.ndarray, list[list[int]]]:
    """Merge the bins of one column's histogram(s) so no gap of known boundaries falls below ``min_count``.

    Parameters
    ----------
    hist : ndarray (n_groups, n_bins)
        Pooled counts per group over ``edges`` (values outside the edges are in the outer bins, so only the
        interior edges ``edges[1:-1]`` are boundaries).
    ledgers : list of IntervalLedger
        The ledgers the release must respect and will update: the column's whole-column ledger (checked
        with the summed groups) and, for a grouped release, the grouped ledger (checked per group).

    Returns
    -------
    merged : ndarray (n_groups, n_bins)
        Each kept interval's counts in its first bin, 0 in the other bins of the interval (totals survive);
        NaN everywhere when a group's total is itself in 1 .. min_count-1.
    groups : list of list of int
        The bin indices merged together (intervals of two or more bins).
    """
    h = np.asarray(hist, dtype=float)
    if h.ndim != 2:
        raise ValueError(f"merge_against expects (n_groups, n_bins), got shape {h.shape}")
    n_bins = h.shape[1]
    edges = np.asarray(edges, dtype=float).ravel()
    if edges.size != n_bins + 1:
        raise ValueError(f"{n_bins} bins need {n_bins + 1} edges, got {edges.size}")
    totals = h.sum(axis=1)
    if not _ok(totals, min_count) or not _ok(totals.sum(), min_count):
        return np.full_like(h, np.nan), [list(range(n_bins))]
    views = []
    for led in ledgers:
        if led.groups == h.shape[0]:
            views.append((led, lambda v: v))
        elif led.groups == 1:
            views.append((led, lambda v: np.array([v.sum()])))
        else:
            raise ValueError(f"a ledger of {led.groups} groups cannot check a release of {h.shape[0]}")
        total = views[-1][1](totals)
        if led.total is None:
            led.total = total
        elif not np.allclose(led.total, total):
            raise ValueError("the column's total differs from its earlier releases (another participant set "
                             "or table): refusing to compare the releases")
    cum = np.cumsum(h, axis=1)
    kept = [0]
    for i in range(1, n_bins):  # boundary edges[i] lies between bin i-1 and bin i
        b, c = float(edges[i]), cum[:, i - 1]
        if all(led.admissible(b, view(c), min_count) for led, view in views):
            for led, view in views:
                led.add(b, view(c))
            kept.append(i)
    kept.append(n_bins)
    merged = np.zeros_like(h)
    groups = []
    for a, z in zip(kept[:-1], kept[1:], strict=True):
        merged[:, a] = h[:, a:z].sum(axis=1)
        if z - a > 1:
            groups.append(list(range(a, z)))
    return merged, groups
