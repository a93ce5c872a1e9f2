"""``ehr-fed demo``: the whole pipeline on synthetic hospitals (what ``make demo`` runs).

::

    ehr-fed demo [--sites 3] [--patients 3000] [--cache-dir .cache] [--out .cache/demo/report.html]

Generates (once; cached in ``<cache-dir>/demo-federation``) three synthetic hospitals, harmonizes every
site, computes federated statistics, trains encrypted (2048-bit Paillier) logistic regression and gradient
boosting, evaluates them against local-only and pooled models, prints a comparison table and writes an
HTML report.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole pipeline on synthetic hospitals (make demo)",
        description="Synthetic hospitals -> harmonize -> federated statistics -> encrypted logistic regression "
                    "and gradient boosting -> evaluation against local-only and pooled models -> HTML report.",
    )
    p.add_argument("--sites", type=int, default=3, help="number of hospitals (3)")
    p.add_argument("--patients", type=int, default=3000, help="mean patients per hospital (3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study", choices=("readmission_30d", "t2d_progression"), default="readmission_30d")
    p.add_argument("--trees", type=int, default=30, help="boosting rounds (30)")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                   help="where the synthetic federation is cached (.cache)")
    p.add_argument("--out", type=Path, default=None, help="HTML report (default: <cache-dir>/demo/report.html)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ehr_fed.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_sites=args.sites, n_patients=args.patients, seed=args.seed, study=args.study,
                     cache_dir=args.cache_dir, out_dir=(args.out.parent if args.out else args.cache_dir / "demo"),
                     progress=not args.no_progress)
    cfg.gbdt["n_estimators"] = args.trees
    t0 = time.perf_counter()
    result = run_demo(cfg, echo=lambda s: print(s, flush=True))
    if args.out and result.report != args.out:
        result.report.replace(args.out)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0
