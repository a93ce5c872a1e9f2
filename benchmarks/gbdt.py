"""Benchmark: federated gradient boosting, encrypted vs plaintext, beside pooled XGBoost (prints JSON).

Default run: 5 sites x 20,000 rows x 10 features, 5 trees of depth 3, 32 bins, 2048-bit keys, every site
in this process (threads), and every fit run as the variants of ``_variants.py``: masks on (the default
protocol), masks off (``Federation.in_process(..., masks=False)``), plaintext (``--repeats`` times each,
interleaved) and the threshold scheme (``key_scheme="threshold"``, ``--threshold-repeats``). It takes about
5 minutes on the shared 2-core machine at a load average of 20 (a minute or two when idle).
``--full`` is issue 7's size (5 x 50,000 x 30, 50 trees of depth 5, 64 bins): half an hour or more there.

Reported: wall and CPU time of each variant's federated training (including federated bin edges and the row
count; the key ceremonies are reported separately), the encrypted/plaintext ratio of each variant, the
masks-on / masks-off ratio per repetition (median, min-max and interquartile range), pooled ``xgboost`` (``tree_method="hist"``,
same parameters) in the same run, the test AUC of each, and how many packed values and ciphertexts the
histograms took.

    python benchmarks/gbdt.py            # default run (minutes)
    python benchmarks/gbdt.py --quick    # small run (1024-bit test keys, 7 repetitions, about a minute)
    python benchmarks/gbdt.py --full --trees 10 # issue 7's data and keys, fewer trees (per-tree cost is flat)
    python benchmarks/gbdt.py --skip-encrypted   # plaintext federation vs xgboost only

Encrypted and plaintext federations grow identical trees (asserted in the output), so the test AUC of the
plaintext run is also the encrypted model's. The run exits 1 when a check fails (``checks`` in the JSON:
identical trees, equal test AUC, masks cost at most 5 % (median CPU ratio of the ``--cost-repeats`` masks-on / masks-off pairs with the sites answered one after another, ``masks_cost_sequential``),
masks on / off / threshold bit-identical models); ``estimated_*`` figures are computed, not measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
from _common import check, finish
from _variants import add_repeat_arguments, compare, resolve_repeats, timed


def make_data(n: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-linear risk: interactions, thresholds, a sine, informative missingness; ~15% positives."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    X[:, n_features // 2:] = np.round(X[:, n_features // 2:] * 2) / 2  # some coarse, lab-like features
    X[rng.random(X.shape) < 0.08] = np.nan
    Z = np.nan_to_num(X)
    logit = (1.2 * np.sin(2 * Z[:, 0]) + Z[:, 1] * Z[:, 2] + 1.0 * (Z[:, 3] > 0.5) - 0.7 * np.abs(Z[:, 4])
             + 0.8 * np.isnan(X[:, 5]) + 0.5 * Z[:, 6] - 0.4 * Z[:, 7] * (Z[:, 8] > 0) - 2.2)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def site_tables(n_sites: int, rows: int, n_features: int, seed: int) -> dict[str, pd.DataFrame]:
    names = [f"f{j:02d}" for j in range(n_features)]
    out = {}
    for k in range(n_sites):
        X, y = make_data(rows, n_features, seed + k)
        df = pd.DataFrame({"site_id": f"site_{k}", "person_key": [f"{k}-{i}" for i in range(rows)],
                           "index_time": pd.Timestamp("2024-01-01"), "label": y.astype("int8")})
        for j, name in enumerate(names):
            df[name] = X[:, j]
        out[f"site_{k}"] = df
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run with 1024-bit test keys")
    ap.add_argument("--min-count-rule", default="count", choices=["count", "hessian"])
    ap.add_argument("--sibling", default="derive", choices=["derive", "both"],
                    help="derive the larger child at the decrypting site (default) or have the sites compute both")
    ap.add_argument("--skip-encrypted", action="store_true", help="plaintext federation and xgboost only")
    ap.add_argument("--trees", type=int, default=None, help="override the number of trees")
    ap.add_argument("--full", action="store_true", help="issue 7's size: 5 x 50,000 x 30, 50 trees of depth 5")
    ap.add_argument("--workers", default="threads", choices=["processes", "threads"],
                    help="sites as threads of this process (default) or as separate processes (as hospitals "
                         "are separate machines; each federation then starts 5 processes)")
    add_repeat_arguments(ap)
    args = ap.parse_args(argv)
    resolve_repeats(ap, args)

    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from ehr_fed.federation import Federation
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    if args.quick:
        cfg = dict(sites=3, rows=2000, features=10, trees=3, depth=3, bins=16, key_bits=1024, test_rows=5000)
    elif args.full:
        cfg = dict(sites=5, rows=50_000, features=30, trees=50, depth=5, bins=64, key_bits=2048,
                   test_rows=50_000)
    else:
        cfg = dict(sites=5, rows=20_000, features=10, trees=5, depth=3, bins=32, key_bits=2048,
                   test_rows=20_000)
    if args.trees:
        cfg["trees"] = args.trees
    params = dict(n_estimators=cfg["trees"], max_depth=cfg["depth"], learning_rate=0.3, max_bin=cfg["bins"],
                  reg_lambda=1.0, gamma=0.0, min_child_weight=1.0)
    tables = site_tables(cfg["sites"], cfg["rows"], cfg["features"], seed=100)
    names = [c for c in next(iter(tables.values())).columns if c.startswith("f")]
    pooled = pd.concat(tables.values(), ignore_index=True)
    Xt, yt = make_data(cfg["test_rows"], cfg["features"], seed=7)
    test = pd.DataFrame(Xt, columns=names)
    result: dict = {"benchmark": "gbdt",
                    "config": {**cfg, **params, "min_count_rule": args.min_count_rule, "sibling": args.sibling, "site_workers": args.workers,
                               "repeats": args.repeats, "threshold_repeats": args.threshold_repeats,
                               "cpu_count": os.cpu_count()}}
    insecure = cfg["key_bits"] < 2048
    if insecure:  # short keys: the explicit test mode, which threshold key shares need to load
        os.environ["EHR_FED_ALLOW_INSECURE_KEYS"] = "1"

    t0 = time.perf_counter()
    ref = xgb.XGBClassifier(tree_method="hist", n_jobs=1, **params).fit(pooled[names].to_numpy(),
                                                                       pooled["label"].to_numpy())
    result["xgboost_pooled"] = {"seconds": time.perf_counter() - t0,
                                "test_auc": float(roc_auc_score(yt, ref.predict_proba(Xt)[:, 1]))}

    def details(model, seconds: float, rounds: list[float]) -> dict:
        stats = model.histogram_stats_
        key_bits = cfg["key_bits"] - 2  # plaintext bits a ciphertext holds
        n_bins = cfg["bins"] + 1
        per_tree = np.diff([0.0] + rounds)
        return {
            "seconds": seconds,
            "seconds_per_tree_median": float(np.median(per_tree)) if len(per_tree) else None,
            "setup_before_first_tree_and_first_tree": rounds[0] if rounds else None,
            "test_auc": float(roc_auc_score(yt, model.predict_proba(test)[:, 1])),
            "precision_bits": model.precision_,
            "nodes_per_tree": float(np.mean([t.n_nodes for t in model.trees_])),
            "bins_per_node_dense": n_bins * len(names),
            "bins_per_node_sent": stats["bins_per_node"],
            "histogram_fields_per_tree": stats["fields"] / len(model.trees_),
            "histogram_bits_per_field": stats["bits"] / max(stats["fields"], 1),
            # estimated: histogram bits / plaintext bits per ciphertext (packing overhead not counted)
            "estimated_ciphertexts_per_tree_per_site": stats["bits"] / key_bits / len(model.trees_),
        }

    first: dict[str, dict] = {}

    def run(variant: str, site_keys, workers: str | None = None):
        encrypted = variant != "plaintext"
        fed = Federation.in_process(tables, encrypted=encrypted, allow_insecure=insecure,
                                    workers=workers or args.workers, site_keys=site_keys,
                                    masks=variant != "masks_off")
        model = FederatedGradientBoostingClassifier(encrypted=encrypted, min_count_rule=args.min_count_rule,
                                                    sibling=args.sibling, **params)
        rounds: list[float] = []
        with fed:
            t = time.perf_counter()
            wall, cpu, _ = timed(lambda: model.fit(fed, progress=lambda info: rounds.append(time.perf_counter() - t)))
        if variant not in first:
            first[variant] = details(model, wall, rounds)
        return wall, cpu, model

    def same_model(a, b) -> bool:
        return len(a.trees_) == len(b.trees_) and all(
            x.to_routing() == y.to_routing() for x, y in zip(a.trees_, b.trees_, strict=True)) and np.array_equal(
            a.predict_proba(test), b.predict_proba(test))

    if args.skip_encrypted:
        wall, cpu, m_plain = run("plaintext", None)
        plain = first["plaintext"]
        result["federated_plaintext"] = plain
    else:
        from ehr_fed.federation.keys import SiteKeys, run_ceremony

        keys, result["key_ceremony_s"] = {}, {}
        for scheme in ("single", "threshold"):
            keys[scheme] = {sid: SiteKeys.generate(sid) for sid in tables}
            t_keys = time.perf_counter()
            run_ceremony(keys[scheme], n_length=cfg["key_bits"], allow_insecure=insecure, scheme=scheme)
            result["key_ceremony_s"][scheme] = round(time.perf_counter() - t_keys, 3)
        models = compare(result, keys=keys, run=run, identical=same_model, repeats=args.repeats,
                         threshold_repeats=args.threshold_repeats, check_cost=True,
                         cost_run=lambda v, k: run(v, k, "sequential"), cost_repeats=args.cost_repeats)
        m_enc, m_plain = models["masks_on"][0], models["plaintext"][0]
        plain, enc = first["plaintext"], first["masks_on"]
        plain["seconds"] = result["variants"]["wall_s"]["plaintext"]["median"]
        enc["seconds"] = result["variants"]["wall_s"]["masks_on"]["median"]
        plain["method"] = enc["method"] = "seconds: median of the runs (see variants); the rest: the first run"
        result["federated_plaintext"] = plain
        result["federated_encrypted"] = enc
        result["encrypted_identical_to_plaintext"] = len(m_enc.trees_) == len(m_plain.trees_) and all(
            a.to_routing() == b.to_routing() for a, b in zip(m_enc.trees_, m_plain.trees_, strict=True))
        check(result, "encrypted_identical_to_plaintext", result["encrypted_identical_to_plaintext"],
              trees_encrypted=len(m_enc.trees_), trees_plaintext=len(m_plain.trees_))
        check(result, "encrypted_auc_equals_plaintext", abs(enc["test_auc"] - plain["test_auc"]) < 1e-9,
              encrypted=enc["test_auc"], plaintext=plain["test_auc"])
        result["ratio_encrypted_vs_plaintext"] = enc["seconds"] / plain["seconds"]
        result["auc_gap_vs_xgboost"] = enc["test_auc"] - result["xgboost_pooled"]["test_auc"]
    result["ratio_plaintext_vs_xgboost"] = plain["seconds"] / result["xgboost_pooled"]["seconds"]
    try:
        from ehr_fed.crypto import shutdown_workers

        shutdown_workers()
    except ImportError:
        pass
    return result


if __name__ == "__main__":
    sys.exit(finish(main()))
