"""Synthetic hospital generation: throughput and peak memory (JSON on stdout).

Each size runs in its own subprocess (one site, FHIR and OMOP), which reports its wall time,
patients/s, resources/s (FHIR resources + OMOP rows) and peak RSS. Sizes: 10k and 100k
patients; ``--full`` adds 1 million. Outputs go to a temporary folder under /tmp. Exits 1 when a child run
failed (its last stderr line is in the JSON).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import child_ran, finish


def _child(out: str, patients: int, fmt: str) -> None:
    from ehr_fed.synth import generate_federation

    t0 = time.perf_counter()
    fed = generate_federation(out, n_sites=1, n_patients=patients, seed=0, format=fmt)
    elapsed = time.perf_counter() - t0
    site = json.loads((fed.parent / "synth-manifest.json").read_text())["sites"][0]
    fhir, omop = sum(site["fhir_resources"].values()), sum(site["omop_rows"].values())
    size = sum(p.stat().st_size for p in fed.parent.rglob("*") if p.is_file())
    print(json.dumps({
        "patients": patients, "format": fmt, "seconds": round(elapsed, 2),
        "patients_per_s": round(patients / elapsed, 1), "fhir_resources": fhir, "omop_rows": omop,
        "resources_per_s": round((fhir + omop) / elapsed, 1),
        "index_events": site["index_events"], "output_mb": round(size / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also 1 million patients")
    parser.add_argument("--sizes", type=int, nargs="*", help="patient counts (default 10000 100000)")
    parser.add_argument("--format", default="both", choices=("fhir", "omop", "both"))
    parser.add_argument("--child", nargs=2, metavar=("OUT", "PATIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.format)
        return 0
    sizes = args.sizes or [10_000, 100_000] + ([1_000_000] if args.full else [])
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="ehr-fed-synth-bench-", dir="/tmp") as tmp:
            run = subprocess.run([sys.executable, __file__, "--format", args.format, "--child",
                                  str(Path(tmp) / "fed"), str(n)], capture_output=True, text=True, check=False)
            if run.returncode != 0:
                tail = run.stderr.strip().splitlines()
                results.append({"patients": n, "format": args.format,
                                "error": tail[-1] if tail else f"exit code {run.returncode}"})
            else:
                results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    report = {"benchmark": "synth", "results": results}
    for result in results:
        child_ran(report, f"synth_{result['patients']}_ran", result)
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
