"""Bin edges and the mapping of feature values to histogram bins.

Convention (the one XGBoost's ``hist`` method uses, so a split exports exactly):
a feature has ``m`` strictly increasing cut values ``c_0 < ... < c_{m-1}`` stored as float32; a value ``x``
falls in bin ``#{j : c_j <= x}`` (0 .. m), compared in float32; NaN falls in the missing bin, whose index is
``m + 1``. A split "at bin b" sends bins ``0..b`` left, i.e. exactly the rows with ``x < c_b``, which is
XGBoost's rule ``value < split_condition`` with ``split_condition = c_b``.

All features share one bin layout of ``n_bins = max_cuts + 2`` slots (value bins then the missing bin), so
the histograms of all features of a node stack into one dense array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BinMapper", "quantile_cuts", "local_bin_edges"]


def quantile_cuts(values: np.ndarray, max_bin: int) -> np.ndarray:
    """Cut values of one feature from its (pooled or local) values.

    Parameters
    ----------
    values : ndarray of shape (n_rows,)
        Feature values; NaN is ignored.
    max_bin : int
        Maximum number of value bins, so at most ``max_bin - 1`` cuts.

    Returns
    -------
    ndarray of float32, strictly increasing, at most ``max_bin - 1`` values.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.empty(0, dtype=np.float32)
    distinct = np.unique(x.astype(np.float32))
    if distinct.size <= max_bin:
        # one bin per distinct value: cut between neighbours (upper value, as XGBoost does)
        cuts = distinct[1:]
    else:
        qs = np.linspace(0.0, 1.0, max_bin + 1)[1:-1]
        cuts = np.quantile(x, qs, method="linear").astype(np.float32)
    return normalize_cuts(cuts, max_bin)


def normalize_cuts(cuts: Sequence[float] | np.ndarray, max_bin: int) -> np.ndarray:
    """Cuts as strictly increasing, finite float32, at most ``max_bin - 1`` of them."""
    c = np.asarray(cuts, dtype=np.float64).ravel()
    c = c[np.isfinite(c)].astype(np.float32)
    c = np.unique(c)
    if c.size > max_bin - 1:
        idx = np.unique(np.linspace(0, c.size - 1, max_bin - 1).round().astype(int))
        c = c[idx]
    return c


def local_bin_edges(X: np.ndarray, max_bin: int) -> list[np.ndarray]:
    """Per-feature cuts from a local (e.g. pooled) matrix: the non-federated counterpart of
    ``ehr_fed.stats.federated_bin_edges``."""
    X = np.asarray(X, dtype=np.float64)
    return [quantile_cuts(X[:, j], max_bin) for j in range(X.shape[1])]


class BinMapper:
    """Maps feature values to bin indices given per-feature cut values.

    Parameters
    ----------
    cuts : list of array-like
        One array of cut values per feature (any finite floats; stored as sorted unique float32).
    max_bin : int
        Maximum number of value bins per feature.
    """

    def __init__(self, cuts: Sequence[np.ndarray], max_bin: int):
        if max_bin < 2:
            raise ValueError(f"max_bin must be >= 2, got {max_bin}.")
        self.max_bin = int(max_bin)
        self.cuts = [normalize_cuts(c, self.max_bin) for c in cuts]
        self.n_features = len(self.cuts)
        # value bins 0..max_bin-1, missing bin = max_bin
        self.n_bins = self.max_bin + 1
        self.missing_bin = self.max_bin

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin indices.

        Parameters
        ----------
        X : ndarray of shape (n_rows, n_features)

        Returns
        -------
        ndarray of uint16, shape (n_rows, n_features); NaN -> ``missing_bin``.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[-1] if X.ndim == 2 else X.ndim} features, but the bin mapper is "
                f"expecting {self.n_features} features as input."
            )
        X32 = X.astype(np.float32)
        out = np.empty(X.shape, dtype=np.uint16)
        for j, c in enumerate(self.cuts):
            col = X32[:, j]
            b = np.searchsorted(c, col, side="right")
            b[np.isnan(col)] = self.missing_bin
            out[:, j] = b
        return out

    def threshold(self, feature: int, bin_index: int) -> np.float32:
        """The split condition of a split at ``bin_index`` (rows with ``x < threshold`` go left)."""
        return np.float32(self.cuts[feature][bin_index])

    def n_cuts(self) -> np.ndarray:
        """Number of cuts per feature (valid split bins are ``0 .. n_cuts - 1``)."""
        return np.array([c.size for c in self.cuts], dtype=np.int64)
