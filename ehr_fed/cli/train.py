"""``ehr-fed train``: train a federated model and write it as a model file.

::

    ehr-fed train logreg --federation federation.yaml [--study study.yaml] --out model.json \\
        [--penalty l2 --C 0.5] [--features age,los_days] [--plaintext] [--key-bits N --allow-insecure]
    ehr-fed train gbdt   --federation federation.yaml --out model.json [--n-estimators 50 --max-depth 4 ...]
        [--epsilon 4 --delta 1e-6]

Progress is reported per round (logistic regression) or per tree (boosting) on stderr; the coefficient table
of a logistic regression is printed on stdout. A private fit (``--epsilon``) prints the epsilon and delta it
spent on stdout.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

#: FederatedGradientBoostingClassifier parameters exposed as flags: (name, type, help)
GBDT_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("n_estimators", int, "number of trees (100)"),
    ("max_depth", int, "maximum tree depth (6)"),
    ("learning_rate", float, "shrinkage (0.3)"),
    ("max_bin", int, "maximum number of value bins per feature (256)"),
    ("reg_lambda", float, "L2 regularization of leaf weights (1.0)"),
    ("gamma", float, "minimum loss reduction to split (0.0)"),
    ("min_child_weight", float, "minimum Hessian sum of a child (1.0)"),
    ("min_count_rule", str, "how leaves stay above the minimum cell count: count | hessian"),
    ("min_cell_count", int, "smallest number of pooled rows in a leaf (default: the federation policy's)"),
    ("hessian_export", str, "Hessian sums in exported models: keep | coarsen | strip"),
    ("precision", int, "fractional bits of the fixed-point gradients (default: automatic)"),
    ("sibling", str, "larger child of a split: derive (at the decrypting site, default) | both (sites compute it)"),
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--federation", type=Path, required=True, help="federation YAML (sites, transport, keys)")
    p.add_argument("--study", type=Path, help="study spec YAML (default: the one the federation YAML names)")
    p.add_argument("--out", type=Path, required=True, help="model file to write (JSON)")
    p.add_argument("--plaintext", action="store_true",
                   help="sum the sites' statistics without encryption (tests and demos only)")
    p.add_argument("--key-bits", type=int, help="Paillier key size (default: the federation YAML's, 2048)")
    p.add_argument("--allow-insecure", action="store_true", help="allow keys below 2048 bits (tests only)")
    p.add_argument("--checkpoint-dir", type=Path, help="journal of completed rounds; a rerun resumes from it")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out model file")


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a federated model",
                                  description="Train a federated model across the sites of a federation.")
    models = train.add_subparsers(dest="model", metavar="{logreg,gbdt}", required=True)

    lr = models.add_parser("logreg", help="federated logistic regression (Newton-Raphson, encrypted sums)",
                           description="Federated logistic regression: equals the pooled fit, with "
                                       "standard errors, confidence intervals and odds ratios.")
    _common(lr)
    lr.add_argument("--penalty", choices=("none", "l2"), default="l2",
                    help="l2 (default, as scikit-learn's LogisticRegression: finite estimates even when a rare "
                         "term separates the classes) or none (unpenalized maximum likelihood, the pooled "
                         "statsmodels fit; refused up front when a term separates the classes)")
    lr.add_argument("--C", type=float, default=1.0,
                    help="inverse L2 strength (with --penalty l2; larger is weaker, 1.0)")
    lr.add_argument("--no-intercept", action="store_true", help="fit without an intercept")
    lr.add_argument("--max-iter", type=int, default=25, help="maximum Newton rounds (25)")
    lr.add_argument("--tol", type=float, default=1e-8, help="convergence: largest Newton step (1e-8)")
    lr.add_argument("--missing-values", choices=("mean_impute_with_indicator", "mean_impute", "native"),
                    help="missing-value handling (default: the study spec's)")
    lr.add_argument("--features", help="comma-separated subset of the study's features (default: all)")
    lr.add_argument("--epsilon", type=float,
                    help="differential privacy: total epsilon of this training session (default: the "
                         "federation's privacy dp setting, else off)")
    lr.add_argument("--delta", type=float, help="differential privacy delta (default 1e-6)")
    lr.add_argument("--dp-rounds", type=int, help="Newton rounds of a private fit (5)")
    lr.set_defaults(func=run_logreg)

    gb = models.add_parser("gbdt", help="federated gradient-boosted trees (XGBoost-compatible)",
                           description="Federated histogram gradient boosting; the model file embeds "
                                       "XGBoost JSON.")
    _common(gb)
    for name, typ, help_ in GBDT_FLAGS:
        gb.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, help=help_)
    gb.add_argument("--epsilon", type=float,
                    help="differential privacy: total epsilon of this training session (default: the "
                         "federation's privacy dp setting, else off); fewer trees, shallower trees and fewer "
                         "bins leave more budget per level")
    gb.add_argument("--delta", type=float, help="differential privacy delta (default 1e-6)")
    gb.set_defaults(func=run_gbdt)


def _federation(args):
    from ehr_fed.cli.common import check_enough_sites
    from ehr_fed.cli.filekind import expect_kind
    from ehr_fed.federation import Federation

    expect_kind(args.federation, "federation", "ehr-fed train")
    fed = Federation.from_yaml(args.federation, study=args.study, encrypted=not args.plaintext,
                               key_bits=args.key_bits, allow_insecure=args.allow_insecure,
                               checkpoint_dir=args.checkpoint_dir)
    try:
        check_enough_sites(fed)
    except BaseException:
        fed.close()
        raise
    return fed


def _report_round(entry: dict[str, Any]) -> None:
    extra = f" (step halved x{entry['halving']})" if entry.get("halving") else ""
    done = ", converged" if entry.get("converged") else ""
    print(f"round {entry['round']:>3}: log-likelihood {entry['loglik']:.6f}, largest step "
          f"{entry['step']:.3g}{extra}{done}", file=sys.stderr, flush=True)


def _errors():
    from ehr_fed.federation import FederationError
    from ehr_fed.federation.config import FederationConfigError
    from ehr_fed.privacy import DisclosureError

    return (FederationError, FederationConfigError, DisclosureError, ValueError, FileNotFoundError)


def _check_out(args) -> None:
    from ehr_fed.cli.common import check_overwrite, check_writable

    check_overwrite(args.out, args.force, "model file")
    check_writable(args.out)


def _separation_hint(exc: Exception) -> str:
    """The estimator's advice in the words of this command line."""
    return str(exc).replace("or fit with penalty='l2'", "or train with --penalty l2 (--C sets its strength)")


