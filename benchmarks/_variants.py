"""What the masks and the threshold scheme cost: the same encrypted fit run as several variants in one run.

Variants (``Federation.in_process`` arguments), every one on the same tables:

``masks_on``    ``key_scheme="single", masks=True``: the default protocol (pairwise masks in every secure sum);
``masks_off``   ``key_scheme="single", masks=False``: the same fit without masks (exists only to measure them);
``threshold``   ``key_scheme="threshold", masks=True``: t-of-n shares, each holder sends a proved partial
                decryption, one site combines;
``plaintext``   ``encrypted=False``: the protocol's own compute, the denominator of the encrypted/plaintext
                ratios.

Each variant's keys come from one ceremony per scheme (timed apart, ``key_ceremony_s``), and each key's
large encryption tables are built before the first timed run (:func:`warm_up`); one untimed fit of
``masks_on``, ``masks_off`` and ``plaintext`` then pays the one-off costs of a first fit (lazy imports,
caches), which would otherwise land in the first timed run. Every repetition builds a fresh federation on
those keys (``site_keys=``), so no site state carries over, and starts after a full garbage collection
(survivors frozen, so that the collector's passes over the growing list of kept models do not land in
later runs). ``masks_on``, ``masks_off`` and ``plaintext`` run ``repeats`` times, interleaved, in the order
ABC CBA ABC ... (so that load drifts on the shared machine hit each variant alike, and masks on and off are
always adjacent); ``threshold`` runs ``threshold_repeats`` times (each share holder's partial decryptions
cost about 7 CRT decryptions, so it is the slow one).

Two clocks are reported per run: wall seconds, and CPU seconds of this process and its child processes
(``psutil``; the sites, whether threads or processes), and the CPU time spent inside the masking code
itself (:class:`MaskClock`, site threads only). The masks-on / masks-off ratio is taken per
repetition (the two runs of a repetition are adjacent) and reported as the median with its min-max range
and interquartile range, for both clocks. A second series (:func:`masks_cost_series`) runs masks on and off
again with the sites answered one after another (``workers="sequential"``), as each hospital computes on
its own machine, without five site threads sharing two cores; the check ``masks_cost_at_most_5_percent``
(at least ``MIN_COST_REPEATS`` pairs) uses that series' median CPU ratio when the benchmark runs it, else the
threaded runs' (on a shared 2-core machine wall time mostly measures waiting for a core; the wall ratio is
reported beside it). A second check requires every encrypted variant to give a model bit-identical to ``masks_on``
(the masks cancel exactly, and threshold decryption opens the same sums).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import check

#: the largest masks-on / masks-off ratio (median over repetitions) the benchmark accepts
MASKS_MAX_RATIO = 1.05
#: fewest repetitions whose median ratio is checked against ``MASKS_MAX_RATIO``
MIN_COST_REPEATS = 7


def add_repeat_arguments(ap) -> None:
    """``--repeats``, ``--threshold-repeats`` and ``--cost-repeats`` of a benchmark that runs :func:`compare`."""
    ap.add_argument("--repeats", type=int, default=None,
                    help="runs of masks on / masks off / plaintext each (interleaved; medians; default 15, "
                         "--quick 7; the masks' cost is checked from 7)")
    ap.add_argument("--threshold-repeats", type=int, default=1, help="runs with the threshold scheme")
    ap.add_argument("--cost-repeats", type=int, default=None,
                    help="masks-on / masks-off pairs with the sites answered one after another, the series the "
                         "masks' cost is checked on (default 21, --quick 7; 0: check the threaded runs)")


def resolve_repeats(ap, args) -> None:
    """The defaults of :func:`add_repeat_arguments` (smaller with ``--quick``), and their bounds."""
    if args.repeats is None:
        args.repeats = 7 if args.quick else 15
    if args.cost_repeats is None:
        args.cost_repeats = 7 if args.quick else 21
    if args.repeats < 1 or args.threshold_repeats < 1 or args.cost_repeats < 0:
        ap.error("--repeats and --threshold-repeats must be at least 1, --cost-repeats at least 0")


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its live child processes."""
    import psutil

    me = psutil.Process()
    total = time.process_time()  # this process at full resolution; children at the clock tick (10 ms)
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # ended in between
            pass
    return total


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall_s, cpu_s, fn())``, with one BLAS thread: idle BLAS threads spin, and their CPU time would be
    noise of +-25 % on these fits (the sites already run in parallel)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        cpu, wall = tree_cpu_seconds(), time.perf_counter()
        out = fn()
        return time.perf_counter() - wall, tree_cpu_seconds() - cpu, out


