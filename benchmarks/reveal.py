"""Benchmark: what the self-masks and the reveal step cost a federated logistic regression fit.

Every secure sum with masks on carries a self-mask per contribution and one more exchange, ``reveal``
(:mod:`ehr_fed.federation.reveal`): each participant checks the signed summaries of all contributions,
appends its "complete" record to its state file (fsync) and returns its seed; the decrypting site checks the
reveals and removes the self-masks. Measured in one process (in-process transport, one thread per site,
sites with state files in a temporary directory, so the fsyncs are counted), interleaved:

* ``masks_on``: ``FederatedLogisticRegression().fit(fed)`` with masks on (pairwise masks, self-masks, reveal);
* ``masks_off``: the same fit with ``masks=False`` (no masks, no reveal: the path without either);
* inside the masks-on fits: the wall time of the ``reveal`` exchanges, the time sites spend expanding
  self-mask residues, and the time the decrypting site spends removing them.

Prints one JSON document: medians and (min, max) over ``--repeats`` runs. Default: 5 sites x 20,000 rows x
20 features, 2048-bit key, 5 repetitions (the key ceremony is excluded). ``--quick``: 3 sites x 2,000 rows,
1024-bit key, 2 repetitions (smoke run only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path


def _stats(values):
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


class Timers:
    """Wall seconds spent in the instrumented steps (summed over threads)."""

    def __init__(self):
        self.lock, self.seconds, self.counts = threading.Lock(), {}, {}

    def add(self, name, dt):
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self.counts[name] = self.counts.get(name, 0) + 1

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)
        return timed


class TimedTransport:
    """Times every exchange by action."""

    def __init__(self, inner, timers):
        self.inner, self.timers = inner, timers

    def site_ids(self):
        return self.inner.site_ids()

    def send(self, messages, timeout):
        action = next(iter(messages.values())).action if messages else ""
        t0 = time.perf_counter()
        try:
            return self.inner.send(messages, timeout)
        finally:
            self.timers.add(f"exchange:{action}", time.perf_counter() - t0)

    def close(self):
        self.inner.close()


def fit_once(tables, keys, masks, state_dir, allow_insecure):
    from ehr_fed.federation import Federation
    from ehr_fed.federation.state import SiteState
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.privacy import PrivacyPolicy

    timers = Timers()
    fed = Federation.in_process(tables, policy=PrivacyPolicy(max_params_fraction=0.5), encrypted=True,
                                site_keys=keys, masks=masks, allow_insecure=allow_insecure)
    run = Path(tempfile.mkdtemp(dir=state_dir))
    for sid, node in fed.transport.nodes.items():
        node.state = SiteState(run / f"{sid}.state.jsonl")
    fed.transport = TimedTransport(fed.transport, timers)
    try:  # a checkout from before the reveal step has no such module (to measure the path before it)
        import ehr_fed.federation.reveal as reveal
    except ImportError:
        reveal = None
    if reveal is not None:
        saved = reveal.self_residues, reveal.remove_self_masks
        reveal.self_residues = timers.wrap("self_residues", saved[0])
        reveal.remove_self_masks = timers.wrap("remove_self_masks", saved[1])
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = FederatedLogisticRegression().fit(fed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if reveal is not None:
            reveal.self_residues, reveal.remove_self_masks = saved
        fed.close()
    n_sums = sum(1 for h in fed.history if h["label"].startswith("secure_sum"))
    return {"wall": wall, "cpu": cpu, "coef": model.coef_.ravel().tolist(), "sums": n_sums,
            "timers": dict(timers.seconds), "counts": dict(timers.counts)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.sites, args.rows, args.features, args.key_bits, args.repeats = 3, 2_000, 10, 1024, 2
    allow_insecure = args.key_bits < 2048
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from logreg import make_sites

    from ehr_fed.federation.keys import SiteKeys, run_ceremony

    tables = make_sites(args.sites, args.rows, args.features)
    keys = {sid: SiteKeys.generate(sid) for sid in tables}
    t0 = time.perf_counter()
    run_ceremony(keys, n_length=args.key_bits, allow_insecure=allow_insecure)
    ceremony = time.perf_counter() - t0
    runs = {"masks_on": [], "masks_off": []}
    with tempfile.TemporaryDirectory() as state_dir:
        for _ in range(args.repeats):
            for name, masks in (("masks_on", True), ("masks_off", False)):
                runs[name].append(fit_once(tables, keys, masks, state_dir, allow_insecure))
    on, off = runs["masks_on"], runs["masks_off"]
    reveal_wall = [r["timers"].get("exchange:reveal", 0.0) for r in on]
    out = {
        "config": {"sites": args.sites, "rows_per_site": args.rows, "features": args.features,
                   "key_bits": args.key_bits, "repeats": args.repeats, "ceremony_seconds": round(ceremony, 2),
                   "load_average_1min": round(os.getloadavg()[0], 2), "secure_sums_per_fit": on[0]["sums"],
                   "reveal_exchanges_per_fit": on[0]["counts"].get("exchange:reveal", 0)},
        "fit_wall_seconds": {"masks_on": _stats([r["wall"] for r in on]),
                             "masks_off": _stats([r["wall"] for r in off])},
        "fit_cpu_seconds": {"masks_on": _stats([r["cpu"] for r in on]), "masks_off": _stats([r["cpu"] for r in off])},
        "on_over_off_wall": _stats([a["wall"] / b["wall"] for a, b in zip(on, off, strict=True)]),
        "on_over_off_cpu": _stats([a["cpu"] / b["cpu"] for a, b in zip(on, off, strict=True)]),
        "reveal_exchange_wall_seconds_per_fit": _stats(reveal_wall),
        "reveal_exchange_share_of_fit": _stats([w / r["wall"] for w, r in zip(reveal_wall, on, strict=True)]),
        "reveal_exchange_ms_each": _stats([1000 * w / max(1, r["counts"].get("exchange:reveal", 1))
                                           for w, r in zip(reveal_wall, on, strict=True)]),
        "self_residues_seconds_per_fit": _stats([r["timers"].get("self_residues", 0.0) for r in on]),
        "remove_self_masks_seconds_per_fit": _stats([r["timers"].get("remove_self_masks", 0.0) for r in on]),
        "exchange_wall_seconds_per_fit": {k: _stats([r["timers"].get(k, 0.0) for r in on])
                                          for k in sorted(on[0]["timers"]) if k.startswith("exchange:")},
        "identical_coefficients": all(r["coef"] == on[0]["coef"] for r in on + off),
    }
    print(json.dumps(out, indent=2))
    return 0 if out["identical_coefficients"] else 1


if __name__ == "__main__":
    sys.exit(main())