def run_logreg(args) -> int:
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.models.logreg_newton import PerfectSeparationError

    _check_out(args)
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    model = FederatedLogisticRegression(
        penalty=args.penalty, C=args.C, fit_intercept=not args.no_intercept, max_iter=args.max_iter,
        tol=args.tol, encrypted=not args.plaintext, missing_values=args.missing_values, features=features,
        dp=_dp_option(args),
    )
    try:
        with _federation(args) as fed, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(f"training logistic regression over {len(fed.site_ids)} sites "
                  f"({'plaintext' if args.plaintext else 'Paillier-encrypted'} sums, penalty "
                  f"{args.penalty}{f', C={args.C:g}' if args.penalty == 'l2' else ''})", file=sys.stderr)
            model.fit(fed, callback=_report_round)
    except PerfectSeparationError as exc:
        print(f"error: {_separation_hint(exc)}", file=sys.stderr)
        return 1
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    model.save(args.out)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(model.summary().round(6).to_string())
    print(f"model written to {args.out} ({model.n_samples_} rows, {model.n_sites_} sites, "
          f"{model.n_iter_} rounds)", file=sys.stderr)
    dp = getattr(model, "dp_", None)
    if dp is not None:
        k, w = dp["events_per_patient"], dp.get("weighted_events") or 0
        kept = f" ({w} in the Newton rounds, weighted to count as {k})" if w > k else ""
        print(f"differential privacy: epsilon {dp['epsilon']:.4g}, delta {dp['delta']:g} spent over "
              f"{dp['releases']} releases (row clip norm {dp['clip_norm']:.4g}, up to {k} "
              f"index event(s) per patient{kept})")
    return 0


def _dp_option(args) -> dict | None:
    """The ``dp`` option of a model from --epsilon / --delta (/ --dp-rounds, logistic regression); None: unset."""
    if args.epsilon is None:
        if args.delta is not None or getattr(args, "dp_rounds", None) is not None:
            from ehr_fed.cli.common import UsageError

            flags = "--delta and --dp-rounds need" if hasattr(args, "dp_rounds") else "--delta needs"
            raise UsageError(f"ehr-fed train: {flags} --epsilon")
        return None
    dp: dict = {"epsilon": args.epsilon}
    if args.delta is not None:
        dp["delta"] = args.delta
    if getattr(args, "dp_rounds", None) is not None:
        dp["rounds"] = args.dp_rounds
    return dp


def run_gbdt(args) -> int:
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    params = {name: getattr(args, name) for name, _, _ in GBDT_FLAGS if getattr(args, name) is not None}
    _check_out(args)

    def progress(entry: dict[str, Any]) -> None:
        print(f"tree {entry.get('tree')}/{entry.get('n_estimators')}: {entry.get('n_nodes')} nodes, depth "
              f"{entry.get('depth')}", file=sys.stderr, flush=True)

    try:
        model = FederatedGradientBoostingClassifier(encrypted=not args.plaintext, dp=_dp_option(args), **params)
        with _federation(args) as fed:
            print(f"training gradient boosting over {len(fed.site_ids)} sites", file=sys.stderr)
            model.fit(fed, progress=progress)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model.save(args.out)
    print(f"model written to {args.out}", file=sys.stderr)
    dp = getattr(model, "dp_", None)
    if dp is not None:
        from ehr_fed.models.persistence import dp_summary

        print(f"{dp_summary(dp)}; {dp['levels_released']} of {dp['levels_planned']} planned tree levels "
              f"released, epsilon {max(dp['epsilon_per_level'].values(), default=0.0):.3g} per level")
    return 0
