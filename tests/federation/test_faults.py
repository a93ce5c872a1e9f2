"""Faults: slow or failing sites, quorum, checkpoint and resume after the coordinator is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ehr_fed.federation import Federation, FederationError, SiteContext, site_task
from ehr_fed.federation.testing import make_tables


@site_task("test.flaky", kind="moments", release=("plaintext", "secure_sum"))
def _flaky(table, params, ctx: SiteContext):
    if ctx.site_id in params.get("fail", []):
        raise RuntimeError("disk full")
    if ctx.site_id in params.get("slow", []):
        time.sleep(8)
    return {"n": np.array([float(len(table))])}


def test_round_continues_without_a_failing_site():
    tables = make_tables(sizes=(50, 60, 70, 80, 90))
    fed = Federation.in_process(tables, encrypted=False, timeout=4.0)
    out = fed.secure_sum("test.flaky", {"fail": ["site_b"], "slow": ["site_d"]}, {"n": (1e6, 5)})
    np.testing.assert_allclose(out["n"], [210.0])
    assert out.contributors == ["site_a", "site_c", "site_e"]
    assert set(out.missing) == {"site_b", "site_d"}
    assert "task_error" in out.missing["site_b"] and "RuntimeError (details in the site's log)" in out.missing["site_b"]
    assert out.missing["site_d"] == "timeout: no reply within 4 s"


def test_too_few_sites_is_a_clear_error():
    fed = Federation.in_process(make_tables(), encrypted=False, timeout=5)
    with pytest.raises(FederationError, match=r"(?s)only 2 of 3 sites answered, at least min_sites=3.*"
                                              r"site_b: task_error: site site_b: RuntimeError \(details in the site's log\)"):
        fed.query("test.flaky", {"fail": ["site_b"]})


def test_site_in_worker_process():
    fed = Federation.in_process(make_tables(), encrypted=False, workers="processes")
    try:
        out = fed.secure_sum("stats.count", {}, {"n": (1e6, 3), "positives": (1e6, 3)})
        assert float(out["n"]) == 300.0
    finally:
        fed.close()


_THREADS: list[int] = []


@site_task("test.where", kind="moments", release=("plaintext", "secure_sum"))
def _where(table, params, ctx: SiteContext):
    import threading

    _THREADS.append(threading.get_ident())
    return {"n": np.array([float(len(table))])}


def test_sequential_sites_answer_in_the_callers_thread_with_the_same_results():
    import threading

    tables = make_tables(sizes=(50, 60, 70))
    kw = dict(encrypted=True, key_bits=1024, allow_insecure=True)
    with Federation.in_process(tables, workers="sequential", **kw) as seq, \
            Federation.in_process(tables, workers="threads", **kw) as thr:
        a = seq.secure_sum("stats.count", {}, {"n": (1e6, 3), "positives": (1e6, 3)})
        b = thr.secure_sum("stats.count", {}, {"n": (1e6, 3), "positives": (1e6, 3)})
        np.testing.assert_array_equal(a["n"], b["n"])
        np.testing.assert_array_equal(a["positives"], b["positives"])
        assert a["n"].sum() == 180.0
        _THREADS.clear()
        assert seq.secure_sum("test.where", {}, {"n": (1e6, 3)})["n"].sum() == 180.0
        assert _THREADS and set(_THREADS) == {threading.get_ident()}
        _THREADS.clear()
        thr.secure_sum("test.where", {}, {"n": (1e6, 3)})
        assert threading.get_ident() not in _THREADS  # the default: a thread per site


def test_sequential_sites_report_a_crash_as_that_sites_failure_and_refuse_unknown_modes():
    fed = Federation.in_process(make_tables(sizes=(50, 60, 70, 80)), encrypted=False, workers="sequential",
                                timeout=5)
    with fed:
        out = fed.secure_sum("test.flaky", {"fail": ["site_b"]}, {"n": (1e6, 4)})
        np.testing.assert_allclose(out["n"], [200.0])
        assert "task_error" in out.missing["site_b"]
    with pytest.raises(ValueError, match="workers must be one of threads, processes, sequential, got 'fibres'"):
        Federation.in_process(make_tables(), encrypted=False, workers="fibres")


# -- checkpoint / resume -------------------------------------------------------------------------
SCRIPT = r"""
import sys, time, json
import numpy as np
from ehr_fed.federation import Federation, site_task
from ehr_fed.federation.testing import make_tables

