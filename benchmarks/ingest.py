"""Benchmark: reading a large FHIR site, against per-resource parsing with fhir.resources.

A site of N resources is made by re-keying copies of the shared Synthea data
(../shared/data/fhir/synthea_bulk10 and synthea_bundles12, Bundles flattened to bulk NDJSON):
every UUID (resource ids and every reference) gets a new first group per copy, so each copy
is a distinct set of patients. The files are written as NDJSON.gz under /tmp and reused.

Measured, each in its own subprocess so peak RSS is that of one run:

* ``read_fhir`` (the fast path) at each size: resources/second and peak RSS;
* the baseline: the same kind of resources parsed one by one with fhir.resources
  (``model_validate_json`` of the R4B model), timed on a sample in this run;
* the full ``harmonize`` (read + mapping + cohort + features) when ``ehr_fed.cohort.harmonize``
  and the shipped Synthea mapping and study exist.

Prints one JSON object and exits 1 when a measurement's child process failed (``checks``).
``--quick``: a small smoke run (50k resources, 2k baseline sample).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson
from _common import child_ran, finish

ROOT = Path(__file__).resolve().parents[1]
SHARED_FHIR = ROOT.parent / "shared" / "data" / "fhir"
UUID = re.compile(rb"[0-9a-f]{8}(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
URN_REF = re.compile(rb'"urn:uuid:([0-9a-f-]{36})"')
KEY = b"@KEY@@@@"  # 8 bytes: the re-keyed first group of every UUID
COPIES_PER_FILE = 10


# ----------------------------------------------------------------------------- the site
def template_lines() -> list[bytes]:
    """One copy of the Synthea resources as NDJSON lines, UUIDs' first group replaced by KEY."""
    lines: list[bytes] = []
    for path in sorted((SHARED_FHIR / "synthea_bulk10").glob("*.ndjson.gz")):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            if line.strip() and b'"resourceType"' in line:
                lines.append(line)
    for path in sorted((SHARED_FHIR / "synthea_bundles12").glob("*.json.gz")):
        bundle = orjson.loads(gzip.decompress(path.read_bytes()))
        target = {
            e["fullUrl"][len("urn:uuid:"):]: f'{e["resource"]["resourceType"]}/{e["resource"]["id"]}'.encode()
            for e in bundle["entry"]
        }
        for e in bundle["entry"]:
            text = orjson.dumps(e["resource"])
            # a bulk export has relative references, not the Bundle's urn:uuid fullUrls
            lines.append(URN_REF.sub(lambda m, t=target: b'"' + t.get(m.group(1).decode(), m.group(1)) + b'"', text))
    tails = {}
    for line in lines:
        for m in UUID.finditer(line):
            if tails.setdefault(m.group(1), m.group(0)) != m.group(0):
                raise SystemExit(f"two UUIDs share the tail {m.group(1)!r}: re-keying would merge them")
    return [UUID.sub(KEY + rb"\1", line) for line in lines]


