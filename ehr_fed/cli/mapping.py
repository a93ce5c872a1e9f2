"""``ehr-fed mapping schema|validate|profile|preview``: the mapping-authoring loop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("mapping", help="author site mapping configs and study specs",
                                   description="Author mapping configs: profile -> edit -> validate -> preview.")
    sub = parser.add_subparsers(dest="mapping_command", metavar="ACTION")

    p = sub.add_parser("schema", help="write the JSON Schema of site mappings or study specs")
    p.add_argument("--kind", choices=("mapping", "study"), default="mapping")
    p.add_argument("--out", type=Path, help="file to write (default: stdout)")
    p.set_defaults(func=_schema)

    p = sub.add_parser("validate", help="validate study specs and site mappings (kind detected)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(func=_validate)

    p = sub.add_parser("profile", help="local codes, units and visit classes a source uses, and which are unmapped",
                       description="What a source uses (visit classes, code systems, codes, units) and what the "
                                   "mapping makes of it; LOINC and SNOMED CT codes checked (format, check digit). "
                                   "With --study: which codes feed which study feature and which feed none, lab "
                                   "units harmonize would quarantine, and sources without values.")
    _source_args(p)
    p.add_argument("--mapping", type=Path, help="site mapping to check coverage against")
    p.add_argument("--study", type=Path, help="study spec: say which codes feed which feature (needs --mapping)")
    p.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    p.add_argument("--limit", type=int, default=40, help="rows per section in the table (0: all)")
    p.set_defaults(func=_profile)

    p = sub.add_parser("preview", help="the first rows of the feature table a mapping and study give")
    _source_args(p)
    p.add_argument("--mapping", type=Path, required=True)
    p.add_argument("--study", type=Path, required=True)
    p.add_argument("--rows", type=int, default=10)
    p.set_defaults(func=_preview)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=("fhir", "omop"), required=True)
    p.add_argument("--input", required=True, help="FHIR file/folder, OMOP folder, DuckDB file or postgresql:// URL")


def _schema(args) -> int:
    from ehr_fed.mapping.schema import json_schema_text

    text = json_schema_text(args.kind)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _validate(args) -> int:
    from ehr_fed.cli.filekind import wrong_kind
    from ehr_fed.mapping import validate_file

    bad = 0
    for path in args.files:
        other = wrong_kind(path, "mapping", "ehr-fed mapping validate", also=("study",))
        if other:
            print(f"error: {other}", file=sys.stderr)
            bad += 1
            continue
        kind, problems = validate_file(path)
        for p in problems:
            print(p)
        if problems:
            bad += 1
        else:
            print(f"{path}: ok ({'study spec' if kind == 'study' else 'site mapping'})")
    return 1 if bad else 0


def _print_problems(exc) -> int:
    for p in exc.problems:
        print(p, file=sys.stderr)
    return 1


def _profile(args) -> int:
    from ehr_fed.cohort import charlson
    from ehr_fed.mapping import ConfigError, load_mapping, load_study
    from ehr_fed.mapping.profile import format_profile, profile_json, profile_records
    from ehr_fed.sources import read_source

    if args.study and not args.mapping:
        print("error: --study needs --mapping (the codes feed the study through the site mapping)",
              file=sys.stderr)
        return 2
    try:
        mapping = load_mapping(args.mapping) if args.mapping else None
        study = load_study(args.study) if args.study else None
    except ConfigError as exc:
        return _print_problems(exc)
    options = None if mapping is None else (mapping.fhir if args.source == "fhir" else mapping.omop)
    known = list(mapping.code_systems) if mapping else None
    extra = charlson.concept_sets()
    with read_source(args.source, args.input, options=options, known_systems=known) as records:
        rows = profile_records(records, mapping, study, extra_concept_sets=extra,
                               extra_features={name: "charlson" for name in extra})
    if args.json:
        print(profile_json(rows))
    else:
        print(format_profile(rows, limit=args.limit or None))
    n_bad = sum(1 for r in rows if r.problem)
    if n_bad:
        print(f"{n_bad} problem(s) found: see the rows marked BAD (or \"problem\" in --json)", file=sys.stderr)
    return 0


def _preview(args) -> int:
    import pandas as pd

    from ehr_fed.cohort import harmonize
    from ehr_fed.cohort.pipeline import check_index_events
    from ehr_fed.mapping import ConfigError

    try:
        ft = harmonize(args.source, args.input, args.mapping, args.study)
    except ConfigError as exc:
        return _print_problems(exc)
    check_index_events(ft.summary, 1)  # a mapping that matches nothing is the mistake to show
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(ft.table.head(args.rows).to_string())
    print(json.dumps(ft.summary, indent=2, default=str))
    return 0
