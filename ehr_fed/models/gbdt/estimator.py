"""``FederatedGradientBoostingClassifier``: XGBoost-style histogram boosting over a federation.

Protocol (every arrow one ``Federation`` call; rows never leave a site)::

    query       gbdt.schema      -> feature columns of each site (must agree)
    secure_sum  gbdt.init        -> pooled rows and positives     -> base_score = mean(label), as XGBoost
    stats       bin_edge_sketch(fed, features, max_bin) -> cuts from federated quantiles, with the signed
                                    sketch releases every later request cites (each site recomputes the
                                    cuts from them, :mod:`.cuts`)
    per tree, per level:
    secure_sum  gbdt.histograms  -> the sites' (encrypted) g / h / count histograms of the level's new nodes
                                    (smaller sibling only; the decrypting site derives the other as
                                    parent - sibling), summed; the decrypting site releases only each
                                    node's best split and child sums, signed (``release``, ``transcript``)

Disclosure control (``min_count_rule``):

``"count"`` (default)
    sites add a row-count channel to each histogram; a split is taken only when both children hold at
    least ``min_cell_count`` pooled rows (the policy's ``min_cell_count`` unless given), so no leaf is
    smaller. Costs one more value per bin.
``"hessian"``
    no count channel (two thirds of the encrypted values); instead ``min_child_weight`` is raised to at
    least ``min_cell_count / 4``: since every row's Hessian is at most 0.25, a child with Hessian sum
    ``H`` holds at least ``4 H`` rows. Safe, but stricter when predictions are confident.

Sites refuse requests whose ``min_count`` is below their own policy's ``min_cell_count``.

Differential privacy (``dp=``, or the federation's ``dp``): the same protocol with every ``gbdt.init`` and
``gbdt.histograms`` release noised by the sites and the cuts taken from noisy grid counts; the plan, budget
split, layouts and post-processing live in :mod:`.private`. Without ``dp`` nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ehr_fed.models.base import check_is_fitted, column_diff

from .binning import BinMapper
from .cuts import PUBLIC
from .federated import FederatedHistogramSource, check_all_sites
from .grower import GrowParams, grow_tree
from .histogram import sigmoid
from .packing import DEFAULT_PRECISION
from .predictor import Tree, predict_margin
from .splitting import SplitParams
from .xgboost_json import HESSIAN_EXPORT, model_from_json, model_to_json

__all__ = ["FederatedGradientBoostingClassifier"]

MIN_COUNT_RULES = ("count", "hessian")
SIBLING_MODES = ("derive", "both")
DEFAULT_MIN_CELL_COUNT = 10
ROW_BOUND = 1.0e9


class FederatedGradientBoostingClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees for a binary label, trained over a federation (or on one local table).

    Parameters (XGBoost's meaning)
    ----------
    n_estimators : int, default 100
    max_depth : int, default 6
    learning_rate : float, default 0.3
    max_bin : int, default 256
        Maximum number of value bins per feature (missing values have their own bin).
    reg_lambda : float, default 1.0
    gamma : float, default 0.0
        Minimum loss reduction (XGBoost's ``loss_chg``) to make a split.
    min_child_weight : float, default 1.0
        Minimum Hessian sum of a child.
    encrypted : bool, default True
        Require a federation that encrypts (Paillier) its secure sums. Applies to ``fit(federation)``: a
        local ``fit(X, y)`` keeps every sum inside this process and runs in plaintext.
    min_count_rule : {"count", "hessian"}, default "count"
        How leaves are kept above the minimum cell count (module docstring).
    min_cell_count : int or None
        Smallest number of pooled rows in a leaf; None = the federation policy's ``min_cell_count``
        (10 when fitting a local table).
    hessian_export : {"keep", "coarsen", "strip"}, default "keep"
        Per-node Hessian sums written to exported models (see :mod:`.xgboost_json`).
    precision : int or None, default None
        Fractional bits of the fixed-point gradients and Hessians (grid ``2**-precision``). None:
        ``packing.DEFAULT_PRECISION`` (12). Every site, and the pooled learner, use the same grid, so their
        histograms are the same integers.
    bin_edges : list of arrays or None
        Cut values per feature; None = federated quantiles (of the one site, for a local table). Sites
        derive the cuts themselves: given cuts are accepted only in a private fit (``dp``) and by a site
        without a small-cell rule (a local fit); any other site refuses them.
    dp : dict, float or None
        Differential privacy: ``{"epsilon": .., "delta": ..}`` (a number = epsilon) plus the options of
        :mod:`.private` (``channel_weights``, ``level_weights``, ``cut_grid``, ``feature_bounds``,
        ``max_leaf``, ``min_hessian_sigmas``). None takes the federation's ``dp`` (off when it has none);
        results without DP are unchanged.
    sibling : {"derive", "both"}, default "derive"
        ``"derive"``: the sites compute the smaller child of each split and the decrypting site derives the
        other from the parent's summed histogram it kept; ``"both"``: the sites compute both children (no
        state at the decrypting site, about twice the histogram cost below the root).

    Attributes
    ----------
    trees_ : list of Tree
    base_score_ : float
    bin_edges_ : list of float32 arrays
    precision_ : int, the fixed-point precision used
    feature_names_in_ : ndarray of str
    n_features_in_ : int
    feature_importances_ : ndarray, mean split gain per feature, normalised to sum 1 (XGBoost's "gain")
    histogram_stats_ : dict (federated fits)
        What each site sent: ``requests`` (one per level), integer ``fields``, their ``bits``, and the real
        bins per node (``bins_per_node``).
    classes_ : ndarray [0, 1]
    dp_ : dict (private fits)
        The ``(epsilon, delta)`` spent, the sensitivities, budget split and noise of every release.
    """

    def __init__(self, n_estimators: int = 100, max_depth: int = 6, learning_rate: float = 0.3,
                 max_bin: int = 256, reg_lambda: float = 1.0, gamma: float = 0.0,
                 min_child_weight: float = 1.0, encrypted: bool = True, min_count_rule: str = "count",
                 min_cell_count: int | None = None, hessian_export: str = "keep", precision: int | None = None,
                 bin_edges: list | None = None, dp: dict | float | None = None, sibling: str = "derive"):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.max_bin = max_bin
        self.reg_lambda = reg_lambda
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.encrypted = encrypted
        self.min_count_rule = min_count_rule
        self.min_cell_count = min_cell_count
        self.hessian_export = hessian_export
        self.precision = precision
        self.bin_edges = bin_edges
        self.dp = dp
        self.sibling = sibling

    # -- parameters ---------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        problems = []
        if not (isinstance(self.n_estimators, int | np.integer) and self.n_estimators >= 1):
            problems.append(f"n_estimators must be an int >= 1, got {self.n_estimators!r}")
        if not (isinstance(self.max_depth, int | np.integer) and self.max_depth >= 1):
            problems.append(f"max_depth must be an int >= 1, got {self.max_depth!r}")
        if not (isinstance(self.max_bin, int | np.integer) and 2 <= self.max_bin <= 65535):
            problems.append(f"max_bin must be an int in [2, 65535], got {self.max_bin!r}")
        if not (0 < float(self.learning_rate) <= 1):
            problems.append(f"learning_rate must be in (0, 1], got {self.learning_rate!r}")
        if float(self.reg_lambda) < 0 or float(self.gamma) < 0 or float(self.min_child_weight) < 0:
            problems.append("reg_lambda, gamma and min_child_weight must be >= 0, got "
                            f"{self.reg_lambda!r}, {self.gamma!r}, {self.min_child_weight!r}")
        if self.min_count_rule not in MIN_COUNT_RULES:
            problems.append(f"min_count_rule must be one of {list(MIN_COUNT_RULES)}, got {self.min_count_rule!r}")
        if self.sibling not in SIBLING_MODES:
            problems.append(f"sibling must be one of {list(SIBLING_MODES)}, got {self.sibling!r}")
        if self.hessian_export not in HESSIAN_EXPORT:
            problems.append(f"hessian_export must be one of {list(HESSIAN_EXPORT)}, got {self.hessian_export!r}")
        if self.precision is not None and not (isinstance(self.precision, int | np.integer)
                                               and 4 <= self.precision <= 24):
            problems.append(f"precision must be None or an int in [4, 24], got {self.precision!r}")
        if self.min_cell_count is not None and int(self.min_cell_count) < 0:
            problems.append(f"min_cell_count must be None or >= 0, got {self.min_cell_count!r}")
        if problems:
            raise ValueError(f"Invalid parameters for {type(self).__name__}: " + "; ".join(problems))

    def _split_params(self, min_count: int) -> SplitParams:
        mcw = float(self.min_child_weight)
        if self.min_count_rule == "hessian":
            mcw = max(mcw, min_count / 4.0)
        return SplitParams(reg_lambda=float(self.reg_lambda), gamma=float(self.gamma), min_child_weight=mcw,
                           min_count=int(min_count), precision=int(self.precision_),
                           use_count=self.min_count_rule == "count")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # binary only
        tags.input_tags.allow_nan = True  # NaN = missing, routed by each split's default direction
        return tags

    # -- training -----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, progress: Callable[[dict], None] | bool | None = None):
        """Train on a federation, or on one local table through the same protocol.

        Parameters
        ----------
        X : ehr_fed.federation.Federation, DataFrame or array-like of shape (n_rows, n_features)
            A federation: the federated fit (``y`` must be None). A table: a local fit on these rows as the
            one site of an in-process, plaintext federation (see :mod:`ehr_fed.models.sklearn_api`); a
            feature table may carry its labels in a ``label`` column. NaN = missing; ``inf`` is refused.
        y : array-like of shape (n_rows,), optional
            Labels of a local table: any two values (``classes_``; ``classes_[1]`` is the positive class).
        progress : callable or bool, optional
            Called after every tree with ``{"tree", "n_estimators", "n_nodes", "depth"}``; ``True`` shows
            a tqdm bar.
        """
        from ehr_fed.models.sklearn_api import is_federation, local_federation, local_training_table

        self._validate_params()
        if is_federation(X):
            if y is not None:
                raise ValueError(f"{type(self).__name__}.fit(federation) takes no y: the labels stay at the "
                                 "sites (their 'label' column)")
            return self._fit_federation(X, progress, local=False)
        table, classes, named = local_training_table(self, X, y, allow_nan=True, prefix="f")
        with local_federation(table) as fed:
            self._fit_federation(fed, progress, local=True)
        self.classes_ = classes
        if not named:  # fitted on an array: like scikit-learn, no feature_names_in_
            del self.feature_names_in_
        return self

    def _fit_federation(self, fed: Any, progress: Any, local: bool):
        study = getattr(fed, "study", None)
        self.study_spec_ = study if hasattr(study, "model_dump") else None
        source, mapper, n_total, n_pos, names = self._setup_federated(fed, local)
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self.classes_ = np.array([0, 1])
        self.n_samples_, self.n_positives_ = int(n_total), int(n_pos)
        self.bin_edges_ = [c.copy() for c in mapper.cuts]
        self.trees_ = self._boost(source, mapper, progress)
        from .transcript import DP_SETTINGS, SETTINGS

        # the settings and signed level releases the trees follow from (checked before an evaluation)
        keys = SETTINGS + (DP_SETTINGS if source.common.get("dp") is not None else ())
        self.transcript_ = {"kind": "gbdt", "settings": {k: source.common[k] for k in keys if k in source.common},
                            "transcript": [list(levels) for levels in source.transcript]}
        session = getattr(source, "session", None)
        if session is not None:
            self.dp_ = session.dp_record(source.common)
        elif hasattr(self, "dp_"):
            del self.dp_
        if hasattr(source, "n_fields"):
            self.histogram_stats_ = {"requests": source.n_requests, "fields": source.n_fields,
                                     "bits": source.n_bits, "bins_per_node": int(source.mask.sum())}
        return self

    def _min_count(self, federation: Any = None) -> int:
        """``min_cell_count``, else the federation policy's (10 for a local fit, as the default policy)."""
        if self.min_cell_count is not None:
            return int(self.min_cell_count)
        policy = getattr(federation, "policy", None)
        return int(getattr(policy, "min_cell_count", DEFAULT_MIN_CELL_COUNT))

    def _precision(self, n_total: float) -> int:
        if self.precision is not None:
            return int(self.precision)
        return DEFAULT_PRECISION

    def _setup_federated(self, fed: Any, local: bool = False):
        from . import tasks  # noqa: F401  (registers the site tasks)

        fed_encrypted = getattr(fed, "encrypted", None)
        if self.encrypted and fed_encrypted is False and not local:
            raise ValueError(
                f"{type(self).__name__}(encrypted=True) needs an encrypting federation, but this one was "
                "created with encrypted=False; create it with encrypted=True or pass encrypted=False"
            )
        names = self._federated_features(fed)
        n_sites = len(fed.site_ids)
        private = self._private_session(fed, names)
        if private is not None:
            init, n_total, n_pos = private.init()
        else:
            init = fed.secure_sum("gbdt.init", {}, {"stats": (ROW_BOUND, n_sites)})
        sites = list(getattr(init, "contributors", None) or fed.site_ids)
        check_all_sites(init, list(fed.site_ids), "gbdt.init")
        if private is None:
            stats = np.asarray(init["stats"])
            n_total, n_pos = float(np.rint(stats[0])), float(np.rint(stats[1]))
        _check_labels(n_total, n_pos)
        self._min_count_ = self._min_count(None if local else fed)
        self.precision_ = self._precision(n_total)
        if self.bin_edges is not None:
            cuts, cut_source = self.bin_edges, dict(PUBLIC)
        elif private is not None:
            cuts, cut_source = private.cuts(int(self.max_bin))
        else:
            from ehr_fed.stats.federated import bin_edge_sketch

            edges, cut_source = bin_edge_sketch(fed, names, self.max_bin)
            cuts = [edges[n] for n in names]
        mapper = BinMapper(cuts, self.max_bin)
        self.base_score_ = float(np.float32(n_pos / n_total))
        common = {
            "features": list(names),
            "cuts": [np.asarray(c, dtype=np.float64) for c in mapper.cuts],
            "cut_source": cut_source,
            "max_bin": int(self.max_bin),
            "precision": int(self.precision_),
            "base_score": self.base_score_,
            "channels": 3 if self.min_count_rule == "count" else 2,
            "min_count": int(self._min_count_),
        }
        sp = self._split_params(self._min_count_)  # the decrypting site searches splits with these
        common.update({"reg_lambda": sp.reg_lambda, "gamma": sp.gamma, "min_child_weight": sp.min_child_weight,
                       "learning_rate": float(self.learning_rate), "max_depth": int(self.max_depth),
                       "n_estimators": int(self.n_estimators), "sibling": str(self.sibling)})
        if private is not None:
            from .private import PrivateHistogramSource

            source = PrivateHistogramSource(private, fed, common, mapper.n_bins, sites=sites)
        else:
            source = FederatedHistogramSource(fed, common, int(n_total), mapper.n_bins, sites=sites)
        self.n_sites_ = n_sites
        return source, mapper, n_total, n_pos, names

    def _private_session(self, fed: Any, names: list[str]):
        """The private boosting session of ``dp`` (or the federation's), None when DP is off."""
        from .private import PrivateBoosting, resolve_dp

        resolved = resolve_dp(self, fed)
        if resolved is None:
            return None
        return PrivateBoosting(self, fed, *resolved, names=names, need_cuts=self.bin_edges is None)

    def _federated_features(self, fed: Any) -> list[str]:
        replies = fed.query("gbdt.schema", {})
        per_site = {s: [str(c) for c in r["features"]] for s, r in replies.items()}
        expected = next(iter(per_site.values()))
        bad = {s: cols for s, cols in per_site.items() if cols != expected}
        if bad:
            diffs = "\n".join(f"site {s}:\n{column_diff(expected, cols)}" for s, cols in bad.items())
            raise ValueError(f"{len(bad)} site(s) have feature columns that differ from the first site's "
                             f"({len(expected)} features):\n{diffs}\nHarmonize every site with the same study.")
        return expected

    def _boost(self, source, mapper: BinMapper, progress) -> list[Tree]:
        split = self._split_params(self._min_count_)
        session = getattr(source, "session", None)
        if session is not None:  # a private session: min_child_weight raised and leaves clamped, as released
            split = session.split_params(split, source.common)
        params = GrowParams(max_depth=int(self.max_depth), learning_rate=float(self.learning_rate), split=split,
                            sibling=str(self.sibling),
                            leaf_bound=None if session is None else float(self.learning_rate) * float(
                                source.common["dp_max_leaf"]))
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(self.n_estimators), desc="trees", unit="tree")
        trees: list[Tree] = []
        try:
            for i in range(int(self.n_estimators)):
                source.begin_tree(trees)
                tree = grow_tree(source, mapper, params)
                trees.append(tree)
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress({"tree": i + 1, "n_estimators": int(self.n_estimators),
                              "n_nodes": tree.n_nodes, "depth": tree.depth()})
        finally:
            if bar is not None:
                bar.close()
        return trees

    # -- prediction ---------------------------------------------------------------------------------
    def _X(self, X: Any) -> np.ndarray:
        from ehr_fed.models.sklearn_api import check_predict_X

        check_is_fitted(self, "trees_")
        return check_predict_X(self, X, allow_nan=True)

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw margins (log-odds), float32 as XGBoost computes them; shape (n_rows,)."""
        Xa = self._X(X)
        return predict_margin(self.trees_, Xa, self.base_score_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, 2)."""
        p = sigmoid(self.decision_function(X).astype(np.float64))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (``classes_[1]`` when its probability > 0.5), shape (n_rows,)."""
        positive = self.predict_proba(X)[:, 1] > 0.5
        return self.classes_[positive.astype(np.int64)]

    @property
    def feature_importances_(self) -> np.ndarray:
        """Mean split gain of each feature, normalised to sum 1 (XGBoost's ``importance_type="gain"``)."""
        check_is_fitted(self, "trees_")
        total = np.zeros(self.n_features_in_)
        count = np.zeros(self.n_features_in_)
        for t in self.trees_:
            for nid in range(t.n_nodes):
                if not t.is_leaf(nid):
                    total[t.feature[nid]] += np.float32(t.loss_change[nid])
                    count[t.feature[nid]] += 1
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        s = mean.sum()
        return mean / s if s > 0 else mean

    # -- export -------------------------------------------------------------------------------------
    def to_xgboost_json(self, hessian_export: str | None = None) -> dict:
        """The model as an XGBoost JSON document (dict)."""
        check_is_fitted(self, "trees_")
        return model_to_json(
            self.trees_, base_score=self.base_score_, n_features=self.n_features_in_,
            feature_names=self._feature_names(),
            attributes={"ehr_fed_model": "gbdt"},
            hessian_export=hessian_export or self.hessian_export,
        )

    def save_xgboost_json(self, path: str | Path, hessian_export: str | None = None) -> Path:
        """Write the model in XGBoost's JSON format (``xgboost.Booster(model_file=path)`` loads it)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_xgboost_json(hessian_export)))
        return path

    def to_xgboost(self, hessian_export: str | None = None):
        """An ``xgboost.XGBClassifier`` holding this model (same probabilities; XGBoost predicts the encoded
        labels 0/1, index into ``classes_``)."""
        import xgboost as xgb

        doc = self.to_xgboost_json(hessian_export)
        clf = xgb.XGBClassifier(n_estimators=len(self.trees_), max_depth=int(self.max_depth),
                                learning_rate=float(self.learning_rate), max_bin=int(self.max_bin),
                                reg_lambda=float(self.reg_lambda), gamma=float(self.gamma),
                                min_child_weight=float(self.min_child_weight), tree_method="hist",
                                objective="binary:logistic")
        clf.load_model(bytearray(json.dumps(doc).encode()))
        clf.n_classes_ = 2
        return clf

    def _feature_names(self) -> list[str]:
        """``feature_names_in_``, or XGBoost's ``f0, f1, ...`` for a model fitted on an array."""
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"f{j}" for j in range(self.n_features_in_)]

    def save(self, path: str | Path) -> Path:
        """Write an ehr-fed model file (kind ``gbdt``; see :mod:`ehr_fed.models.persistence`)."""
        from ehr_fed.models.sklearn_api import check_savable

        from .persistence import save_gbdt

        check_is_fitted(self, "trees_")
        check_savable(self)
        return save_gbdt(self, path)

    @classmethod
    def from_xgboost_json(cls, doc: dict | str | Path, **params: Any) -> FederatedGradientBoostingClassifier:
        """A fitted estimator from an XGBoost JSON model (numeric splits, ``binary:logistic``)."""
        trees, meta = model_from_json(doc)
        model = cls(**params)
        model.trees_ = trees
        model.base_score_ = meta["base_score"]
        if meta["feature_names"]:  # a model trained without names has none (scikit-learn's convention)
            model.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
        model.n_features_in_ = meta["n_features"]
        model.classes_ = np.array([0, 1])
        return model


def _check_labels(n: float, n_pos: float) -> None:
    if n == 0 or n_pos == 0 or n_pos == n:
        raise ValueError(f"the pooled label has only one class ({int(n)} rows, {int(n_pos)} positive); "
                         "boosting a binary classifier needs both 0 and 1")