def make_site(folder: Path, n_resources: int, template: list[bytes]) -> dict:
    """Write re-keyed copies of ``template`` to ``folder`` until it holds >= n_resources."""
    marker = folder.parent / "site.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["resources"] >= n_resources:
            return info
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.ndjson.gz"):
        old.unlink()
    blob = b"\n".join(template) + b"\n"
    copies = -(-n_resources // len(template))
    t0 = time.perf_counter()
    for first in range(0, copies, COPIES_PER_FILE):
        with gzip.open(folder / f"synthea_copy{first:06d}.ndjson.gz", "wb", compresslevel=1) as fh:
            for k in range(first, min(first + COPIES_PER_FILE, copies)):
                fh.write(blob.replace(KEY, f"{k:08x}".encode()))
    info = {"resources": copies * len(template), "copies": copies,
            "bytes": sum(p.stat().st_size for p in folder.glob("*.ndjson.gz")),
            "write_seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------- measurements
def baseline(template: list[bytes], sample: int) -> dict:
    """Parse ``sample`` resources one by one with fhir.resources (R4B) and time it."""
    from fhir.resources.R4B import get_fhir_model_class

    rng = random.Random(0)
    lines = [line.replace(KEY, b"0000beef") for line in rng.choices(template, k=sample)]
    types = [orjson.loads(line)["resourceType"] for line in lines]
    models = {t: get_fhir_model_class(t) for t in set(types)}
    t0, c0 = time.perf_counter(), time.process_time()
    for rtype, line in zip(types, lines, strict=True):
        models[rtype].model_validate_json(line)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"resources": sample, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "resources_per_second": round(sample / seconds),
            "resources_per_cpu_second": round(sample / cpu)}


def child(mode: str, folder: str) -> None:
    """Run one measurement in this (fresh) process and print its JSON."""
    from ehr_fed.sources import read_source

    if mode == "harmonize":
        from ehr_fed.cohort import harmonize
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), _cpu()
    if mode == "read":
        options = {"memory_limit": os.environ["EHR_FED_BENCH_MEMORY_LIMIT"]} \
            if os.environ.get("EHR_FED_BENCH_MEMORY_LIMIT") else None
        with read_source("fhir", folder, options=options, workdir=Path(folder).parent / "work",
                         progress=False) as rec:
            seconds = time.perf_counter() - t0
            out = {"resources": sum(rec.source_records.values()),
                   "rows": {t: rec.count(t) for t in ("person", "visit", "condition", "measurement",
                                                      "medication", "procedure")},
                   "quarantined": rec.quarantine.counts()}
    else:
        ft = harmonize("fhir", folder, ROOT / "mappings/sites/synthea_fhir.yaml",
                       ROOT / "mappings/studies/readmission_30d.yaml",
                       workdir=Path(folder).parent / "work", progress=False)
        seconds = time.perf_counter() - t0
        out = {"resources": sum(ft.summary["source_records"].values()),
               "index_events": ft.summary["index_events"], "positives": ft.summary["positives"]}
    cpu = _cpu() - c0
    out["seconds"] = round(seconds, 2)
    out["cpu_seconds"] = round(cpu, 2)  # all threads of the process (DuckDB's included)
    out["resources_per_second"] = round(out["resources"] / seconds)
    out["resources_per_cpu_second"] = round(out["resources"] / cpu)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["rss_after_imports_mb"] = round(rss_start / 1024)
    print(json.dumps(out))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _speedups(result: dict, baseline: dict) -> None:
    """Wall-clock and CPU-time ratios against the fhir.resources baseline (CPU time is the fair
    one on a shared machine: both sides are single processes, and DuckDB's threads are counted)."""
    if "resources_per_second" in result:
        result["speedup_vs_fhir_resources_wall"] = round(
            result["resources_per_second"] / baseline["resources_per_second"], 1)
        result["speedup_vs_fhir_resources_cpu"] = round(
            result["resources_per_cpu_second"] / baseline["resources_per_cpu_second"], 1)


def run_child(mode: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def harmonize_available() -> bool:
    try:
        from ehr_fed.cohort import harmonize  # noqa: F401
    except ImportError:
        return False
    return (ROOT / "mappings/sites/synthea_fhir.yaml").exists()


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", help="site sizes in resources")
    parser.add_argument("--sample", type=int, help="resources parsed by the fhir.resources baseline")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ehr_fed_bench_ingest"))
    parser.add_argument("--no-harmonize", action="store_true", help="skip the full harmonize runs")
    parser.add_argument("--memory-limit", help="DuckDB memory limit of the read runs (FhirOptions.memory_limit)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    if args.memory_limit:
        os.environ["EHR_FED_BENCH_MEMORY_LIMIT"] = args.memory_limit
    sizes = args.sizes or ([50_000] if args.quick else [1_000_000, 5_000_000])
    sample = args.sample or (2_000 if args.quick else 20_000)
    template = template_lines()
    report = {"benchmark": "ingest", "template_resources": len(template), "cpu_count": os.cpu_count(),
              "duckdb_memory_limit": args.memory_limit or "FhirOptions default",
              "baseline_fhir_resources": baseline(template, sample), "sizes": []}
    base = report["baseline_fhir_resources"]
    do_harmonize = not args.no_harmonize and harmonize_available()
    for n in sizes:
        folder = args.root / f"site_{n}" / "fhir"
        entry = {"target_resources": n, "site": make_site(folder, n, template)}
        entry["read_fhir"] = run_child("read", folder)
        child_ran(report, f"read_fhir_{n}_ran", entry["read_fhir"])
        _speedups(entry["read_fhir"], base)
        if do_harmonize:
            entry["harmonize"] = run_child("harmonize", folder)
            child_ran(report, f"harmonize_{n}_ran", entry["harmonize"])
            _speedups(entry["harmonize"], base)

        report["sizes"].append(entry)
        print(json.dumps(entry), file=sys.stderr)
    if not do_harmonize:
        report["harmonize"] = "skipped: ehr_fed.cohort.harmonize or mappings/sites/synthea_fhir.yaml absent"
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(0 if report is None else finish(report))
