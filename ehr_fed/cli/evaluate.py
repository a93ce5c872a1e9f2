"""``ehr-fed evaluate``: evaluate a model file across a federation and write an HTML (and JSON) report.

::

    ehr-fed evaluate --federation federation.yaml --model model.json --out report.html \\
        [--json report.json] [--study study.yaml] [--plaintext] [--key-bits N --allow-insecure] \\
        [--bins 10000] [--folds 5] [--no-local-only]

The overall metrics are printed on stdout; progress and errors go to stderr. Exit code 0 on success, 1 when
the federation, the model or the policy stops the evaluation (the message says which and what to do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate a model across the sites and write an HTML report",
        description="Federated evaluation of a model file: AUC, AUPRC, Brier, calibration, per-site "
                    "metrics, local-only and LACE comparison; writes a self-contained HTML report.")
    p.add_argument("--federation", type=Path, required=True, help="federation YAML (sites, transport, keys)")
    p.add_argument("--model", type=Path, required=True, help="model file written by ehr-fed train")
    p.add_argument("--out", type=Path, required=True, help="HTML report to write")
    p.add_argument("--json", type=Path, help="also write the report's data as JSON")
    p.add_argument("--study", type=Path, help="study spec YAML (default: the one the federation YAML names)")
    p.add_argument("--plaintext", action="store_true",
                   help="sum the sites' statistics without encryption (tests and demos only)")
    p.add_argument("--key-bits", type=int, help="Paillier key size (default: the federation YAML's, 2048)")
    p.add_argument("--allow-insecure", action="store_true", help="allow keys below 2048 bits (tests only)")
    p.add_argument("--bins", type=int, default=10_000, help="score bins for AUC / ROC (10000)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the local-only models (5)")
    p.add_argument("--no-local-only", action="store_true", help="skip the local-only model comparison")
    p.set_defaults(func=run)


def _errors():
    from ehr_fed.evaluation import EvaluationError
    from ehr_fed.federation import FederationError
    from ehr_fed.federation.config import FederationConfigError
    from ehr_fed.models import ModelFormatError
    from ehr_fed.privacy import DisclosureError

    return (EvaluationError, FederationError, FederationConfigError, ModelFormatError, DisclosureError,
            ValueError, FileNotFoundError)


def run(args: argparse.Namespace) -> int:
    from ehr_fed import load_model
    from ehr_fed.evaluation.report import build_report, write_html, write_json
    from ehr_fed.federation import Federation

    try:
        model = load_model(args.model)
        with Federation.from_yaml(args.federation, study=args.study, encrypted=not args.plaintext,
                                  key_bits=args.key_bits, allow_insecure=args.allow_insecure) as fed:
            print(f"evaluating {args.model} over {len(fed.site_ids)} sites "
                  f"({'plaintext' if args.plaintext else 'Paillier-encrypted'} sums)", file=sys.stderr)
            report = build_report(fed, model, local_only=not args.no_local_only, k=args.folds,
                                  n_bins=args.bins)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_html(report, args.out)
    print(f"report written to {args.out}", file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        print(f"data written to {args.json}", file=sys.stderr)
    res = report["result"]
    print(res.to_frame().to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
    for sid, row in res.per_site.iterrows():
        if not row["released"]:
            print(f"{sid}: {row['note']}", file=sys.stderr)
    return 0
