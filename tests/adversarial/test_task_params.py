"""Every built-in site task declares the parameters it reads; a request with any other is refused (issue 13).

An unused parameter gives the same computation a new digest (a fresh differencing record) or, for a task
that reads parameters it should not, a silent channel. The malicious coordinator sends every task of the task
table, in a release mode the task allows, once with an unknown parameter added to its real ones.
"""

from __future__ import annotations

import pytest

from ehr_fed.federation.tasks import get_task, registered_tasks

from .conftest import MaliciousCoordinator

UNKNOWN = "zz_not_a_parameter"
# the tasks ehr-fed itself registers (test modules register their own, e.g. ``test.*``, ``tests.*``)
BUILTIN = [n for n in registered_tasks() if get_task(n).fn.__module__.startswith("ehr_fed.")]


def test_every_builtin_task_declares_its_parameters():
    assert len(BUILTIN) >= 20
    undeclared = [n for n in BUILTIN if get_task(n).params is None]
    assert undeclared == []
    for name in BUILTIN:
        assert UNKNOWN not in get_task(name).params


def _send(attacker: MaliciousCoordinator, name: str, params: dict):
    task = get_task(name)
    if "plaintext" in task.release:
        return attacker.query(name, params)
    parts = sorted(attacker.nodes)
    return attacker.send("secure_sum", name, {"params": params, "layout": {"x": [1e9, 4]}, "encrypted": False,
                                              "participants": parts, "decryptor": parts[0]})


@pytest.mark.parametrize("name", BUILTIN)
def test_every_task_refuses_an_unknown_parameter(attacker, name):
    declared = get_task(name).params
    params = {p: None for p in declared[:2]}  # some of its real parameters (values beside the point)
    params[UNKNOWN] = 1
    replies = _send(attacker, name, params)
    assert replies
    for sid, rep in replies.items():
        assert not rep.ok, f"{sid} computed {name} with an unknown parameter"
        assert f"{name!r} takes the parameters" in rep.error and UNKNOWN in rep.error, (sid, rep.error)
        assert rep.payload == {}, sid
    # the declared parameters alone pass the allow-list (whatever the task then makes of their values)
    replies = _send(attacker, name, {p: None for p in declared[:2]})
    assert all("takes the parameters" not in (rep.error or "") for rep in replies.values())
