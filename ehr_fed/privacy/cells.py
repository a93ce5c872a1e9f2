"""Small-cell suppression and merging: no count in ``1 .. min_cell_count-1`` leaves a site, neither
directly nor by subtraction from other released numbers.

Primary suppression hides every cell with ``0 < n < min_count``. That is not enough when released
totals tie cells together: a hidden missing count is ``N - n``, a hidden label group is
``overall - other group``. *Complementary suppression* therefore also hides, in every linear relation
(a set of cells whose sum is released or derivable) that holds exactly one hidden cell, a second cell
(the smallest one still shown), until no relation has a single hidden cell.

Conventions used by :func:`suppress` (the function the site applies to each declared count output):

* axis 0 of a count array with two or more dimensions is a partition of the rows (the groups of a
  ``by``): its total is assumed released elsewhere (the ``by=None`` request), so along axis 0 no
  single cell may be hidden alone;
* a count and its declared dependents share the mask; a dependent that is itself a declared count
  (``{"n_missing": ("n", ...), "n": ("n_missing", ...)}``) ties the two counts, so with
  ``n + n_missing = n_rows`` released, neither can be recovered from the other.

Histograms (:func:`merge_histogram`, :func:`merge_joint`) merge adjacent bins instead, so totals
survive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Cell = tuple[str, tuple[int, ...]]


def small_cells(counts: np.ndarray, min_count: int) -> np.ndarray:
    """Boolean mask of cells that must not be released: ``0 < n < min_count``.

    Empty cells (0) are released: they say nothing about any person. NaN cells (already hidden) are
    not small.
    """
    counts = np.asarray(counts, dtype=float)
    with np.errstate(invalid="ignore"):
        return (counts > 0) & (counts < min_count)


def complementary_suppression(counts: Mapping[str, np.ndarray], hidden: Mapping[str, np.ndarray],
                              relations: Sequence[Sequence[Cell]]) -> dict[str, np.ndarray]:
    """Extend ``hidden`` so that no relation holds exactly one hidden cell.

    Parameters
    ----------
    counts : mapping of name to ndarray
        The count arrays (NaN = already hidden).
    hidden : mapping of name to bool ndarray
        Cells hidden so far (same shapes as ``counts``); not modified.
    relations : sequence of sequences of (name, index)
        Each relation is a set of cells whose sum (or signed sum) is known to whoever receives the
        release. When exactly one of its cells is hidden, the smallest shown cell of the relation is
        hidden too (ties: first listed). Repeated until stable.

    Returns
    -------
    dict of name to bool ndarray
        The extended masks.
    """
    masks = {k: np.array(v, dtype=bool) | np.isnan(np.asarray(counts[k], dtype=float)) for k, v in hidden.items()}
    for k in counts:
        masks.setdefault(k, np.isnan(np.asarray(counts[k], dtype=float)))
    changed = True
    while changed:
        changed = False
        for rel in relations:
            flags = [bool(masks[name][idx]) for name, idx in rel]
            if sum(flags) != 1 or len(rel) < 2:
                continue
            shown = [(float(counts[name][idx]), i) for i, ((name, idx), f) in enumerate(zip(rel, flags, strict=True))
                     if not f]
            _, pick = min(shown)
            name, idx = rel[pick]
            masks[name][idx] = True
            changed = True
    return masks


def partition_relations(name: str, shape: tuple[int, ...], axis: int = 0) -> list[list[Cell]]:
    """Relations of an array whose ``axis`` partitions the rows: one relation per position of the other
    axes, holding the cells along ``axis`` (their sum, the ungrouped count, is released elsewhere)."""
    if len(shape) < 2 or shape[axis] < 2:
        return []
    rest = [range(s) for i, s in enumerate(shape) if i != axis]
    out = []
    for pos in np.ndindex(*[len(r) for r in rest]):
        cells = []
        for g in range(shape[axis]):
            idx = list(pos)
            idx.insert(axis, g)
            cells.append((name, tuple(idx)))
        out.append(cells)
    return out


def suppress(counts: np.ndarray, min_count: int, *dependents: np.ndarray):
    """Hide small cells of ``counts`` (and, complementarily, their partners along the group axis) as NaN
    in ``counts`` and in every same-shaped ``dependents`` array.

    Returns
    -------
    counts, dependents..., suppressed_indices
        Float copies with hidden cells NaN, and the flat indices newly hidden in ``counts`` (primary and
        complementary; cells that were NaN on input are not listed).
    """
    counts = np.array(counts, dtype=float)
    was_nan = np.isnan(counts)
    primary = small_cells(counts, min_count)
    mask = complementary_suppression({"c": counts}, {"c": primary},
                                     partition_relations("c", counts.shape))["c"] & ~was_nan
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


def _groups(counts: np.ndarray, ok) -> list[list[int]]:
    """Adjacent-bin groups (intervals) of a sequence, each closed as soon as ``ok(sum of the group)``;
    empty bins before a group join no group; a remainder that is not ok joins the previous group."""
    groups: list[list[int]] = []
    cur: list[int] = []
    acc = np.zeros(counts.shape[1:]) if counts.ndim > 1 else 0.0
    for i in range(counts.shape[0]):
        c = counts[i]
        if not np.any(c) and not cur:
            continue
        cur.append(i)
        acc = acc + c
        if ok(acc):
            groups.append(cur)
            cur, acc = [], acc * 0
    if cur:
        if groups:  # the empty bins between them join too, so every group is an interval
            groups[-1] = list(range(groups[-1][0], cur[-1] + 1))
        else:
            groups.append(cur)
    return groups


def merge_histogram(counts: np.ndarray, min_count: int) -> tuple[np.ndarray, list[list[int]]]:
    """Merge adjacent 1-D histogram bins until every non-empty group holds >= ``min_count``.

    Each small bin is merged with the following bins (the last group with the previous
    one); the merged count is reported in the first bin of its group and the other bins of the
    group become 0, so the total is unchanged. A histogram whose total is below ``min_count`` is
    hidden whole (NaN).

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
    groups = _groups(counts, lambda acc: acc >= min_count)
    merged = np.zeros_like(counts)
    for g in groups:
        merged[g[0]] = counts[g].sum()
    return merged, [g for g in groups if len(g) > 1]


