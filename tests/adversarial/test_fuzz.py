"""Fuzzing the parsers a coordinator (or anyone on the wire) can reach: mutated messages give only the
documented errors (ProtocolError / PayloadTypeError, or an error Reply from a site), never a crash or a
hang. Seeded (numpy), 10,000 mutations per parser."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.payload import PayloadTypeError, flatten, validate
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.testing import make_table
from ehr_fed.privacy import PrivacyPolicy

N = 10_000
DOCUMENTED = (ProtocolError, PayloadTypeError)

_ODD = [None, True, 0, -1, 2**80, -(2**70), 10**400, 1.5, float("nan"), float("inf"), -float("inf"), "",
        "x" * 5000, "\udcff", "\x00", b"", b"\xff\xfe\x00", [], {}, [1, [2, [3]]], {"a": {"b": 1}}, ("t",),
        np.float64("nan"), np.int64(7), np.array([np.nan, np.inf]), np.array(["a"]), np.zeros((2, 0)),
        object(), {1: 2}, {"a/b": 1}, {"#0": 1}, {"\x00[]": 1}, set(), 1j, bytearray(b"ab"), range(3)]


def _deep(depth: int, kind: str):
    v = 0
    for _ in range(depth):
        v = [v] if kind == "list" else {"k": v}
    return v


_DEEP = [_deep(d, kind) for d in (31, 33, 200, 5000) for kind in ("list", "dict")]


def _odd_value(rng):
    if rng.random() < 0.1:
        return _DEEP[int(rng.integers(len(_DEEP)))]  # shared, never mutated: parsers must not recurse
    return _ODD[int(rng.integers(len(_ODD)))]


def _copy(v):
    """Copy of the (small, plain) base message: dicts and lists copied, leaves shared."""
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _mutate(base: dict, rng) -> object:
    """One to three mutations: type swaps, missing / extra keys, huge ints, NaN, nesting, wrong bytes."""
    if rng.random() < 0.03:
        return _odd_value(rng)  # not even a dict
    msg = _copy(base)
    for _ in range(int(rng.integers(1, 4))):
        keys = list(msg) if isinstance(msg, dict) else []
        op = rng.integers(5)
        if op == 0 and keys:  # type swap / odd value
            msg[keys[int(rng.integers(len(keys)))]] = _odd_value(rng)
        elif op == 1 and keys:  # missing key
            del msg[keys[int(rng.integers(len(keys)))]]
        elif op == 2:  # extra key (odd names too)
            name = ["extra", "", "/", "#1", 5, None][int(rng.integers(6))]
            msg[name] = _odd_value(rng)
        elif op == 3:  # inside the payload
            p = msg.get("payload")
            if not isinstance(p, dict):
                msg["payload"] = p = {}
            target = p.setdefault("params", {}) if rng.random() < 0.5 and isinstance(p.get("params", {}), dict) else p
            target[["params", "layout", "columns", "edges", "x", "contributions", "sum"][int(rng.integers(7))]] = \
                _odd_value(rng)
        else:  # round / version edge values
            msg[["round", "v", "nonce", "action"][int(rng.integers(4))]] = _odd_value(rng)
    return msg


def _flat_mutate(base: dict, rng) -> object:
    flat = flatten(base)
    if rng.random() < 0.5:
        return _mutate(flat, rng)
    flat[["payload/params/x/#0", "payload/#1", "a//b", "", "payload/params"][int(rng.integers(5))]] = _odd_value(rng)
    return flat


TASK = TaskMessage("query", "stats.count", "s1", "sess", 1, "n1", {"params": {}}).to_dict()
REPLY = TaskMessage("query", "stats.count", "s1", "sess", 1, "n1").reply(
    "site_a", {"result": {"n": 12.0, "positives": None}, "suppressed": {"positives": [0]}}).to_dict()


def _run(parse, make, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    outcomes = {"ok": 0, "documented": 0}
    t0 = time.perf_counter()
    for _ in range(N):
        data = make(rng)
        try:
            parse(data)
            outcomes["ok"] += 1
        except DOCUMENTED:
            outcomes["documented"] += 1
    assert time.perf_counter() - t0 < 60  # no hang (about 2-10 s on an idle core)
    return outcomes


@pytest.mark.parametrize("kind", ["dict", "flat"])
def test_task_message_parser(kind):
    if kind == "dict":
        out = _run(TaskMessage.from_dict, lambda rng: _mutate(TASK, rng), 1)
    else:
        out = _run(TaskMessage.from_flat, lambda rng: _flat_mutate(TASK, rng), 2)
    assert out["documented"] > N // 3 and out["ok"] > 0  # the fuzzer reaches both outcomes


@pytest.mark.parametrize("kind", ["dict", "flat"])
def test_reply_parser(kind):
    if kind == "dict":
        out = _run(Reply.from_dict, lambda rng: _mutate(REPLY, rng), 3)
    else:
        out = _run(Reply.from_flat, lambda rng: _flat_mutate(REPLY, rng), 4)
    assert out["documented"] > N // 3 and out["ok"] > 0


def test_payload_validate():
    out = _run(lambda v: validate(v, ""), lambda rng: _mutate({"params": {"a": 1}, "x": [1.0]}, rng), 5)
    assert out["documented"] > N // 4 and out["ok"] > 0


def test_site_answers_every_malformed_message_and_keeps_running():
    node = SiteNode("site_a", make_table("site_a", 60, 1), PrivacyPolicy(), study="s1")
    rng = np.random.default_rng(6)
    kinds: dict[str, int] = {}
    t0 = time.perf_counter()
    for i in range(N):
        data = _mutate(TASK, rng)
        if not isinstance(data, dict):  # SiteNode.handle takes a TaskMessage or its dict form
            data = {"payload": data}
        if rng.random() < 0.5:
            data["nonce"] = f"fuzz-{i}"  # let some messages past the replay check into the tasks
        rep = node.handle(data)  # never raises
        assert isinstance(rep, Reply)
        if rep.ok:
            assert rep.action == "query" and rep.task == "stats.count"
        else:
            assert rep.error_kind and rep.error.startswith("site site_a: ")
        kinds[rep.error_kind or "ok"] = kinds.get(rep.error_kind or "ok", 0) + 1
    assert time.perf_counter() - t0 < 60  # no hang (about 2-10 s on an idle core)
    assert kinds.get("protocol", 0) > N // 4
    # and it still answers a good message
    good = dict(TASK, nonce="final", round=10**6)
    assert node.handle(good).ok
