"""Benchmark: what differential privacy costs in accuracy, on a synthetic federation.

A synthetic federation (``ehr-fed synth``: 3 hospitals, readmission_30d, ~10,000 index events by default)
is harmonized, split by patient into train (70 %) and test (30 %), and trained as an in-process federation
of plaintext sums (the noise and the released numbers are the same as over Paillier sums; the tests check
that the encrypted private fit runs). In the same run:

* ``logreg`` non-private: ``FederatedLogisticRegression(penalty="l2")`` on the demo's features;
* ``logreg`` private at epsilon in {0.5, 1, 2, 4, 8} (delta 1e-6, 5 Newton rounds, one index event per
  patient), ``--repeats`` fits each (fresh noise), reported as median and min..max;
* ``gbdt`` non-private (30 trees, depth 3, 32 bins, learning rate 0.2) on the same features;
* ``gbdt`` private at the same epsilons in the configuration that suits a small budget (:data:`GBDT_PRIVATE`:
  6 trees of depth 2, 8 bins, learning rate 0.5, the Hessian min-count rule, so 12 private levels and no
  count channel), ``--repeats`` fits each; the non-private fit of that configuration is reported beside it
  (``gbdt_private_configuration_nonprivate``), so the cost of the configuration and of the noise show apart.

Test-split AUC and calibration slope are computed on the pooled test rows. Prints one JSON document (also
a ``table`` of rows for the README) and exits 1 when a check fails: at epsilon = 2 the median private LR test
AUC is within 0.01 of the non-private fit, and every private fit spent at most its planned epsilon.
``--quick``: 3 x 1,000 patients, 2 repeats (smoke run).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import check, finish

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
GBDT_NONPRIVATE = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2, "max_bin": 32}
GBDT_PRIVATE = {"n_estimators": 6, "max_depth": 2, "learning_rate": 0.5, "max_bin": 8, "min_count_rule": "hessian"}
META = ("site_id", "person_key", "index_time", "label")


def private_rows(fit, test, eps: float, repeats: int, base: dict) -> tuple[dict, bool]:
    """Median (min..max) test AUC and calibration slope of ``repeats`` private fits at ``eps``."""
    aucs, slopes, spent, secs, m = [], [], [], [], None
    for _ in range(repeats):
        t = time.perf_counter()
        m = fit(eps)
        secs.append(time.perf_counter() - t)
        s = scores(m, test)
        aucs.append(s["auc"])
        slopes.append(s["calibration_slope"])
        spent.append(m.dp_["epsilon"])
    row = {"epsilon": eps, "auc": summarize(aucs), "calibration_slope": summarize(slopes),
           "epsilon_spent": max(spent), "auc_minus_nonprivate": float(np.median(aucs) - base["auc"]),
           "fit_s": summarize(secs)}
    return row, max(spent) <= eps * (1 + 1e-9)


def load_tables(patients: int, cache: Path, seed: int) -> tuple[dict, dict, object]:
    from ehr_fed.demo import DemoConfig, harmonize_sites, make_federation, split_tables
    from ehr_fed.mapping import load_study

    cfg = DemoConfig(n_patients=patients, cache_dir=cache, progress=False, seed=seed)
    quiet = lambda *_: None  # noqa: E731
    fed_yaml = make_federation(cfg, quiet)
    sites = harmonize_sites(fed_yaml, quiet)

    study = load_study(Path(fed_yaml).parent / f"{cfg.study}.yaml")
    train, test = split_tables({s: d.table for s, d in sites.items()}, 0.3)
    return train, test, study


def scores(model, test: dict[str, pd.DataFrame]) -> dict[str, float]:
    from ehr_fed.demo import metrics

    pooled = pd.concat(test.values(), ignore_index=True)
    m = metrics(pooled["label"].to_numpy(), model.predict_proba(pooled)[:, 1])
    return {"auc": float(m["auc"]), "calibration_slope": float(m["calibration_slope"])}


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=5000, help="mean patients per hospital (5000)")
    ap.add_argument("--repeats", type=int, default=5, help="private fits per epsilon (5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/bench-dp"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.repeats = 1000, 2

    from ehr_fed.demo import LR_FEATURES
    from ehr_fed.federation import Federation
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    t0 = time.perf_counter()
    train, test, study = load_tables(args.patients, args.cache_dir, args.seed)
    feats = [f for f in LR_FEATURES["readmission_30d"] if f in study.feature_names]
    report: dict = {
        "benchmark": "dp_utility", "python": platform.python_version(), "sites": len(train),
        "index_events": {"train": int(sum(len(t) for t in train.values())),
                         "test": int(sum(len(t) for t in test.values())),
                         "train_patients": int(sum(t["person_key"].nunique() for t in train.values()))},
        "lr_features": feats, "repeats": args.repeats, "delta": 1e-6,
        "setup": "in-process federation, plaintext sums (noise identical to encrypted); test AUC / "
                 "calibration slope on the pooled 30 % patient split",
    }
    rows, spent_ok = [], True
    sub = {k: v[[c for c in v.columns if c in META or c in feats]] for k, v in train.items()}
    with Federation.in_process(train, encrypted=False, study=study) as fed, \
            Federation.in_process(sub, encrypted=False, study=study) as gfed, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = FederatedLogisticRegression(encrypted=False, penalty="l2", features=feats).fit(fed)
        base_s = scores(base, test)
        gb_s = scores(FederatedGradientBoostingClassifier(encrypted=False, **GBDT_NONPRIVATE).fit(gfed), test)
        report["gbdt_private_configuration_nonprivate"] = scores(
            FederatedGradientBoostingClassifier(encrypted=False, **GBDT_PRIVATE).fit(gfed), test)
        report["gbdt_configurations"] = {"nonprivate": GBDT_NONPRIVATE, "private": GBDT_PRIVATE}
        for eps in EPSILONS:
            if math.isinf(eps):
                for name, s in (("logreg", base_s), ("gbdt", gb_s)):
                    rows.append({"epsilon": "inf", "model": name, "auc": s["auc"],
                                 "calibration_slope": s["calibration_slope"], "epsilon_spent": None})
                continue
            row, ok = private_rows(lambda e: FederatedLogisticRegression(
                encrypted=False, penalty="l2", features=feats, dp={"epsilon": e}).fit(fed), test, eps,
                args.repeats, base_s)
            rows.append({"model": "logreg", **row})
            spent_ok &= ok
            row, ok = private_rows(lambda e: FederatedGradientBoostingClassifier(
                encrypted=False, **GBDT_PRIVATE, dp={"epsilon": e}).fit(gfed), test, eps, args.repeats, gb_s)
            rows.append({"model": "gbdt", **row})
            spent_ok &= ok
    report["table"] = rows
    report["wall_s"] = time.perf_counter() - t0
    at2 = next(r for r in rows if r["epsilon"] == 2.0 and r["model"] == "logreg")
    check(report, "lr_auc_at_epsilon_2_within_0.01", abs(at2["auc_minus_nonprivate"]) <= 0.01,
          median_auc=at2["auc"]["median"], nonprivate_auc=base_s["auc"])
    check(report, "epsilon_spent_at_most_planned", spent_ok)
    return report


if __name__ == "__main__":
    sys.exit(finish(main()))