def merge_joint(channels: np.ndarray, min_count: int) -> tuple[np.ndarray, list[list[int]]]:
    """Merge adjacent bins of several count histograms over the same bins (e.g. positives and negatives
    per score bin) with one grouping, until every channel of every group is 0 or >= ``min_count``.

    Parameters
    ----------
    channels : ndarray of shape (n_channels, n_bins)

    Returns
    -------
    merged : ndarray of float, shape (n_channels, n_bins)
        Each group's counts sit in the group's first bin; NaN everywhere when no grouping exists (some
        channel's total is itself in ``1 .. min_count-1``).
    groups : list of list of int
        Every non-empty group (including single bins), in bin order.
    """
    ch = np.asarray(channels, dtype=float)
    if ch.ndim != 2:
        raise ValueError(f"merge_joint expects an array (n_channels, n_bins), got shape {ch.shape}")
    totals = ch.sum(axis=1)
    if np.any(small_cells(totals, min_count)):
        return np.full_like(ch, np.nan), [list(range(ch.shape[1]))]
    groups = _groups(ch.T, lambda acc: bool(np.all((acc == 0) | (acc >= min_count))))
    merged = np.zeros_like(ch)
    for g in groups:
        merged[:, g[0]] = ch[:, g].sum(axis=1)
    return merged, groups


def protect(result: dict[str, Any], counts: Mapping[str, Sequence[str]], histograms: Sequence[str],
            min_count: int, joint_histograms: Sequence[Sequence[str]] = ()) -> dict[str, list]:
    """Apply the disclosure rules of a task's declared outputs to ``result`` in place.

    ``counts``: ``{count_output: dependent outputs}`` (see :func:`suppress`), applied in declaration
    order, a dependent that is also a count tying the two; ``histograms``: outputs whose last axis is
    bins, each row merged with :func:`merge_histogram`; ``joint_histograms``: groups of same-shaped
    outputs merged together with :func:`merge_joint` (one grouping per row for all of them).
    Suppressed scalars become ``None``. Returns ``{output: suppressed indices or merged groups}``.
    """
    done: dict[str, list] = {}
    for cname, deps in counts.items():
        if cname not in result:
            raise KeyError(f"declared count output {cname!r} is missing from the result")
        deps = [d for d in deps if d in result]
        out = suppress(np.asarray(result[cname], dtype=float), min_count,
                       *[np.asarray(result[d], dtype=float) for d in deps])
        for name, arr in zip([cname, *deps], out[:-1], strict=True):
            result[name] = arr if np.ndim(result[name]) else (None if np.isnan(arr) else float(arr))
        if out[-1]:
            done[cname] = out[-1]
    for hname in histograms:
        h = np.array(result[hname], dtype=np.float64)
        rows = h.reshape(-1, h.shape[-1]) if h.ndim else h.reshape(1, 1)
        merged = []
        for i, row in enumerate(rows):
            rows[i], groups = merge_histogram(row, min_count)
            merged.extend([[i, *g] for g in groups])
        result[hname] = rows.reshape(h.shape)
        if merged:
            done[hname] = merged
    for names in joint_histograms:
        arrs = [np.array(result[n], dtype=np.float64) for n in names]
        shape = arrs[0].shape
        stacked = np.stack([a.reshape(-1, shape[-1]) for a in arrs], axis=1)  # (rows, channels, bins)
        merged = []
        for i in range(stacked.shape[0]):
            stacked[i], groups = merge_joint(stacked[i], min_count)
            merged.extend([[i, *g] for g in groups if len(g) > 1])
        for j, n in enumerate(names):
            result[n] = stacked[:, j].reshape(shape)
        if merged:
            done["+".join(names)] = merged
    return done


__all__ = ["complementary_suppression", "merge_histogram", "merge_joint", "partition_relations", "protect",
           "small_cells", "suppress"]
