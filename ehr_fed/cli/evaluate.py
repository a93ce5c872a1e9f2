"""``ehr-fed evaluate``: evaluate a model file across a federation and write an HTML (and JSON) report.

::

    ehr-fed evaluate --federation federation.yaml --model model.json --out report.html \\
        [--json report.json] [--study study.yaml] [--plaintext] [--key-bits N --allow-insecure] \\
        [--bins 10000] [--folds 5] [--no-local-only] [--validation split|loso|in-sample] [--test-fraction 0.3] \\
        [--epsilon 1 --delta 1e-6]

By default the evaluation is out of sample: each site's persons are split by a hash of their key, the model's
specification is refit on 70 % and evaluated on the other 30 % (less, down to 10 %, when a site's training
part would be too small for the refit under its parameters-per-row rule; stderr and the report say so.
``--validation loso``: leave-one-site-out;
``--validation in-sample``: the model file on all rows, labelled as such). The report and stderr say what
was evaluated and on how many rows (see :mod:`ehr_fed.cli.validation`).

Every site scores only a model it can verify: one whose file carries the signed transcript of a federated
training the site can replay, or whose digest its policy lists under ``approved_models``
(:mod:`ehr_fed.evaluation.provenance`). ``--epsilon`` makes the evaluation differentially private (noisy
score histograms charged to every site's budget, :mod:`ehr_fed.evaluation.private`); the epsilon it spent is
printed and in the reports.

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
    p.add_argument("--bins", type=int, help="score bins for AUC / ROC (10000; 20 with --epsilon)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the local-only models (5)")
    p.add_argument("--no-local-only", action="store_true", help="skip the local-only model comparison")
    p.add_argument("--validation", choices=("split", "loso", "in-sample"), default="split",
                   help="split (default): refit on a split of the persons, evaluate on the held-out ones; "
                        "loso: leave-one-site-out; in-sample: the model file on all rows (optimistic)")
    p.add_argument("--test-fraction", type=float,
                   help="share of each site's persons held out with --validation split (default 0.3, lowered "
                        "down to 0.1 when a site's training part would be too small for the refit; an explicit "
                        "value is never changed)")
    p.add_argument("--epsilon", type=float,
                   help="differential privacy: total epsilon of this evaluation (noisy histograms; default: the "
                        "federation's privacy.dp, else exact sums)")
    p.add_argument("--delta", type=float, help="differential privacy: delta of this evaluation (default 1e-6)")
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
    from ehr_fed.cli.common import check_writable
    from ehr_fed.evaluation.report import write_html, write_json
    from ehr_fed.federation import Federation

    _check_args(args)
    check_writable(args.out)
    if args.json:
        check_writable(args.json)
    try:
        from ehr_fed.cli.filekind import expect_kind

        expect_kind(args.federation, "federation", "ehr-fed evaluate")
        model = load_model(args.model)
        with Federation.from_yaml(args.federation, study=args.study, encrypted=not args.plaintext,
                                  key_bits=args.key_bits, allow_insecure=args.allow_insecure) as fed:
            from ehr_fed.cli.common import check_enough_sites

            check_enough_sites(fed)
            print(f"evaluating {args.model} over {len(fed.site_ids)} sites "
                  f"({'plaintext' if args.plaintext else 'Paillier-encrypted'} sums)", file=sys.stderr)
            report, validation = _evaluate(fed, model, args)
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        if "[model_" in str(exc) and "model_provenance" in str(exc):
            print(_PROVENANCE_HINT, file=sys.stderr)
        return 1
    report["validation"] = validation.as_dict()
    write_html(report, args.out)
    print(f"validation: {validation.description}", file=sys.stderr)
    print(f"report written to {args.out}", file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        _add_validation_json(args.json, validation)
        print(f"data written to {args.json}", file=sys.stderr)
    res = report["result"]
    print(f"evaluated on: {validation.scheme} ({validation.evaluated_rows} index events)")
    print(res.to_display_frame().to_string())
    from ehr_fed.models.persistence import dp_summary

    spent = dp_summary(getattr(model, "dp_", None))
    if spent:  # the privacy the model file's training spent
        print(f"model trained with {spent}")
    if res.dp is not None:  # a private evaluation: what it spent
        print(f"evaluation with differential privacy: epsilon {res.dp['epsilon']:.4g} of a planned "
              f"{res.dp['epsilon_planned']:g}, delta {res.dp['delta']:g} spent over {res.dp['releases']} private "
              "releases")
    if res.per_site is not None:
        for sid, row in res.per_site.iterrows():
            if not row.get("released", True):
                print(f"{sid}: {row.get('note')}", file=sys.stderr)
    return 0


def _check_args(args) -> None:
    """Option values that cannot work, refused before the federation is loaded (exit code 2)."""
    from ehr_fed.cli.common import UsageError

    if args.delta is not None and args.epsilon is None:
        raise UsageError("ehr-fed evaluate: --delta needs --epsilon")
    if args.bins is not None and args.bins < 2:
        raise UsageError(f"--bins must be at least 2, got {args.bins}")
    if args.folds < 2 and not args.no_local_only:
        raise UsageError(f"--folds must be at least 2 (cross-validation folds of the local-only models), got "
                         f"{args.folds}; or pass --no-local-only")
    if args.test_fraction is not None and not 0.0 < args.test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {args.test_fraction:g}")


def _evaluate(fed, model, args):
    """(report, validation) under ``args.validation`` (see :mod:`ehr_fed.cli.validation`)."""
    from ehr_fed.cli import validation as v
    from ehr_fed.evaluation import evaluate
    from ehr_fed.evaluation.report import build_report
    from ehr_fed.privacy import DisclosureError

    opts = {"local_only": not args.no_local_only, "k": args.folds}
    ekw = {"n_bins": args.bins, "dp": _dp_option(args)}
    if args.validation == "split":
        plan = v.plan_split(fed, model, args.test_fraction)  # the sites' parameters-per-row rule, up front
        if plan.note:
            print(f"note: {plan.note}", file=sys.stderr)
        f = plan.test_fraction
        train_fed, test_fed, n_train, n_test = v.split_federations(fed, f, allow_insecure=args.allow_insecure)
        with train_fed, test_fed:
            print(f"refitting the model's specification on {n_train} index events; {n_test} held out",
                  file=sys.stderr)
            try:
                fitted = v.refit(model, train_fed)
            except DisclosureError as exc:
                raise DisclosureError(
                    f"{exc}\nWith --validation split only {1 - f:.0%} of each site's persons train the "
                    "refit: hold out fewer (a smaller --test-fraction), or use --validation loso.",
                    rule=exc.rule, site_id=exc.site_id) from None
            result = evaluate(test_fed, fitted, **ekw)
            report = build_report(test_fed, model, result=result,
                                  evaluated_on=v.evaluated_on_split(f, n_train), **opts)
            report["evaluation_note"] = plan.note
        return report, v.Validation("split", v.describe_split(f, n_train, n_test, plan.note), n_test,
                                    train_rows=n_train, test_fraction=f,
                                    details={"note": plan.note} if plan.note else {})
    result = evaluate(fed, model, **ekw)
    n_rows = int(result.overall.get("n") or 0)
    if args.validation == "loso":
        from ehr_fed.evaluation.external import leave_one_site_out

        table = leave_one_site_out(fed, model)
        validation = v.Validation("loso", v.describe_loso(table, n_rows), n_rows)
        report = build_report(fed, model, result=result, evaluated_on=v.EVALUATED_ON_LOSO, **opts)
        report["result"].per_site = table
        return report, validation
    report = build_report(fed, model, result=result, evaluated_on=v.EVALUATED_ON_IN_SAMPLE, **opts)
    return report, v.Validation("in-sample", v.describe_in_sample(n_rows), n_rows)


_PROVENANCE_HINT = (
    "note: the sites evaluate a model file only when it carries the signed transcript of a training they can "
    "verify (ehr-fed train writes it) or when their policy lists its digest under privacy.approved_models. An "
    "in-process federation creates its sites' keys anew in every run, so it cannot verify a model trained in "
    "another run unless its YAML keeps the keys (keys: {dir: keys/}, with EHR_FED_KEY_PASSPHRASE set, before "
    "training): use --validation split (it refits the model's specification in this run), keep the keys and "
    "train again, or add the digest the error names to privacy.approved_models of the federation YAML.")


def _dp_option(args) -> dict | None:
    """The evaluation's ``dp`` from --epsilon / --delta (None: the federation's, else exact sums)."""
    if args.epsilon is None:
        return None
    return {"epsilon": args.epsilon, **({"delta": args.delta} if args.delta is not None else {})}


def _add_validation_json(path: Path, validation) -> None:
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    data["validation"] = validation.as_dict()
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
