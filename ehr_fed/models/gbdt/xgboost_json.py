"""XGBoost's JSON model format (``Booster.save_model("m.json")``), written and read without XGBoost.

The document follows what XGBoost 3.x writes for ``binary:logistic`` with the ``gbtree`` booster: per tree
``left_children``, ``right_children``, ``parents`` (root: 2147483647), ``split_indices``,
``split_conditions`` (threshold for splits, leaf value for leaves), ``default_left``, ``base_weights``,
``loss_changes``, ``sum_hessian``, ``split_type`` and empty categorical arrays; ``learner_model_param``
carries ``base_score`` as a probability. The toolkit's own settings travel in ``learner.attributes``
(string values, as XGBoost requires), so one file is both an XGBoost model and an ehr-fed model.

Hessian export (``hessian_export``): per-node Hessian sums let an observer of the model reconstruct
gradient information about small groups of patients (known inversion attacks on exported GBDT models).
``"keep"`` writes them exactly, ``"coarsen"`` rounds each to 2 significant digits, ``"strip"`` writes zeros
(XGBoost only uses ``sum_hessian`` for ``cover``-type feature importance and SHAP values).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .predictor import Tree

__all__ = ["HESSIAN_EXPORT", "model_to_json", "model_from_json", "coarsen"]

HESSIAN_EXPORT = ("keep", "coarsen", "strip")
ROOT_PARENT = 2147483647
XGBOOST_VERSION = [3, 2, 0]


def coarsen(values: np.ndarray, digits: int = 2) -> np.ndarray:
    """Round to ``digits`` significant decimal digits."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(v)
    nz = v != 0
    mag = np.floor(np.log10(np.abs(v[nz])))
    scale = 10.0 ** (digits - 1 - mag)
    out[nz] = np.round(v[nz] * scale) / scale
    return out


def _f32(values) -> list[float]:
    """float32 values as JSON numbers that parse back to the same float32."""
    return [float(np.float32(v)) for v in values]


def _tree_json(tree: Tree, tid: int, n_features: int, hessian_export: str) -> dict:
    n = tree.n_nodes
    leaf = np.asarray(tree.left) == -1
    cond = np.where(leaf, tree.leaf_value, tree.threshold)
    weights = np.where(leaf, tree.leaf_value, tree.base_weight)
    hess = np.asarray(tree.sum_hessian, dtype=np.float64)
    if hessian_export == "coarsen":
        hess = coarsen(hess)
    elif hessian_export == "strip":
        hess = np.zeros_like(hess)
    return {
        "base_weights": _f32(weights),
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": [int(v) for v in tree.default_left],
        "id": tid,
        "left_children": [int(v) for v in tree.left],
        "loss_changes": _f32(tree.loss_change),
        "parents": [ROOT_PARENT if p < 0 else int(p) for p in tree.parent],
        "right_children": [int(v) for v in tree.right],
        "split_conditions": _f32(cond),
        "split_indices": [int(v) if not lf else 0 for v, lf in zip(tree.feature, leaf, strict=True)],
        "split_type": [0] * n,
        "sum_hessian": _f32(hess),
        "tree_param": {
            "num_deleted": "0",
            "num_feature": str(n_features),
            "num_nodes": str(n),
            "size_leaf_vector": "1",
        },
    }


def model_to_json(trees: list[Tree], *, base_score: float, n_features: int,
                  feature_names: list[str] | None = None, attributes: dict[str, str] | None = None,
                  hessian_export: str = "keep") -> dict:
    """The XGBoost JSON document (a dict) of a binary logistic ensemble."""
    if hessian_export not in HESSIAN_EXPORT:
        raise ValueError(f"hessian_export must be one of {HESSIAN_EXPORT}, got {hessian_export!r}.")
    n = len(trees)
    return {
        "learner": {
            "attributes": {str(k): str(v) for k, v in (attributes or {}).items()},
            "feature_names": list(feature_names or []),
            "feature_types": ["float"] * len(feature_names or []),
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(n)},
                    "iteration_indptr": list(range(n + 1)),
                    "tree_info": [0] * n,
                    "trees": [_tree_json(t, i, n_features, hessian_export) for i, t in enumerate(trees)],
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": "[" + np.format_float_scientific(np.float32(base_score), unique=True) + "]",
                "boost_from_average": "1",
                "num_class": "0",
                "num_feature": str(n_features),
                "num_target": "1",
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": XGBOOST_VERSION,
    }


def _parse_base_score(text: str) -> float:
    return float(str(text).strip().strip("[]"))


def model_from_json(doc: dict | str | Path) -> tuple[list[Tree], dict]:
    """Trees and learner metadata from an XGBoost JSON model (``binary:logistic``, numeric splits only).

    Returns ``(trees, meta)`` with ``meta`` keys ``base_score``, ``n_features``, ``feature_names``,
    ``attributes``.
    """
    if not isinstance(doc, dict):
        doc = json.loads(Path(doc).read_text())
    learner = doc["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ValueError(f"Expected an XGBoost model with objective 'binary:logistic', got {objective!r}.")
    trees = []
    for t in learner["gradient_booster"]["model"]["trees"]:
        if any(t.get("split_type", [])):
            raise ValueError("Categorical splits are not supported; expected numeric splits only.")
        left = [int(v) for v in t["left_children"]]
        leaf = [v == -1 for v in left]
        cond = [float(v) for v in t["split_conditions"]]
        tree = Tree(
            left=left,
            right=[int(v) for v in t["right_children"]],
            parent=[-1 if p == ROOT_PARENT else int(p) for p in t["parents"]],
            feature=[int(v) for v in t["split_indices"]],
            split_bin=[-1] * len(left),
            threshold=[0.0 if lf else c for lf, c in zip(leaf, cond, strict=True)],
            default_left=[bool(v) for v in t["default_left"]],
            base_weight=[float(v) for v in t["base_weights"]],
            leaf_value=[c if lf else 0.0 for lf, c in zip(leaf, cond, strict=True)],
            loss_change=[float(v) for v in t["loss_changes"]],
            sum_hessian=[float(v) for v in t["sum_hessian"]],
            count=[0] * len(left),
        )
        trees.append(tree)
    mp = learner["learner_model_param"]
    meta = {
        "base_score": _parse_base_score(mp["base_score"]),
        "n_features": int(mp["num_feature"]),
        "feature_names": list(learner.get("feature_names", [])),
        "attributes": dict(learner.get("attributes", {})),
    }
    return trees, meta
