"""Results of federated rounds: plain dicts that also say who contributed, who was missing and what
the sites suppressed."""

from __future__ import annotations

from typing import Any


class RoundResult(dict):
    """A ``dict`` result with round metadata.

    Attributes
    ----------
    round : int
    contributors : list of str
        Sites whose replies are in the result.
    missing : dict of str to str
        Sites that timed out, failed or refused, with the reason.
    suppressed : dict
        What the sites suppressed (output name -> flat cell indices; per site for ``query``).
    replayed : bool
        True when the result came from the checkpoint journal.
    """

    def __init__(self, data: dict[str, Any], *, round: int = 0, contributors=(), missing=None,
                 suppressed=None, replayed: bool = False):
        super().__init__(data)
        self.round = round
        self.contributors = list(contributors)
        self.missing = dict(missing or {})
        self.suppressed = dict(suppressed or {})
        self.replayed = replayed

    def meta(self) -> dict[str, Any]:
        return {"round": self.round, "contributors": self.contributors, "missing": self.missing,
                "suppressed": self.suppressed}

    def __repr__(self) -> str:
        extra = f", missing={self.missing}" if self.missing else ""
        return f"{type(self).__name__}({dict.__repr__(self)}, round={self.round}{extra})"


class SecureSumResult(RoundResult):
    """``dict[name, np.ndarray]``: the decrypted sums, in the shapes the sites returned.

    ``release`` is the decrypting site's signed release record of these values
    (:mod:`ehr_fed.federation.releases`), ``None`` for a plaintext federation without one; later requests
    carry it back to the sites (the transcript they replay).
    """

    def __init__(self, data: dict[str, Any], *, release: dict[str, Any] | None = None, **meta: Any):
        super().__init__(data, **meta)
        self.release = release

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "release": self.release}


class QueryResult(RoundResult):
    """``dict[site_id, dict]``: each answering site's disclosure-checked plaintext reply."""