class MaskClock:
    """CPU seconds spent in the masking code of the sites (thread CPU time, summed over the site threads):
    the pairwise seeds (``pairwise_seeds``: X25519 + HKDF), the residues (``he._mask_residues``) and
    their addition to the plaintexts (``crypto.masking.mask_plaintexts``). A direct measurement of what the masks cost, beside the end-to-end on / off ratio
    (whose run-to-run noise on a shared machine is larger than the masks). Threads only: with
    ``workers="processes"`` the site processes are not instrumented and it reads 0."""

    def __init__(self):
        import ehr_fed.crypto.masking as masking
        import ehr_fed.federation.he as he
        import ehr_fed.federation.site as site

        self.seconds = 0.0
        self._lock = __import__("threading").Lock()
        for module, name in ((he, "_mask_residues"), (site, "pairwise_seeds"), (masking, "mask_plaintexts")):
            setattr(module, name, self._wrap(getattr(module, name)))

    def _wrap(self, fn):
        def timed_call(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.thread_time() - start
        return timed_call

    def take(self) -> float:
        with self._lock:
            out, self.seconds = self.seconds, 0.0
        return out


def warm_up(keys: dict[str, Any]) -> None:
    """Build every key's large fixed-base encryption tables now, before any timed run.

    The process-wide obfuscator pool of a key starts with small tables and rebuilds them (about half a second
    at 2048 bits) once the key has encrypted 4,096 ciphertexts: left alone, that rebuild lands inside one of
    the timed runs (whichever variant happens to cross the mark) and every later run encrypts faster. With
    sites as processes (``workers="processes"``) each site process still builds its own tables.
    """
    from ehr_fed import crypto
    from ehr_fed.crypto.obfuscation import UPGRADE_AFTER_CIPHERTEXTS, default_pool

    for site_keys in keys.values():
        first = next(iter(site_keys.values()))
        if first.paillier_public:
            default_pool(crypto.public_key_from_bytes(first.paillier_public), UPGRADE_AFTER_CIPHERTEXTS)


def _summary(values: list[float]) -> dict[str, Any]:
    """Median, min-max, quartiles (inclusive method) and the runs themselves."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "iqr": [round(q1, 4), round(q3, 4)], "runs": [round(v, 4) for v in values]}


def _settle() -> None:
    """A full garbage collection before a timed run; the survivors are frozen (never scanned again). The
    process's parameter digests are forgotten, so no run finds the digests of the run before it."""
    from ehr_fed.federation.checkpoint import clear_hash_cache

    clear_hash_cache()
    gc.collect()
    gc.freeze()


def compare(report: dict, *, keys: dict[str, Any], run: Callable[[str, Any], tuple[float, float, Any]],
            identical: Callable[[Any, Any], bool], repeats: int, threshold_repeats: int = 1,
            check_cost: bool = True, cost_run: Callable[[str, Any], tuple[float, float, Any]] | None = None,
            cost_repeats: int = 0) -> dict:
    """Run the variants, record the ratios and the checks in ``report``; return the models of each variant.

    ``keys`` maps ``"single"`` / ``"threshold"`` to the site keys of that scheme. ``run(variant, site_keys)``
    builds a fresh federation of that variant, fits, closes it and returns ``(wall_s, cpu_s, model)`` of the
    fit alone (the clocks of :func:`timed`). ``check_cost=False`` reports the masks' cost without checking
    it; with fewer than ``MIN_COST_REPEATS`` repetitions it is never checked.

    ``cost_run`` (same signature, sites answered one after another: ``workers="sequential"``) adds a series
    of ``cost_repeats`` masks-on / masks-off pairs (see :func:`masks_cost_series`); when given, the cost check
    reads that series, and the ratios of the threaded runs are reported beside it.
    """
    warm_up(keys)
    order = ["masks_on", "masks_off", "plaintext"]
    for variant in order:  # untimed: the one-off costs of a first fit
        run(variant, keys["single"] if variant != "plaintext" else None)
    clock = MaskClock()
    mask_cpu: list[float] = []
    wall: dict[str, list[float]] = {v: [] for v in [*order, "threshold"]}
    cpu: dict[str, list[float]] = {v: [] for v in wall}
    models: dict[str, list[Any]] = {v: [] for v in wall}
    pairs_wall, pairs_cpu = [], []
    for rep in range(repeats):
        turn = order if rep % 2 == 0 else order[::-1]  # ABC CBA ...: masks on and off always adjacent
        got = {}
        for variant in turn:
            _settle()
            clock.take()
            got[variant] = run(variant, keys["single"] if variant != "plaintext" else None)
            if variant == "masks_on":
                mask_cpu.append(clock.take())
        for variant, (w, c, m) in got.items():
            wall[variant].append(w)
            cpu[variant].append(c)
            models[variant].append(m)
        pairs_wall.append(got["masks_on"][0] / got["masks_off"][0])
        pairs_cpu.append(got["masks_on"][1] / got["masks_off"][1])
    for _ in range(threshold_repeats):
        _settle()
        w, c, m = run("threshold", keys["threshold"])
        wall["threshold"].append(w)
        cpu["threshold"].append(c)
        models["threshold"].append(m)
    med = {v: statistics.median(x) for v, x in wall.items() if x}
    med_cpu = {v: statistics.median(x) for v, x in cpu.items() if x}
    report["variants"] = {
        "method": f"one untimed fit of masks_on, masks_off and plaintext, then each {repeats} times, "
                  f"interleaved (ABC CBA ...); threshold {threshold_repeats} time(s); fresh federation per run on "
                  "one ceremony per scheme, a full garbage collection before each; wall and CPU seconds (this "
                  "process and its children) of the fit alone; masks on / off ratios per repetition: median, "
                  "min-max, interquartile range (iqr)",
        "wall_s": {v: _summary(x) for v, x in wall.items() if x},
        "cpu_s": {v: _summary(x) for v, x in cpu.items() if x},
        "ratios_vs_plaintext_wall": {v: round(med[v] / med["plaintext"], 3)
                                     for v in ("masks_on", "masks_off", "threshold") if v in med},
        "ratios_vs_plaintext_cpu": {v: round(med_cpu[v] / med_cpu["plaintext"], 3)
                                    for v in ("masks_on", "masks_off", "threshold") if v in med_cpu},
        "masks_on_vs_off_cpu": _summary(pairs_cpu),
        "masks_cpu_s_in_masking_code": _summary(mask_cpu),
        "masks_cpu_share_of_masks_on_fit": round(statistics.median(mask_cpu) / med_cpu["masks_on"], 4),
        "masks_on_vs_off_wall": _summary(pairs_wall),
        "threshold_vs_masks_on_wall": round(med["threshold"] / med["masks_on"], 3) if wall["threshold"] else None,
        "threshold_vs_masks_on_cpu": round(med_cpu["threshold"] / med_cpu["masks_on"], 3) if cpu["threshold"]
        else None,
    }
    if cost_run is not None and cost_repeats:
        series = masks_cost_series(cost_run, keys["single"], cost_repeats, clock, models)
        report["variants"]["masks_cost_sequential"] = series
    if check_cost and cost_run is not None and cost_repeats >= MIN_COST_REPEATS:
        seq = report["variants"]["masks_cost_sequential"]["masks_on_vs_off_cpu"]
        threaded = report["variants"]["masks_on_vs_off_cpu"]
        check(report, "masks_cost_at_most_5_percent", seq["median"] <= MASKS_MAX_RATIO,
              median_cpu_ratio=seq["median"], cpu_ratio_min_max=[seq["min"], seq["max"]], cpu_ratio_iqr=seq["iqr"],
              limit=MASKS_MAX_RATIO, repetitions=cost_repeats, series="sequential sites (masks_cost_sequential)",
              threaded_median_cpu_ratio=threaded["median"], threaded_cpu_ratio_iqr=threaded["iqr"])
    elif check_cost and repeats >= MIN_COST_REPEATS:
        cpu_ratio, wall_ratio = report["variants"]["masks_on_vs_off_cpu"], report["variants"]["masks_on_vs_off_wall"]
        check(report, "masks_cost_at_most_5_percent", statistics.median(pairs_cpu) <= MASKS_MAX_RATIO,
              median_cpu_ratio=cpu_ratio["median"], cpu_ratio_min_max=[cpu_ratio["min"], cpu_ratio["max"]],
              cpu_ratio_iqr=cpu_ratio["iqr"], limit=MASKS_MAX_RATIO, median_wall_ratio=wall_ratio["median"],
              wall_ratio_iqr=wall_ratio["iqr"], repetitions=repeats)
    else:
        report["variants"]["masks_cost_check"] = (
            f"not checked: {repeats} repetition(s), the check needs at least {MIN_COST_REPEATS}"
            if check_cost else "not checked (check_cost=False)")
    reference = models["masks_on"][0]
    encrypted = ("masks_on", "masks_off", "threshold", "masks_on_sequential", "masks_off_sequential")
    differing = [f"{v}[{i}]" for v in encrypted for i, m in enumerate(models.get(v, []))
                 if not identical(reference, m)]
    check(report, "variants_bit_identical", not differing,
          compared=sum(len(models.get(v, [])) for v in encrypted), differing=differing)
    return models


def masks_cost_series(run: Callable[[str, Any], tuple[float, float, Any]], site_keys: Any, repeats: int,
                      clock: MaskClock, models: dict[str, list[Any]]) -> dict[str, Any]:
    """The masks' cost with the sites answered one after another (``workers="sequential"``).

    With the sites as threads, five sites share two cores: a fit's CPU time then includes what the threads
    cost each other (caches, switches, the interpreter lock), which varies from run to run by more than the
    masks cost and is not part of what a hospital pays on its own machine. Answered one after another in
    the calling thread, each site's work runs as if alone, and the pairs' spread halves (measured: standard
    deviation of the per-pair ratio 0.067 against 0.149 with threads, 12 pairs each, quiet machine). One
    untimed pair first, then ``repeats`` pairs alternating which variant goes first; the models join
    ``models`` (bit-identity check) under ``masks_on_sequential`` / ``masks_off_sequential``.
    """
    for variant in ("masks_on", "masks_off"):
        run(variant, site_keys)
    cpu: dict[str, list[float]] = {"masks_on": [], "masks_off": []}
    wall: dict[str, list[float]] = {"masks_on": [], "masks_off": []}
    ratios, mask_cpu = [], []
    for rep in range(repeats):
        got = {}
        for variant in (("masks_on", "masks_off") if rep % 2 == 0 else ("masks_off", "masks_on")):
            _settle()
            clock.take()
            got[variant] = run(variant, site_keys)
            if variant == "masks_on":
                mask_cpu.append(clock.take())
        for variant, (w, c, m) in got.items():
            cpu[variant].append(c)
            wall[variant].append(w)
            models.setdefault(f"{variant}_sequential", []).append(m)
        ratios.append(got["masks_on"][1] / got["masks_off"][1])
    return {
        "method": f"sites answered one after another (workers='sequential'); one untimed pair, then {repeats} "
                  "masks-on / masks-off pairs, alternating which goes first, a full garbage collection before "
                  "each fit; CPU seconds of the fit; ratio per pair",
        "masks_on_vs_off_cpu": _summary(ratios),
        "cpu_s": {v: _summary(x) for v, x in cpu.items()},
        "wall_s": {v: _summary(x) for v, x in wall.items()},
        "masks_cpu_s_in_masking_code": _summary(mask_cpu),
        "masks_cpu_share_of_masks_on_fit": round(statistics.median(mask_cpu) / statistics.median(cpu["masks_on"]), 4),
    }
