"""Benchmark: ehr-fed over Flower vs in-process, in the same run (prints JSON).

A real loopback deployment (``LoopbackDeployment``: TLS SuperLink with SuperNode authentication, per
site a SuperNode in process isolation, the site's long-lived ClientApp and its site service) against the
in-process transport over the same sites and keys. Reported:

- ``exchange``: seconds per protocol exchange (one ping to every site), Flower and in-process, and where
  a Flower exchange's time goes (mean over the exchanges, from the coordinator's, the ServerApp's and
  the site ClientApps' clocks): coordinator <-> ServerApp relay, push to the SuperLink, delivery to the
  site (SuperNode poll + ClientApp poll), task input and message fetch, the site service (its
  computation and cryptography included), reply push to the SuperNode, reply back to the coordinator.
  The grid uploads the sites' messages one after the other, so a site can take its message before the
  last upload ends: ``delivery_to_site`` is then negative and ``push_to_superlink`` overlaps it.
  ``flower_cpu_seconds_per_exchange``: CPU seconds each kind of process used per exchange (on loopback
  all of them share this machine's cores, so this is what an exchange costs besides waiting);
- ``logreg`` and ``gbdt``: end-to-end fits over Flower and in-process, ``--repeats`` times alternating
  (median, min, max of seconds, of the ratio and of the seconds Flower adds per exchange), exchanges by
  protocol step, CPU seconds by process, and whether both transports gave the same model.

    python benchmarks/flower.py --quick      # 3 sites x 300 rows, 3 trees: a minute
    python benchmarks/flower.py              # 3 sites x 1,000 rows, LR and 50 trees of depth 5
    python benchmarks/flower.py --trees 10   # fewer trees (per-tree cost is flat)
    python benchmarks/flower.py --trees 10 --repeats 3

Checks (exit 1 when one fails): identical models on both transports; a Flower exchange adds at most
1 s to the in-process one (median); the boosting fit over Flower takes at most 3x its in-process time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import check, finish

TIMING_ENV = "EHR_FED_FLOWER_TIMING"


def site_tables(n_sites: int, rows: int, seed: int) -> dict[str, pd.DataFrame]:
    out = {}
    for k in range(n_sites):
        rng = np.random.default_rng(seed + k)
        age = rng.normal(65, 12, rows)
        crea = rng.lognormal(0.1, 0.3, rows)
        crea[rng.random(rows) < 0.1] = np.nan
        diab = (rng.random(rows) < 0.3).astype(float)
        los = rng.gamma(2.0, 2.5, rows)
        eta = -2.5 + 0.03 * (age - 65) + 0.8 * np.nan_to_num(crea - 1.1) + 0.6 * diab + 0.1 * (los - 5)
        y = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype("int8")
        sid = f"site_{k}"
        out[sid] = pd.DataFrame({
            "site_id": sid, "person_key": [f"{sid}-{i:05d}" for i in range(rows)],
            "index_time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(rows) % 900, unit="D"),
            "label": y, "age": age, "lab_creatinine": crea, "cond_diabetes": diab, "length_of_stay": los,
        })
    return out


def write_sites(root: Path, tables: dict, keys: dict, policy: dict) -> dict[str, Path]:
    configs = {}
    for sid, table in tables.items():
        d = root / sid
        d.mkdir(parents=True)
        table.to_parquet(d / "features.parquet")
        keys[sid].save(d / "site.keys.json")
        (d / "site.yaml").write_text(yaml.safe_dump({"site_id": sid, "table": "features.parquet",
                                                     "keys": "site.keys.json", "policy": policy,
                                                     "audit_log": "audit.jsonl"}))
        configs[sid] = d / "site.yaml"
    return configs


def ping_exchanges(transport, n: int) -> list[float]:
    from ehr_fed.federation.messages import TaskMessage, new_nonce

    out = []
    session = new_nonce()[:16]
    for r in range(n):
        msgs = {sid: TaskMessage(action="ping", task="", study="", session=session, round=r, nonce=new_nonce())
                for sid in transport.site_ids()}
        t = time.perf_counter()
        replies = transport.send(msgs, timeout=60)
        out.append(time.perf_counter() - t)
        bad = [sid for sid, rep in replies.items() if not getattr(rep, "ok", False)]
        if bad:
            raise RuntimeError(f"ping failed at {bad}: {replies}")
    return out


def breakdown(exchanges: list[dict], site_records: list[dict]) -> dict:
    """Mean seconds of each leg of a Flower exchange (see the module docstring)."""
    legs: dict[str, list[float]] = {k: [] for k in (
        "relay_coordinator_serverapp", "push_to_superlink", "delivery_to_site", "task_input_and_message_fetch",
        "site_service_incl_computation", "reply_push_to_supernode", "reply_back_to_coordinator")}
    queries = [r for r in site_records if r.get("type") == "query.ehrfed" and "pushed" in r]
    for ex in exchanges:
        g = ex.get("grid") or {}
        if not g:
            continue
        mine = [r for r in queries if g["start"] - 0.05 <= r["created"] <= g["pushed"] + 0.05]
        legs["relay_coordinator_serverapp"].append((ex["done"] - ex["start"]) - (g["done"] - g["start"]))
        legs["push_to_superlink"].append(g["pushed"] - g["start"])
        if not mine:
            continue
        legs["delivery_to_site"].append(float(np.mean([r["acquired"] - g["pushed"] for r in mine])))
        legs["task_input_and_message_fetch"].append(float(np.mean([r["pulled"] - r["acquired"] for r in mine])))
        legs["site_service_incl_computation"].append(float(np.mean([r["answered"] - r["pulled"] for r in mine])))
        legs["reply_push_to_supernode"].append(float(np.mean([r["pushed"] - r["answered"] for r in mine])))
        legs["reply_back_to_coordinator"].append(g["done"] - max(r["pushed"] for r in mine))
    return {k: (float(np.mean(v)) if v else None) for k, v in legs.items()} | {"exchanges": len(exchanges)}


def fit_both(make_model, fed_local, fed_remote, transport, dep, repeats: int) -> tuple[dict, object, object]:
    """Fit on both transports ``repeats`` times, alternating (in-process first, then Flower)."""
    t_local, t_remote, per_ex, cpu = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        local = make_model().fit(fed_local)
        t_local.append(time.perf_counter() - t)
        before, cpu0, own0 = len(transport.exchanges), dep.cpu_seconds(), time.process_time()
        t = time.perf_counter()
        remote = make_model().fit(fed_remote)
        t_remote.append(time.perf_counter() - t)
        cpu1 = dep.cpu_seconds()
        cpu.append({"coordinator": time.process_time() - own0} | {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()})
        ex = transport.exchanges[before:]
    per_ex = [e["done"] - e["start"] for e in ex]
    ratios = [r / lo for r, lo in zip(t_remote, t_local, strict=True)]
    return {"repeats": repeats,
            "in_process_seconds": _median_spread(t_local), "flower_seconds": _median_spread(t_remote),
            "flower_exchanges": len(ex), "flower_exchanges_by_action": dict(Counter(e["action"] for e in ex)),
            "flower_seconds_per_exchange_median": float(np.median(per_ex)) if per_ex else None,
            "flower_added_seconds_per_exchange": _median_spread(
                [(r - lo) / len(ex) for r, lo in zip(t_remote, t_local, strict=True)]) if ex else None,
            "flower_cpu_seconds_by_process": {k: round(float(np.median([c.get(k, 0.0) for c in cpu])), 2)
                                              for k in cpu[-1]},
            "ratio_flower_vs_in_process": _median_spread(ratios)}, local, remote


def _median_spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "runs": [round(float(v), 4) for v in values]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trees", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--pings", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1,
                    help="fit each model this many times per transport, alternating (medians and spread reported)")
    ap.add_argument("--workers", default="processes", choices=["processes", "threads"],
                    help="in-process sites as worker processes (default) or threads")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.pings < 1:
        ap.error("--repeats and --pings must be at least 1")
    cfg = dict(sites=3, rows=300, trees=3, depth=3, bins=16, key_bits=1024) if args.quick else \
        dict(sites=3, rows=1000, trees=50, depth=5, bins=32, key_bits=2048)
    cfg["trees"] = args.trees or cfg["trees"]
    cfg["depth"] = args.depth or cfg["depth"]
    report: dict = {"benchmark": "flower", "config": {**cfg, "pings": args.pings, "repeats": args.repeats,
                                                      "in_process_workers": args.workers,
                                                      "cpu_count": os.cpu_count()}}

    from ehr_fed.federation import Federation, PrivacyPolicy
    from ehr_fed.federation.keys import SiteKeys, run_ceremony
    from ehr_fed.federation.transports.flower_local import LoopbackDeployment
    from ehr_fed.federation.transports.flower_relay import FlowerRelayTransport
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.models.gbdt import FederatedGradientBoostingClassifier

    tables = site_tables(cfg["sites"], cfg["rows"], seed=11)
    keys = {sid: SiteKeys.generate(sid) for sid in tables}
    insecure = cfg["key_bits"] < 2048
    ckeys = run_ceremony(keys, n_length=cfg["key_bits"], allow_insecure=insecure)
    policy_map = {"min_cell_count": 10, "min_sites": 3}
    policy = PrivacyPolicy.from_mapping(policy_map)
    root = Path(tempfile.mkdtemp(prefix="ehrfed-bench-flower-"))
    timing = root / "site-timing.jsonl"
    os.environ[TIMING_ENV] = str(timing)  # inherited by the site ClientApps the deployment starts
    if insecure:
        os.environ["EHR_FED_ALLOW_INSECURE_KEYS"] = "1"
    # real-size site keys are written encrypted: a passphrase for this run, inherited by the site services
    os.environ.setdefault("EHR_FED_KEY_PASSPHRASE", secrets.token_hex(16))
    configs = write_sites(root / "sites", tables, keys, policy_map)

    t = time.perf_counter()
    with LoopbackDeployment(configs, workdir=root / "deploy") as dep:
        report["deployment_start_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        transport = FlowerRelayTransport(flwr_home=dep.flwr_home, expected_sites=cfg["sites"], keys=ckeys)
        report["flower_run_start_seconds"] = time.perf_counter() - t
        os.environ.pop(TIMING_ENV)  # the coordinator keeps its own records (transport.exchanges)
        with Federation(transport, keys=ckeys, policy=policy, encrypted=True) as remote, \
                Federation.in_process(tables, policy=policy, encrypted=True, site_keys=keys,
                                      workers=args.workers) as local:
            local_pings = ping_exchanges(local.transport, args.pings)
            cpu0, own0 = dep.cpu_seconds(), time.process_time()
            flower_pings = ping_exchanges(transport, args.pings)
            cpu1 = dep.cpu_seconds()
            site_records = [json.loads(x) for x in timing.read_text().splitlines()] if timing.exists() else []
            report["exchange"] = {
                "flower_seconds_median": float(np.median(flower_pings)),
                "flower_seconds_min_max": [float(min(flower_pings)), float(max(flower_pings))],
                "in_process_seconds_median": float(np.median(local_pings)),
                "flower_added_seconds_median": float(np.median(flower_pings) - np.median(local_pings)),
                "flower_breakdown_mean_seconds": breakdown(transport.exchanges[-args.pings:], site_records),
                "flower_cpu_seconds_per_exchange": {
                    "coordinator": (time.process_time() - own0) / args.pings,
                    **{k: (v - cpu0.get(k, 0.0)) / args.pings for k, v in cpu1.items()}},
            }
            lr, lr_local, lr_remote = fit_both(lambda: FederatedLogisticRegression(penalty="none"),
                                               local, remote, transport, dep, args.repeats)
            lr["same_model"] = bool(np.array_equal(lr_local.coef_, lr_remote.coef_))
            report["logreg"] = lr
            params = dict(n_estimators=cfg["trees"], max_depth=cfg["depth"], learning_rate=0.3,
                          max_bin=cfg["bins"])
            gb, gb_local, gb_remote = fit_both(
                lambda: FederatedGradientBoostingClassifier(encrypted=True, **params), local, remote, transport, dep,
                args.repeats)
            X = pd.concat(tables.values(), ignore_index=True)
            gb["same_model"] = bool(np.array_equal(gb_local.predict_proba(X), gb_remote.predict_proba(X)))
            report["gbdt"] = gb
            site_records = [json.loads(x) for x in timing.read_text().splitlines()] if timing.exists() else []
            report["gbdt"]["flower_breakdown_mean_seconds"] = breakdown(
                transport.exchanges[-gb["flower_exchanges"]:], site_records)

    ex = report["exchange"]
    check(report, "flower_exchange_adds_at_most_1s", ex["flower_added_seconds_median"] <= 1.0,
          added=ex["flower_added_seconds_median"])
    check(report, "logreg_same_model", report["logreg"]["same_model"])
    check(report, "gbdt_same_model", report["gbdt"]["same_model"])
    ratio = report["gbdt"]["ratio_flower_vs_in_process"]["median"]
    check(report, "gbdt_flower_at_most_3x_in_process", ratio <= 3.0, ratio=ratio)
    return report


if __name__ == "__main__":
    sys.exit(finish(main()))
