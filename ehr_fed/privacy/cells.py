"""Small-cell suppression and merging: no count in ``1 .. min_cell_count-1`` leaves a site."""

from __future__ import annotations

import numpy as np


def small_cells(counts: np.ndarray, min_count: int) -> np.ndarray:
    """Boolean mask of cells that must not be released: ``0 < n < min_count``.

    Empty cells (0) are released: they say nothing about any person.
    """
    counts = np.asarray(counts, dtype=float)
    return (counts > 0) & (counts < min_count)


def suppress(counts: np.ndarray, min_count: int, *dependents: np.ndarray):
    """Replace small cells by NaN in ``counts`` and in every same-shaped ``dependents`` array.

    Returns
    -------
    counts, dependents..., suppressed_indices
        Float copies with suppressed cells NaN, and the flat indices that were suppressed.
    """
    counts = np.array(counts, dtype=float)
    mask = small_cells(counts, min_count)
    out = [counts]
    for dep in dependents:
        dep = np.array(dep, dtype=float)
        if dep.shape[: mask.ndim] != mask.shape:
            raise ValueError(
                f"dependent array of shape {dep.shape} does not start with the count shape {mask.shape}"
            )
        dep[mask] = np.nan
        out.append(dep)
    counts[mask] = np.nan
    return (*out, np.flatnonzero(mask.ravel()).tolist())


def merge_histogram(counts: np.ndarray, min_count: int) -> tuple[np.ndarray, list[list[int]]]:
    """Merge adjacent 1-D histogram bins until every non-empty group holds >= ``min_count``.

    Each small bin is merged with the following bins (the last group with the previous
    one); the merged count is reported in the first bin of its group and the other bins of the
    group become 0, so the total is unchanged.

    Returns
    -------
    merged : ndarray of float, shape (n_bins,)
    groups : list of list of int
        The bin indices merged together (only groups of two or more bins).
    """
    counts = np.asarray(counts, dtype=float).ravel()
    total = counts.sum()
    if 0 < total < min_count:
        return np.full_like(counts, np.nan), [list(range(len(counts)))]
    groups: list[list[int]] = []
    cur: list[int] = []
    acc = 0.0
    for i, c in enumerate(counts):
        if c == 0 and not cur:
            continue
        cur.append(i)
        acc += c
        if acc >= min_count:
            groups.append(cur)
            cur, acc = [], 0.0
    if cur:  # a small remainder joins the previous group
        if groups:
            groups[-1].extend(cur)
        else:
            groups.append(cur)
    merged = np.zeros_like(counts)
    for g in groups:
        merged[g[0]] = counts[g].sum()
    return merged, [g for g in groups if len(g) > 1]
