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
    p.set_defaults(func=run)


def quarantine_path(out: Path) -> Path:
    """``<out>.quarantine.jsonl`` beside the feature table."""
    return out.with_name(out.name + ".quarantine.jsonl")


def write_table(table, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)


def run(args) -> int:
    from ehr_fed.cohort import QuarantineThresholdError, harmonize
    from ehr_fed.mapping import ConfigError

    if args.out.suffix.lower() not in (".parquet", ".csv"):
        print(f"error: --out {args.out} must end in .parquet or .csv", file=sys.stderr)
        return 2
    try:
        ft = harmonize(args.source, args.input, args.mapping, args.study, strict=args.strict,
                       workdir=args.workdir, progress=args.progress)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"error: {len(exc.problems)} problem(s) in the configs; nothing was read", file=sys.stderr)
        return 1
    except QuarantineThresholdError as exc:
        path = exc.quarantine.write(quarantine_path(args.out))
        print(f"error: {exc}\nquarantine: {path}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_table(ft.table, args.out)
    qpath = quarantine_path(args.out)
    _write_quarantine(ft, qpath)
    summary = dict(ft.summary, output=str(args.out), quarantine_file=str(qpath))
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    s = ft.summary
    print(f"{args.out}: {s['index_events']} index events, {s['positives']} positive, {s['persons']} persons; "
          f"quarantined {sum(s['quarantined'].values())} {s['quarantined'] or ''}".rstrip(), file=sys.stderr)
    return 0


def _write_quarantine(ft, path: Path) -> None:
    if ft.quarantine is not None:
        ft.quarantine.write(path)
    else:
        path.write_text("", encoding="utf-8")
