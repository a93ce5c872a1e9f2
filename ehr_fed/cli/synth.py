"""``ehr-fed synth``: write a federation of synthetic hospitals (FHIR and/or OMOP)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic hospitals (FHIR + OMOP) with known ground truth",
        description="Write one folder per synthetic hospital (FHIR R4 bulk NDJSON.gz and/or an OMOP CDM "
        "v5.4 DuckDB file, its mapping configs, its truth.parquet) and a federation.yaml.",
    )
    p.add_argument("--sites", type=int, default=3, help="number of hospitals (default 3)")
    p.add_argument("--patients", type=int, default=1000, help="mean patients per hospital (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--format", choices=("fhir", "omop", "both"), default="both", help="default both")
    p.add_argument("--study", choices=("readmission_30d", "t2d_progression"), default="readmission_30d",
                   help="study spec named by federation.yaml (default readmission_30d)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when OUT already holds a federation generated with these parameters")
    p.add_argument("--force", action="store_true", help="replace a federation that OUT already holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ehr_fed.synth.generate import MANIFEST, generate_federation, is_generated
    from ehr_fed.synth.profiles import default_profiles, site_sizes

    if args.sites < 1 or args.patients < 1:
        print(f"ehr-fed synth: --sites and --patients must be at least 1, got {args.sites} and "
              f"{args.patients}", file=sys.stderr)
        return 2
    if args.if_missing and is_generated(args.out, args.sites, args.patients, args.seed, args.format, args.study):
        print(f"{args.out}/federation.yaml is up to date (same parameters); nothing to do")
        return 0
    if (Path(args.out) / "federation.yaml").exists() and not (args.force or args.if_missing):
        print(f"ehr-fed synth: {args.out} already holds a federation (federation.yaml); pass --force to "
              "replace it, or choose another --out", file=sys.stderr)
        return 2
    total = sum(site_sizes(default_profiles(args.sites), args.patients))
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="patients", desc="synth")
    t0 = time.perf_counter()
    try:
        path = generate_federation(args.out, args.sites, args.patients, args.seed, args.format,
                                   study=args.study, progress=bar.update if bar else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ehr-fed synth: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    _default_policy(path)
    manifest = json.loads((path.parent / MANIFEST).read_text())
    for s in manifest["sites"]:
        events = s["index_events"].get(args.study, 0)
        pos = s["positives"].get(args.study, 0)
        rate = f"{pos / events:.1%}" if events else "n/a"
        print(f"{s['site_id']}: {s['patients']} patients, {events} {args.study} index events, {rate} positive")
    print(f"wrote {path} ({total} patients in {elapsed:.1f} s)")
    return 0


def _default_policy(fed_yaml: Path) -> None:
    """Write the toolkit's default ``max_params_fraction`` into the federation's ``privacy:`` section.

    The generator writes 0.1, the value before the default became 0.33 (see
    :class:`ehr_fed.privacy.PrivacyPolicy`); a synthetic federation runs under the default policy.
    """
    import yaml

    from ehr_fed.privacy import PrivacyPolicy

    text = fed_yaml.read_text(encoding="utf-8")
    privacy = (yaml.safe_load(text) or {}).get("privacy") or {}
    default = PrivacyPolicy.model_fields["max_params_fraction"].default
    if privacy.get("max_params_fraction") not in (None, default):
        old = f"max_params_fraction: {privacy['max_params_fraction']}"
        if text.count(old) == 1:
            fed_yaml.write_text(text.replace(old, f"max_params_fraction: {default}"), encoding="utf-8")
