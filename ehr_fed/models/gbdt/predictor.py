"""Trees and prediction, with XGBoost's arithmetic.

A :class:`Tree` holds XGBoost's per-node arrays. Node 0 is the root; children are numbered in the order
nodes are expanded (breadth first). Rows are routed as XGBoost routes them: the value is cast to float32,
NaN follows ``default_left``, otherwise ``x < threshold`` goes left. Margins accumulate in float32, tree
after tree, from the float32 base margin, so the toolkit's predictions and ``xgboost.Booster``'s agree to
float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Tree", "predict_margin", "apply_tree", "base_margin"]


@dataclass
class Tree:
    """One regression tree in XGBoost's layout (lists grow while the tree is grown).

    ``value`` is the leaf value (learning rate applied) for leaves and the unscaled node weight for
    internal nodes, as in XGBoost's ``split_conditions`` / ``base_weights``.
    """

    left: list[int] = field(default_factory=lambda: [-1])
    right: list[int] = field(default_factory=lambda: [-1])
    parent: list[int] = field(default_factory=lambda: [-1])
    feature: list[int] = field(default_factory=lambda: [0])
    split_bin: list[int] = field(default_factory=lambda: [-1])
    threshold: list[float] = field(default_factory=lambda: [0.0])
    default_left: list[bool] = field(default_factory=lambda: [False])
    base_weight: list[float] = field(default_factory=lambda: [0.0])
    leaf_value: list[float] = field(default_factory=lambda: [0.0])
    loss_change: list[float] = field(default_factory=lambda: [0.0])
    sum_hessian: list[float] = field(default_factory=lambda: [0.0])
    count: list[int] = field(default_factory=lambda: [0])

    @property
    def n_nodes(self) -> int:
        return len(self.left)

    def is_leaf(self, nid: int) -> bool:
        return self.left[nid] == -1

    def split(self, nid: int, feature: int, split_bin: int, threshold: float, default_left: bool,
              gain: float) -> tuple[int, int]:
        """Turn leaf ``nid`` into a split; returns the ids of the new (left, right) children."""
        lo = self.n_nodes
        self.left[nid], self.right[nid] = lo, lo + 1
        self.feature[nid], self.split_bin[nid] = int(feature), int(split_bin)
        self.threshold[nid] = float(np.float32(threshold))
        self.default_left[nid] = bool(default_left)
        self.loss_change[nid] = float(np.float32(gain))
        for _ in range(2):
            self.left.append(-1)
            self.right.append(-1)
            self.parent.append(nid)
            self.feature.append(0)
            self.split_bin.append(-1)
            self.threshold.append(0.0)
            self.default_left.append(False)
            self.base_weight.append(0.0)
            self.leaf_value.append(0.0)
            self.loss_change.append(0.0)
            self.sum_hessian.append(0.0)
            self.count.append(0)
        return lo, lo + 1

    def depth(self) -> int:
        d = [0] * self.n_nodes
        for nid in range(1, self.n_nodes):
            d[nid] = d[self.parent[nid]] + 1
        return max(d)

    # -- compact, JSON-safe form sent to sites (routing and leaf values only) --------------------------
    def to_routing(self) -> dict:
        return {
            "left": list(map(int, self.left)),
            "right": list(map(int, self.right)),
            "feature": list(map(int, self.feature)),
            "threshold": [float(t) for t in self.threshold],
            "default_left": [bool(v) for v in self.default_left],
            "leaf_value": [float(v) for v in self.leaf_value],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return _routing_arrays(self.to_routing())


def _routing_arrays(r: dict, real: type = np.float32) -> dict[str, np.ndarray]:
    """A routing dict as numpy arrays; thresholds and leaf values as ``real`` (float32 as XGBoost stores
    them, float64 in messages)."""
    return {
        "left": np.asarray(r["left"], dtype=np.int64),
        "right": np.asarray(r["right"], dtype=np.int64),
        "feature": np.asarray(r["feature"], dtype=np.int64),
        "threshold": np.asarray(r["threshold"], dtype=real),
        "default_left": np.asarray(r["default_left"], dtype=bool),
        "leaf_value": np.asarray(r["leaf_value"], dtype=real),
    }


def apply_tree(tree: Tree | dict, X32: np.ndarray) -> np.ndarray:
    """Node id (a leaf of ``tree``) reached by each row.

    Parameters
    ----------
    tree : Tree or its routing dict (``Tree.to_routing()``)
    X32 : float32 ndarray of shape (n_rows, n_features)
    """
    a = tree.arrays() if isinstance(tree, Tree) else _routing_arrays(tree)
    node = np.zeros(X32.shape[0], dtype=np.int64)
    active = np.flatnonzero(a["left"][node] != -1)
    while active.size:
        nd = node[active]
        x = X32[active, a["feature"][nd]]
        go_left = np.where(np.isnan(x), a["default_left"][nd], x < a["threshold"][nd])
        node[active] = np.where(go_left, a["left"][nd], a["right"][nd])
        active = active[a["left"][node[active]] != -1]
    return node


def base_margin(base_score: float) -> np.float32:
    """XGBoost's margin of the base score for ``binary:logistic`` (float32)."""
    p = float(np.float32(base_score))
    return np.float32(-np.log(1.0 / p - 1.0))


def predict_margin(trees: list, X: np.ndarray, base_score: float) -> np.ndarray:
    """Raw margins (float32) of an ensemble, summed as XGBoost sums them."""
    X32 = np.asarray(X, dtype=np.float64).astype(np.float32)
    margin = np.full(X32.shape[0], base_margin(base_score), dtype=np.float32)
    for tree in trees:
        a = tree.arrays() if isinstance(tree, Tree) else _routing_arrays(tree)
        margin += a["leaf_value"][apply_tree(tree, X32)]
    return margin
