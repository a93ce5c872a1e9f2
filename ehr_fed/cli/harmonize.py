"""``ehr-fed harmonize``: a site's FHIR or OMOP source -> the study's feature table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "harmonize", help="build a study's feature table from a site's FHIR or OMOP source",
        description="Read a FHIR or OMOP source, apply the site mapping and the study spec, and write the "
                    "feature table (parquet or csv), its summary and the quarantine of rejected records.")
    p.add_argument("--source", choices=("fhir", "omop"), required=True)
    p.add_argument("--input", required=True, help="FHIR file/folder, OMOP folder, DuckDB file or postgresql:// URL")
    p.add_argument("--mapping", type=Path, required=True, help="site mapping config (YAML)")
    p.add_argument("--study", type=Path, required=True, help="study spec (YAML)")
    p.add_argument("--out", type=Path, required=True, help="feature table: FILE.parquet or FILE.csv")
    p.add_argument("--summary-json", type=Path, help="write the summary as JSON here")
    p.add_argument("--strict", action="store_true", help="validate every FHIR resource with fhir.resources")
    p.add_argument("--workdir", type=Path, help="folder where large sources spill")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="force the progress bar on (--progress) or off (--no-progress); default: long runs")
    p.add_argument("--min-index-events", type=int, default=1,
                   help="fail (exit 1, nothing written) when the mapping matches fewer index events (1)")
    p.set_defaults(func=run)


def quarantine_path(out: Path) -> Path:
    """``<out>.quarantine.jsonl`` beside the feature table."""
    return out.with_name(out.name + ".quarantine.jsonl")


def write_table(table, out: Path) -> None:
    """Write a feature table (patient level: mode 0600, atomically)."""
    from ehr_fed.cohort.pipeline import write_private

    if out.suffix.lower() == ".csv":
        write_private(out, lambda tmp: table.to_csv(tmp, index=False))
    else:
        write_private(out, lambda tmp: table.to_parquet(tmp, index=False))


def run(args) -> int:
    from ehr_fed.cli.common import check_writable
    from ehr_fed.cohort import QuarantineThresholdError, harmonize
    from ehr_fed.cohort.pipeline import check_index_events, write_private
    from ehr_fed.mapping import ConfigError

    if args.out.suffix.lower() not in (".parquet", ".csv"):
        print(f"error: --out {args.out} must end in .parquet or .csv", file=sys.stderr)
        return 2
    if args.min_index_events < 0:
        print(f"error: --min-index-events must be >= 0, got {args.min_index_events}", file=sys.stderr)
        return 2
    for path in (args.out, quarantine_path(args.out), args.summary_json):
        if path is not None:
            check_writable(path)  # before the harmonization, not after it
    try:
        ft = harmonize(args.source, args.input, args.mapping, args.study, strict=args.strict,
                       workdir=args.workdir, progress=args.progress)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"error: {len(exc.problems)} problem(s) in the configs; nothing was read", file=sys.stderr)
        return 1
    except QuarantineThresholdError as exc:
        path = write_private(quarantine_path(args.out), exc.quarantine.write)
        print(f"error: {exc}\nquarantine: {path}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    check_index_events(ft.summary, args.min_index_events)  # nothing is written then
    write_table(ft.table, args.out)
    qpath = quarantine_path(args.out)
    _write_quarantine(ft, qpath)
    summary = dict(ft.summary, output=str(args.out), quarantine_file=str(qpath))
    if args.summary_json:
        text = json.dumps(summary, indent=2, default=str) + "\n"
        write_private(args.summary_json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    s = ft.summary
    print(f"{args.out}: {s['index_events']} index events, {s['positives']} positive, {s['persons']} persons; "
          f"quarantined {sum(s['quarantined'].values())} {s['quarantined'] or ''}".rstrip(), file=sys.stderr)
    return 0


def _write_quarantine(ft, path: Path) -> None:
    from ehr_fed.cohort.pipeline import write_private

    if ft.quarantine is not None:
        write_private(path, ft.quarantine.write)
    else:
        write_private(path, lambda tmp: tmp.write_text("", encoding="utf-8"))
