"""``ehr-fed predict``: batch scoring for scheduled jobs.

Logs are JSON lines on stderr (one object per event: ``start``, ``done`` or
``error``), so cron mail, Airflow task logs or a log shipper can parse them.
Exit codes: 0 success, 1 input or schema error (nothing written), 2 usage.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="score every index event of a site with a saved model (for scheduled jobs)",
        description=(
            "Harmonize a site's FHIR or OMOP source with its mapping config and the model's study spec, "
            "check the feature schema, and write one score per index event atomically. "
            "Idempotent: the same inputs give the same rows and scores."
        ),
    )
    p.add_argument("--model", required=True, type=Path, help="model file written by 'ehr-fed train'")
    p.add_argument("--source", required=True, choices=["fhir", "omop"])
    p.add_argument("--input", required=True, help="FHIR file/folder, OMOP DuckDB file/folder, or PostgreSQL URL")
    p.add_argument("--mapping", required=True, type=Path, help="the site's mapping config (YAML)")
    p.add_argument("--study", type=Path, help="study spec (default: the one embedded in the model)")
    p.add_argument("--out", required=True, type=Path, help="output .parquet or .csv")
    p.add_argument("--strict", action="store_true", help="validate every FHIR resource with fhir.resources")
    p.set_defaults(func=run)


def _log(event: str, **fields) -> None:
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cmd": "predict", "event": event}
    record.update(fields)
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)


def run(args) -> int:
    from ehr_fed.models.scoring import ScoringSchemaError, predict_site

    if args.out.suffix.lower() not in (".parquet", ".csv"):
        _log("error", reason="bad_output", message=f"--out must end in .parquet or .csv, got {args.out.name}")
        return 1
    _log("start", model=str(args.model), source=args.source, input=str(args.input), out=str(args.out))
    try:
        result = predict_site(
            args.model,
            source=args.source,
            input=args.input,
            mapping=args.mapping,
            study=args.study,
            out=args.out,
            strict=args.strict,
        )
    except ScoringSchemaError as exc:
        _log("error", reason="schema_mismatch", message=str(exc))
        print(f"ehr-fed predict: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        _log("error", reason=type(exc).__name__, message=str(exc))
        print(f"ehr-fed predict: {exc}", file=sys.stderr)
        return 1
    _log("done", **result.as_dict())
    return 0
