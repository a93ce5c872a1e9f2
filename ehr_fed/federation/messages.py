"""Protocol messages between the coordinator and the sites.

A :class:`TaskMessage` goes from the coordinator to one site; the site answers with a :class:`Reply`.
Both are validated when built (see :mod:`ehr_fed.federation.payload`) and convert to and from plain dicts
(:meth:`to_dict` / :meth:`from_dict`) and flat dicts (:meth:`to_flat` / :meth:`from_flat`) so any
transport (in-process, worker processes, Flower records) can carry them.

Actions
-------
``query``              run a task, return its (disclosure-checked) plaintext result
``secure_sum``         run a task, return each output array encrypted (or plain) and signed
``reveal``             (every participant of a complete attempt, masks on) check the signed list of all
                       contributions, record the computation complete with that set, return the self-mask
                       seed, signed (:mod:`ehr_fed.federation.reveal`)
``decrypt``            (key-holding site) verify signed contributions, add them, decrypt only the sum (with a
                       threshold key: combine its own and the relayed partial decryptions)
``partial_decrypt``    (threshold share holder) the same checks, then its partial decryptions of the sum,
                       encrypted to the combining site
``ping``               liveness and site metadata (site id, key fingerprints)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from ehr_fed.federation import payload as _payload

ACTIONS = ("query", "secure_sum", "reveal", "decrypt", "partial_decrypt", "ping")
PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A message or reply breaks the protocol (malformed, stale, wrong study, wrong site)."""


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a (possibly huge or hostile) value, cut to ``limit`` characters for an error message."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails is described by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def new_nonce() -> str:
    """A fresh random nonce (128 bits, hex)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class TaskMessage:
    """Coordinator -> site.

    Attributes
    ----------
    action : str
        One of :data:`ACTIONS`.
    task : str
        Registered task name (``""`` for ``ping``).
    study : str
        Study id; a site refuses a message for another study.
    session : str
        Coordinator run id (persisted in its checkpoint so a restarted coordinator keeps it).
    round : int
        Round number within the session (>= 0).
    nonce : str
        Random per message round; the reply must echo it.
    payload : dict
        Typed payload (``params``, ``layout``, ciphertexts ...).
    """

    action: str
    task: str
    study: str
    session: str
    round: int
    nonce: str
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.action, str) or self.action not in ACTIONS:
            raise ProtocolError(f"unknown action {_short(self.action)}; expected one of {ACTIONS}")
        for name in ("task", "study", "session", "nonce"):
            if not isinstance(getattr(self, name), str):
                raise ProtocolError(f"TaskMessage.{name} must be a str, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.round, int) or isinstance(self.round, bool) or not 0 <= self.round < 2**63:
            raise ProtocolError(f"TaskMessage.round must be an int >= 0 (below 2**63), got {_short(self.round)}")
        if not self.nonce:
            raise ProtocolError("TaskMessage.nonce is empty")
        if not isinstance(self.payload, dict):
            raise ProtocolError("TaskMessage.payload must be a dict")
        object.__setattr__(self, "payload", _payload.validate(self.payload, ".payload"))

    def header(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION, "action": self.action, "task": self.task, "study": self.study,
            "session": self.session, "round": self.round, "nonce": self.nonce,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.header(), "payload": self.payload}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskMessage:
        if not isinstance(data, dict):
            raise ProtocolError(f"malformed task message: expected a dict, got {type(data).__name__}")
        try:
            v = data.get("v", PROTOCOL_VERSION)
            if type(v) is not int or v != PROTOCOL_VERSION:
                raise ProtocolError(f"protocol version {_short(v)} != {PROTOCOL_VERSION}")
            return cls(
                action=data["action"], task=data["task"], study=data["study"], session=data["session"],
                round=data["round"], nonce=data["nonce"], payload=data.get("payload", {}),
            )
        except KeyError as exc:
            raise ProtocolError(f"malformed task message: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed task message: {_short(exc)}") from None

    def to_flat(self) -> dict[str, Any]:
        return _payload.flatten(self.to_dict())

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TaskMessage:
        return cls.from_dict(_payload.unflatten(flat))

    def reply(self, site_id: str, payload: dict[str, Any] | None = None, *, status: str = "ok",
              error: str = "", error_kind: str = "") -> Reply:
        """The reply to this message from ``site_id``."""
        return Reply(
            site_id=site_id, action=self.action, task=self.task, study=self.study, session=self.session,
            round=self.round, nonce=self.nonce, status=status, error=error, error_kind=error_kind,
            payload=payload or {},
        )


@dataclass(frozen=True)
class Reply:
    """Site -> coordinator. ``status`` is ``"ok"`` or ``"error"`` (then ``error``/``error_kind`` say why)."""

    site_id: str
    action: str
    task: str
    study: str
    session: str
    round: int
    nonce: str
    status: str = "ok"
    error: str = ""
    error_kind: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.status, str) or self.status not in ("ok", "error"):
            raise ProtocolError(f"Reply.status must be 'ok' or 'error', got {_short(self.status)}")
        if not isinstance(self.site_id, str) or not self.site_id:
            raise ProtocolError("Reply.site_id must be a non-empty str")
        for name in ("action", "task", "study", "session", "nonce", "error", "error_kind"):
            if not isinstance(getattr(self, name), str):
                raise ProtocolError(f"Reply.{name} must be a str, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.round, int) or isinstance(self.round, bool) or not -(2**63) <= self.round < 2**63:
            raise ProtocolError(f"Reply.round must be a 64-bit int, got {_short(self.round)}")
        if not isinstance(self.payload, dict):
            raise ProtocolError("Reply.payload must be a dict")
        object.__setattr__(self, "payload", _payload.validate(self.payload, ".payload"))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION, "site_id": self.site_id, "action": self.action, "task": self.task,
            "study": self.study, "session": self.session, "round": self.round, "nonce": self.nonce,
            "status": self.status, "error": self.error, "error_kind": self.error_kind,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        if not isinstance(data, dict):
            raise ProtocolError(f"malformed reply: expected a dict, got {type(data).__name__}")
        try:
            return cls(
                site_id=data["site_id"], action=data["action"], task=data["task"], study=data["study"],
                session=data["session"], round=data["round"], nonce=data["nonce"],
                status=data.get("status", "ok"), error=data.get("error", ""),
                error_kind=data.get("error_kind", ""), payload=data.get("payload", {}),
            )
        except KeyError as exc:
            raise ProtocolError(f"malformed reply: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed reply: {_short(exc)}") from None

    def to_flat(self) -> dict[str, Any]:
        return _payload.flatten(self.to_dict())

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Reply:
        return cls.from_dict(_payload.unflatten(flat))

    def check_answers(self, message: TaskMessage, site_id: str) -> None:
        """Raise :class:`ProtocolError` unless this reply answers ``message`` sent to ``site_id``."""
        problems = []
        if self.site_id != site_id:
            problems.append(f"it comes from site {self.site_id!r}, the message went to {site_id!r}")
        if self.study != message.study:
            problems.append(f"it is for study {self.study!r}, not {message.study!r}")
        if self.session != message.session:
            problems.append(f"it belongs to session {self.session!r}, not {message.session!r}")
        if self.round != message.round:
            problems.append(f"it answers round {self.round}, not the current round {message.round} (stale)")
        if self.nonce != message.nonce:
            problems.append("its nonce does not match the message's (stale or replayed)")
        if self.action != message.action or self.task != message.task:
            problems.append(f"it answers {self.action}:{self.task}, not {message.action}:{message.task}")
        if problems:
            raise ProtocolError(
                f"rejected reply from site {site_id!r} to {message.action} {message.task!r} round "
                f"{message.round}: " + "; ".join(problems)
            )
