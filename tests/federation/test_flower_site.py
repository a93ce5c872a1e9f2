"""The site service's local socket, the wire form and identify signatures (no Flower processes).

The service must answer every malformed message with an error reply and keep running, refuse peers of
another uid, never unpickle, and keep its replay memory across a restart.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import struct
import threading
import time

import numpy as np
import pandas as pd
import pytest

from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.messages import Reply, TaskMessage
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.transports import flower_wire as wire
from ehr_fed.federation.transports.flower import bundle_verifier, from_recorddict, to_recorddict
from ehr_fed.federation.transports.flower_site import (
    OP,
    SiteClient,
    SiteService,
    SiteServiceError,
    identify_statement,
)


def _node(site_id: str = "site_a") -> SiteNode:
    table = pd.DataFrame({"site_id": site_id, "person_key": ["p1", "p2"], "label": [0, 1], "age": [50.0, 60.0]})
    return SiteNode(site_id, table, keys=SiteKeys.generate(site_id))


def _ping(nonce: str, session: str = "s1", round: int = 0) -> TaskMessage:
    return TaskMessage(action="ping", task="", study="", session=session, round=round, nonce=nonce)


@pytest.fixture()
def service(tmp_path):
    folder = tmp_path / "run"
    svc = SiteService(_node(), folder / "site.sock", tmp_path / "state")
    thread = threading.Thread(target=svc.serve_forever, daemon=True)
    thread.start()
    yield svc
    svc.close()
    thread.join(5)


def _reply(client: SiteClient, msg: TaskMessage) -> Reply:
    return Reply.from_flat(wire.unpack(client.handle(wire.pack(msg.to_flat()))))


def test_wire_round_trip_keeps_types_and_values():
    flat = TaskMessage(action="secure_sum", task="t", study="s", session="x", round=2, nonce="ab12",
                       payload={"a": np.arange(6.0).reshape(2, 3), "i": np.array([1, 2], dtype=np.uint16),
                                "ct": b"\x00\x01", "none": None, "nested": {"k": [1, 2.5, "x", True]},
                                "empty": [], "big": 2**200}).to_flat()
    back = TaskMessage.from_flat(from_recorddict(to_recorddict(flat)))
    big = {"a": np.arange(700_000, dtype=np.float64)}  # above the inline limit: a chunked Flower Array
    np.testing.assert_array_equal(from_recorddict(to_recorddict(big))["a"], big["a"])
    np.testing.assert_array_equal(back.payload["a"], np.arange(6.0).reshape(2, 3))
    assert back.payload["i"].dtype == np.uint16
    assert back.payload["ct"] == b"\x00\x01" and back.payload["none"] is None and back.payload["big"] == 2**200
    assert back.payload["nested"] == {"k": [1, 2.5, "x", True]} and back.payload["empty"] == []


@pytest.mark.parametrize("blob, match", [
    (b"", "bad magic"),
    (pickle.dumps({"a": 1}), "bad magic"),
    (wire.MAGIC + struct.pack("<I", 99) + b"[]", "runs past the end"),
    (wire.MAGIC + struct.pack("<I", 4) + b"nope", "not JSON"),
    (wire.MAGIC + struct.pack("<I", 34) + b'[["a","array",{"offset":0,"nbytes":8,', "not JSON"),
])
def test_wire_refuses_what_it_did_not_make(blob, match):
    with pytest.raises(wire.WireError, match=match):
        wire.unpack(blob)


def test_wire_refuses_object_arrays_and_bad_layouts():
    import json

    def blob(entries, body=b""):
        h = json.dumps(entries).encode()
        return wire.MAGIC + struct.pack("<I", len(h)) + h + body

    with pytest.raises(wire.WireError, match="not allowed"):
        wire.unpack(blob([["a", "array", {"offset": 0, "nbytes": 8, "dtype": "|O", "shape": [1]}]], b"\0" * 8))
    with pytest.raises(wire.WireError, match="outside the message body"):
        wire.unpack(blob([["a", "bytes", {"offset": 4, "nbytes": 8}]], b"\0" * 8))
    with pytest.raises(wire.WireError, match="do not hold an array"):
        wire.unpack(blob([["a", "array", {"offset": 0, "nbytes": 8, "dtype": "<f8", "shape": [2]}]], b"\0" * 8))
    with pytest.raises(wire.WireError, match="unknown kind"):
        wire.unpack(blob([["a", "pickle", "x"]]))
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.pack({"a": object()})


def test_socket_and_folder_modes(service):
    assert oct(service.socket_path.stat().st_mode & 0o777) == "0o600"
    assert oct(service.socket_path.parent.stat().st_mode & 0o777) == "0o700"


def test_open_socket_folder_is_refused(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with pytest.raises(SiteServiceError, match="must belong to this user and have mode 0700"):
        SiteService(_node(), folder / "site.sock", tmp_path / "state")


def test_a_service_stopped_before_its_loop_starts_ends_quietly(tmp_path):
    """A SIGTERM can close the service before its accept thread first runs: the thread ends, no error."""
    svc = SiteService(_node(), tmp_path / "run" / "site.sock", tmp_path / "state")
    svc.close()
    errors = []
    previous, threading.excepthook = threading.excepthook, errors.append
    try:
        thread = threading.Thread(target=svc.serve_forever, daemon=True)
        thread.start()
        thread.join(5)
    finally:
        threading.excepthook = previous
    assert not thread.is_alive() and errors == []
    assert not svc.socket_path.exists()


def test_every_malformed_message_gets_an_error_reply_and_the_service_lives_on(service):
    client = SiteClient(service.socket_path, timeout=10)
    rng = random.Random(7)
    good = wire.pack(_ping("n0").to_flat())
    requests = [b"", pickle.dumps({"action": "ping"}), b"EHRF1", good[: len(good) // 2]]
    for _ in range(300):  # mutated task messages and mutated requests
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        requests.append(bytes(mutated))
    for blob in requests:
        reply = Reply.from_flat(wire.unpack(client.handle(blob)))
        assert reply.status == "error" and reply.error.startswith("site site_a: ")
    for fields in ({OP: "pickle"}, {OP: "handle"}, {OP: "handle", "message": "text"}, {"x": 1}):
        reply = Reply.from_flat(client.request(fields))
        assert reply.status == "error" and reply.error_kind == "protocol"
    # a raw frame that is not a wire blob, and an oversized length prefix: error reply, then a new stream
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(service.socket_path))
        wire.send_frame(raw, b"\x80\x04garbage")
        assert Reply.from_flat(wire.unpack(wire.recv_frame(raw))).status == "error"
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(service.socket_path))
        raw.sendall(struct.pack("<Q", wire.MAX_FRAME + 1))
        assert "larger than the limit" in Reply.from_flat(wire.unpack(wire.recv_frame(raw))).error
    assert _reply(client, _ping("still-alive")).ok  # the service still answers real messages


def test_peer_of_another_uid_is_refused(tmp_path):
    svc = SiteService(_node(), tmp_path / "run" / "site.sock", tmp_path / "state")
    svc.allowed_uids = {os.getuid() + 12345}  # as if this test ran as another user
    thread = threading.Thread(target=svc.serve_forever, daemon=True)
    thread.start()
    try:
        reply = Reply.from_flat(SiteClient(svc.socket_path, timeout=10).request({OP: "handle"}))
        assert reply.status == "error" and f"peer uid {os.getuid()} may not use this site's socket" in reply.error
    finally:
        svc.close()


def test_replay_memory_survives_a_restart(tmp_path):
    sock, state = tmp_path / "run" / "site.sock", tmp_path / "state"
    svc = SiteService(_node(), sock, state)
    first = wire.unpack(svc.answer(wire.pack({OP: "handle", "message": wire.pack(_ping("n1", round=3).to_flat())})))
    assert first["status"] == "ok"
    svc.close()
    svc = SiteService(_node(), sock, state)  # a new process would build a new node from the same files
    try:
        again = wire.unpack(svc.answer(wire.pack({OP: "handle", "message": wire.pack(_ping("n1", round=3).to_flat())})))
        assert again["status"] == "error" and "replayed message" in again["error"]
        stale = wire.unpack(svc.answer(wire.pack({OP: "handle", "message": wire.pack(_ping("n2", round=1).to_flat())})))
        assert stale["status"] == "error" and "stale message" in stale["error"]
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in state.glob("*.jsonl"))
    finally:
        svc.close()


def test_identify_is_signed_with_the_ceremony_key_and_checked(service):
    real = service.node.keys.public_bundle()
    forged = SiteKeys.generate("site_a")  # a node that claims the id with keys of its own
    verify = bundle_verifier({"site_a": real})
    challenge = "ab" * 32
    got = SiteClient(service.socket_path).identify(node_id=17, challenge=challenge)
    assert got["site-id"] == "site_a"
    assert verify("site_a", 17, challenge, got["signature"])
    assert not verify("site_a", 18, challenge, got["signature"])  # bound to the node
    assert not verify("site_a", 17, "cd" * 32, got["signature"])  # bound to the challenge
    assert not verify("site_b", 17, challenge, got["signature"])  # unknown site
    assert not verify("site_a", 17, challenge, forged.sign(identify_statement("site_a", 17, challenge)))
    short = SiteClient(service.socket_path).identify(node_id=17, challenge="ab")
    assert short["status"] == "error" and "challenge" in short["error"]


# -- waits of the SuperNode launcher and the site ClientApp (no Flower processes) ----------------------
def test_supernode_waits_are_short_while_a_computation_runs_and_long_when_idle(monkeypatch):
    from ehr_fed.federation.transports import flower_supernode as fs

    slept: list[float] = []
    monkeypatch.setattr(fs._time, "sleep", slept.append)
    paced = fs._PacedTime(poll=0.5, hot=0.05, window=5.0)
    paced.sleep(3)  # Flower's idle wait, nothing answered yet: the long poll
    paced.sleep(0.5)  # Flower's wait for the ClientApp's reply: an in-memory check
    paced.activity()  # the node just answered a message
    paced.sleep(3)
    assert slept == [0.5, fs.BUSY_WAIT, 0.05]
    now = fs._time.monotonic()
    monkeypatch.setattr(fs._time, "monotonic", lambda: now + 6.0)  # past the window: back to the long poll
    paced.sleep(3)
    assert slept[-1] == 0.5
    assert paced.perf_counter is fs._time.perf_counter  # everything else is the time module's


def test_supernode_loop_marks_activity_after_each_answered_message():
    from ehr_fed.federation.transports import flower_supernode as fs

    paced = fs._PacedTime(poll=0.5, hot=0.05, window=5.0)
    calls = []

    def push_messages(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("send failed")  # activity is marked even when the push fails

    wrapped = fs._marking(push_messages, paced)
    with pytest.raises(RuntimeError):
        wrapped(state="s")
    assert calls == [{"state": "s"}] and paced.idle_wait() == 0.05


@pytest.mark.parametrize("argv, match", [
    (["--poll-interval", "10", "--"], "--poll-interval must be between"),
    (["--hot-poll", "0", "--"], "--hot-poll must be between"),
    (["--hot-window", "x"], "--hot-window needs a number of seconds"),
])
def test_supernode_launcher_refuses_bad_waits_with_the_option_named(argv, match):
    from ehr_fed.federation.transports import flower_supernode as fs

    with pytest.raises(SystemExit, match=match):
        fs.main([*argv, "--superlink", "127.0.0.1:1"])


def test_site_clientapp_polls_fast_only_after_a_task(tmp_path):
    from ehr_fed.federation.transports.flower_clientapp import SiteClientApp

    app = SiteClientApp("127.0.0.1:1", tmp_path / "none.sock", trusted={"x"}, poll_interval=0.25,
                        hot_poll=0.02, hot_window=5.0)
    assert app.idle_wait() == 0.25
    app._last_task = time.monotonic()
    assert app.idle_wait() == 0.02
    app._last_task = time.monotonic() - 6.0
    assert app.idle_wait() == 0.25


def test_supernode_notifies_its_clientapp_through_the_fifo(tmp_path):
    from ehr_fed.federation.transports import flower_supernode as fs
    from ehr_fed.federation.transports.flower_notify import Notifier, NotifyError, Waiter

    fifo = tmp_path / "site.notify"
    Notifier(fifo).notify()  # no ClientApp listening yet: nothing happens, nothing fails
    waiter = Waiter(fifo)
    assert oct(os.stat(fifo).st_mode & 0o777) == "0o600"
    assert waiter.wait(0.05) is False
    made = iter([None, 7])  # Flower's create_task: no task (an id collision), then task 7
    create_task = fs._notifying(lambda *_, **__: next(made), Notifier(fifo))
    assert create_task("state") is None and waiter.wait(0.05) is False
    t = time.monotonic()
    assert create_task("state") == 7 and waiter.wait(5.0) is True
    assert time.monotonic() - t < 1.0
    assert waiter.wait(0.05) is False  # one byte wakes the ClientApp once
    waiter.close()
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotifyError, match="is not a FIFO"):
        Waiter(tmp_path / "plain")
    with pytest.raises(NotifyError, match="in an existing folder"):
        Notifier(tmp_path / "missing" / "x.notify")


def test_clientapp_with_notification_polls_only_as_a_fallback(tmp_path):
    from ehr_fed.federation.transports.flower_clientapp import SiteClientApp

    app = SiteClientApp("127.0.0.1:1", tmp_path / "none.sock", trusted={"x"}, poll_interval=0.25,
                        hot_poll=0.02, hot_window=5.0, notify=tmp_path / "n.notify")
    app._last_task = time.monotonic()
    assert app.idle_wait() == 0.25
    app.stop()


def test_grid_transport_packs_a_broadcast_once_and_each_site_gets_its_own_message(monkeypatch):
    """The coordinator sends one message object to every site: it is packed once; a message meant for one
    site only is packed for it alone, and every SuperNode receives exactly what its site was sent."""
    from flwr.app import Message
    from flwr.supercore.task_identity import TaskIdentity

    from ehr_fed.federation.transports import flower as fl

    for name, value in (("_run_id", 7), ("_node_id", 1), ("_task_id", 1)):  # as a ServerApp process has them
        monkeypatch.setattr(TaskIdentity, name, value)

    pushed: list[Message] = []

    class Grid:
        def push_messages(self, messages):
            pushed.extend(messages)
            return [f"id{i}" for i in range(len(messages))]

        def pull_messages(self, ids):
            return []

    transport = object.__new__(fl.GridTransport)
    transport.grid, transport.poll, transport.last_exchange = Grid(), 0.001, {}
    transport._nodes = {"a": 11, "b": 12, "c": 13, "d": 14}
    packs = []
    real_pack = fl.wire.pack
    monkeypatch.setattr(fl.wire, "pack", lambda flat: packs.append(flat) or real_pack(flat))
    everyone, own = _ping("n-all"), _ping("n-own")
    out = transport.send({"a": everyone, "b": everyone, "c": own, "d": everyone, "x": everyone}, timeout=0.01)
    assert len(packs) == 2
    got = {m.metadata.dst_node_id: TaskMessage.from_flat(from_recorddict(m.content)).nonce for m in pushed}
    assert got == {11: "n-all", 12: "n-all", 13: "n-own", 14: "n-all"}
    assert out["x"].kind == "unreachable" and {out[s].kind for s in "abcd"} == {"timeout"}