@site_task("test.iter", kind="moments")
def it(table, params, ctx):
    beta = np.asarray(params["beta"])
    x = table[["age", "los_days"]].to_numpy(float) / 100
    return {"g": x.T @ (x @ beta - 1.0) }

out, ckpt, progress, sleep = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
fed = Federation.in_process(make_tables(), encrypted=False, checkpoint_dir=ckpt if ckpt != "-" else None)
beta = np.zeros(2)
for i in range(8):
    res = fed.secure_sum("test.iter", {"beta": beta}, {"g": (1e6, 3)})
    beta = beta - 0.005 * res["g"]
    with open(progress, "a") as fh:
        fh.write(json.dumps({"round": res.round, "replayed": res.replayed}) + "\n")
    time.sleep(sleep)
np.save(out, beta)
"""


def _run(tmp_path, name, ckpt, sleep=0.0, wait=True):
    script = tmp_path / "coord.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    args = [sys.executable, str(script), str(tmp_path / f"{name}.npy"), str(ckpt), str(tmp_path / f"{name}.log"),
            str(sleep)]
    proc = subprocess.Popen(args, env=env)
    if wait:
        assert proc.wait(timeout=120) == 0
    return proc


def _log(tmp_path, name):
    p = tmp_path / f"{name}.log"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_killed_coordinator_resumes_with_same_result(tmp_path):
    _run(tmp_path, "straight", "-")
    ckpt = tmp_path / "ckpt"
    proc = _run(tmp_path, "killed", ckpt, sleep=0.25, wait=False)
    deadline = time.time() + 90
    while len(_log(tmp_path, "killed")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = len(_log(tmp_path, "killed"))
    assert 3 <= done_before < 8 and not (tmp_path / "killed.npy").exists()
    _run(tmp_path, "resumed", ckpt)
    log = _log(tmp_path, "resumed")
    assert [e["round"] for e in log] == list(range(8))
    assert all(e["replayed"] for e in log[:done_before]) and not any(e["replayed"] for e in log[done_before + 1:])
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "straight.npy"))


def test_params_hash_lookups_give_the_digest_of_the_canonical_text():
    import hashlib

    from ehr_fed.federation import checkpoint

    def canonical(*parts):
        return hashlib.sha256(checkpoint.dumps(list(parts)).encode()).hexdigest()

    params = {"beta": [0.5, -1.25], "w": np.arange(6.0).reshape(2, 3), "blob": b"\x00\x01", "nested": {"k": [1, 2]}}
    first = checkpoint.params_hash("computation", params)
    assert first == canonical("computation", params)
    assert checkpoint.params_hash("computation", params) == first          # looked up: the same digest
    checkpoint.clear_hash_cache()
    assert checkpoint.params_hash("computation", params) == first          # computed again: the same
    params["beta"][0] = 0.75                                                # changed in place: a new digest
    assert checkpoint.params_hash("computation", params) == canonical("computation", params) != first
    # parts that pickle differently but have one canonical text get that text's digest
    assert checkpoint.params_hash("c", [1.0, 2.0]) == checkpoint.params_hash("c", (1.0, 2.0)) == \
        checkpoint.params_hash("c", [np.float64(1.0), 2.0])
    # key order is part of the canonical text (as it always was)
    assert checkpoint.params_hash({"a": 1, "b": 2}) != checkpoint.params_hash({"b": 2, "a": 1})


def test_params_hash_of_parts_that_do_not_pickle_is_computed_each_time():
    import threading

    from ehr_fed.federation import checkpoint

    lock = threading.Lock()  # not picklable, and not JSON either: the canonical text's own error
    with pytest.raises(TypeError):
        checkpoint.params_hash({"lock": lock})
