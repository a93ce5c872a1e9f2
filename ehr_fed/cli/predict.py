"""``ehr-fed predict``: batch scoring for scheduled jobs.

Logs are JSON lines on stderr, one object per event - ``start``, ``harmonized``,
``done`` or ``error``, and ``log`` for library log messages and warnings - each with ``ts`` (UTC), ``cmd``, ``event``, so cron mail,
Airflow task logs or a log shipper can parse them. An ``error`` carries a short
``reason`` code and the ``exit_code``.

Exit codes
----------
0  scores written
1  an input problem: model file (missing, edited: checksum mismatch), mapping or study config, source,
   too many quarantined records, fewer index events than --min-index-events (``too_few_index_events``:
   typically another site's mapping), unexpected failure (nothing written)
2  usage: bad arguments or output suffix (nothing written)
3  the site's feature table or the study does not match the model's schema (column diff in the log)
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_SCHEMA = 0, 1, 2, 3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="score every index event of a site with a saved model (for scheduled jobs)",
        description=(
            "Harmonize a site's FHIR or OMOP source with its mapping config and the model's study spec, "
            "check the feature schema, and write one score per index event atomically. "
            "Idempotent: the same inputs give the same bytes. Logs are JSON lines on stderr. "
            "Exit codes: 0 written, 1 input error, 2 usage, 3 schema mismatch with the model."
        ),
    )
    p.add_argument("--model", required=True, type=Path, help="model file written by 'ehr-fed train'")
    p.add_argument("--source", required=True, choices=["fhir", "omop"])
    p.add_argument("--input", required=True, help="FHIR file/folder, OMOP DuckDB file/folder, or PostgreSQL URL")
    p.add_argument("--mapping", required=True, type=Path, help="the site's mapping config (YAML)")
    p.add_argument("--study", type=Path,
                   help="the study spec the model was trained with (required unless the model embeds it)")
    p.add_argument("--out", required=True, type=Path,
                   help="output .parquet or .csv (quarantined records go to <out>.quarantine.jsonl)")
    p.add_argument("--strict", action="store_true", help="validate every FHIR resource with fhir.resources")
    p.add_argument("--workdir", type=Path, help="where large sources spill (default: a temporary folder)")
    p.add_argument("--min-index-events", type=int, default=1,
                   help="fail (exit 1, nothing written) when the mapping matches fewer index events (1)")
    p.set_defaults(func=run)


def log_event(event: str, **fields) -> None:
    """Print one JSON-lines log record on stderr."""
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cmd": "predict", "event": event}
    record.update(fields)
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)


class _JsonLogHandler(logging.Handler):
    """Library log messages (and warnings) as ``log`` events, so that stderr stays pure JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        log_event("log", level=record.levelname.lower(), logger=record.name, message=record.getMessage())


@contextlib.contextmanager
def json_logging():
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_JsonLogHandler()]
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers = saved


def _classify(exc: BaseException) -> tuple[str, int]:
    """(reason code, exit code) of a failure."""
    from ehr_fed.cohort import QuarantineThresholdError
    from ehr_fed.cohort.pipeline import TooFewIndexEventsError
    from ehr_fed.mapping.problems import ConfigError
    from ehr_fed.models.persistence import ModelFormatError
    from ehr_fed.models.scoring import ScoringSchemaError, StudyRequiredError

    table = [
        (ScoringSchemaError, "schema_mismatch", EXIT_SCHEMA),
        (StudyRequiredError, "study_required", EXIT_USAGE),
        (ModelFormatError, "model_format", EXIT_INPUT),
        (ConfigError, "config_error", EXIT_INPUT),
        (QuarantineThresholdError, "quarantine_threshold", EXIT_INPUT),
        (TooFewIndexEventsError, "too_few_index_events", EXIT_INPUT),
        (PermissionError, "permission_denied", EXIT_INPUT),
        (FileNotFoundError, "not_found", EXIT_INPUT),
        (ValueError, "invalid_input", EXIT_INPUT),
    ]
    for cls, reason, code in table:
        if isinstance(exc, cls):
            return reason, code
    return "unexpected", EXIT_INPUT


def run(args) -> int:
    from ehr_fed.cli.common import private_file
    from ehr_fed.cohort.pipeline import check_index_events
    from ehr_fed.models.scoring import OUTPUT_SUFFIXES, predict_site, quarantine_path

    t0 = time.perf_counter()
    if args.out.suffix.lower() not in OUTPUT_SUFFIXES:
        message = f"--out must end in .parquet or .csv, got {args.out.name!r}"
        log_event("error", reason="bad_output", exit_code=EXIT_USAGE, message=message)
        print(f"ehr-fed predict: {message}", file=sys.stderr)
        return EXIT_USAGE
    log_event("start", model=str(args.model), source=args.source, input=str(args.input),
              mapping=str(args.mapping), study=str(args.study) if args.study else None, out=str(args.out))
    def log(event: str, **fields) -> None:
        log_event(event, **fields)
        if event == "harmonized":  # before anything is scored or written
            check_index_events(fields, args.min_index_events)

    try:
        with json_logging():
            result = predict_site(args.model, source=args.source, input=args.input, mapping=args.mapping,
                                  study=args.study, out=args.out, strict=args.strict, workdir=args.workdir,
                                  log=log)
        for path in (result.out, result.quarantine_file):
            if path is not None:
                private_file(path)  # scores and rejected records are patient level
    except Exception as exc:  # every failure becomes one parseable error record and an exit code
        reason, code = _classify(exc)
        extra = {}
        quarantine = getattr(exc, "quarantine", None)
        if quarantine is not None:
            extra["quarantine_file"] = str(quarantine.write(quarantine_path(args.out)))
        log_event("error", reason=reason, exit_code=code, error=type(exc).__name__, message=str(exc), **extra)
        print(f"ehr-fed predict: {exc}", file=sys.stderr)
        return code
    log_event("done", duration_s=round(time.perf_counter() - t0, 3), **result.as_dict())
    return EXIT_OK
