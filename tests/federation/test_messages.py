"""Typed messages: validated when built, round trip through dict and flat forms, replies checked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.payload import PayloadTypeError, flatten, unflatten


def _msg(**kw):
    base = dict(action="query", task="stats.count", study="s1", session="sess", round=3, nonce="n1", payload={})
    return TaskMessage(**{**base, **kw})


@pytest.mark.parametrize("bad, match", [
    ({"x": np.array(["a"])}, r"payload\['x'\]: array of dtype <U1"),
    ({"x": np.array([1.0, np.inf])}, "infinite"),
    ({"x": float("nan")}, "non-finite scalar"),
    ({"x": object()}, "value of type object"),
    ({"x": {1: 2}}, "dict key 1 is not a str"),
    ({"x": [1, {"a/b": 1}]}, "may not contain '/'"),
    ({"t": np.array(["2021-01-01"], dtype="datetime64[D]")}, "dtype datetime64"),
])
def test_bad_payload_rejected_when_built(bad, match):
    with pytest.raises(PayloadTypeError, match=match):
        _msg(payload=bad)


def test_bad_header_rejected():
    with pytest.raises(ProtocolError, match="unknown action 'steal'"):
        _msg(action="steal")
    with pytest.raises(ProtocolError, match="round must be an int >= 0"):
        _msg(round=-1)
    with pytest.raises(ProtocolError, match="missing field 'nonce'"):
        TaskMessage.from_dict({"action": "query", "task": "t", "study": "", "session": "", "round": 0})


payload_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.binary(max_size=8),
    st.lists(st.floats(-1e6, 1e6), max_size=4).map(lambda v: np.array(v, dtype=float)),
)
payloads = st.recursive(payload_leaf, lambda ch: st.one_of(
    st.lists(ch, max_size=3),
    st.dictionaries(st.text(alphabet="abcxyz_", min_size=1, max_size=4), ch, max_size=3)), max_leaves=10)


def _eq(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=False))
    return a == b and type(a) is type(b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=3), payloads, max_size=4))
@example({"a": "\x00[]", "b": "\x00{}", "c": "\x00\x00x", "d": ["\x00"]})
def test_flat_round_trip(payload):
    msg = _msg(payload=payload)
    again = TaskMessage.from_flat(msg.to_flat())
    assert _eq(again.payload, msg.payload)
    assert all(not isinstance(v, (dict, list)) for v in msg.to_flat().values())


def test_flatten_keys():
    flat = flatten({"a": {"b": [np.zeros(2), b"x"]}, "e": [], "f": {}})
    assert set(flat) == {"a/b/#0", "a/b/#1", "e", "f"}
    assert _eq(unflatten(flat), {"a": {"b": [np.zeros(2), b"x"]}, "e": [], "f": {}})


def test_reply_checked_against_message():
    msg = _msg()
    good = msg.reply("site_a", {"result": {"n": 1.0}})
    good.check_answers(msg, "site_a")
    d = good.to_dict()
    d.pop("v")
    with pytest.raises(ProtocolError, match=r"answers round 2, not the current round 3 \(stale\)"):
        Reply(**{**d, "round": 2}).check_answers(msg, "site_a")
    with pytest.raises(ProtocolError, match="nonce does not match"):
        Reply(**{**d, "nonce": "old"}).check_answers(msg, "site_a")
    with pytest.raises(ProtocolError, match="is for study 'other', not 's1'"):
        Reply(**{**d, "study": "other"}).check_answers(msg, "site_a")
    with pytest.raises(ProtocolError, match="comes from site 'site_a', the message went to 'site_b'"):
        good.check_answers(msg, "site_b")
    with pytest.raises(ProtocolError, match="malformed reply: missing field 'site_id'"):
        Reply.from_dict({"action": "query"})


# any value, valid or not: the fast pass of validate() must give exactly what the checked pass gives
any_leaf = st.one_of(payload_leaf, st.just(float("inf")), st.just(np.float32(1.5)), st.just(np.int64(7)),
                     st.just(np.bool_(True)), st.just(object()), st.just({1: "x"}), st.just({"a/b": 1}),
                     st.just({"#0": 1}), st.just({"\x00k": 1}), st.just(np.array([1.0, np.inf])),
                     st.just(np.array(["s"])), st.just((1, 2)), st.just(np.ones((2, 2)).T))
any_values = st.recursive(any_leaf, lambda ch: st.one_of(
    st.lists(ch, max_size=3), st.tuples(ch),
    st.dictionaries(st.text(alphabet="ab/#\x00", min_size=1, max_size=3), ch, max_size=3)), max_leaves=12)


def _wrapped(value, depth):
    for _ in range(depth):
        value = [value]
    return value


def _nested(depth):
    v = []
    for _ in range(depth):
        v = [v]
    return v


@given(any_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@example(_nested(32))
@example(_nested(33))
@example({"a": _nested(32)})
@example(_wrapped([1], 32))  # a list at the deepest allowed level, a leaf in it one level too deep
@example(_wrapped({"k": 1}, 32))  # a dict there
@example(_wrapped({}, 32))  # an empty one there (allowed)
@example(_wrapped([1], 31))
def test_fast_validation_equals_the_checked_rules(value):
    from ehr_fed.federation.payload import _checked, validate

    try:
        want = _checked(value, ".payload")
    except PayloadTypeError as exc:
        with pytest.raises(PayloadTypeError) as got:
            validate(value, ".payload")
        assert str(got.value) == str(exc)  # the same message, with the path of the offending value
        return
    got = validate(value, ".payload")
    assert flatten({"v": got}).keys() == flatten({"v": want}).keys()
    for (k, a), b in zip(flatten({"v": got}).items(), flatten({"v": want}).values(), strict=True):
        assert type(a) is type(b), k
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous and np.array_equal(a, b)
        else:
            assert a == b or (a != a and b != b), k
