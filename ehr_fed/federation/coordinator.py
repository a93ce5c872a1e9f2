"""The coordinator: sends named tasks to the sites, checks their replies, adds ciphertexts.

It holds the Paillier public key and the sites' public bundles only (:class:`CoordinatorKeys`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.federation import he
from ehr_fed.federation.checkpoint import Journal, params_hash
from ehr_fed.federation.keys import CoordinatorKeys, SiteKeys, coordinator_view, run_ceremony
from ehr_fed.federation.masks import params_digest
from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage, new_nonce
from ehr_fed.federation.payload import validate
from ehr_fed.federation.results import QueryResult, SecureSumResult
from ehr_fed.federation.signing import contribution_digest
from ehr_fed.federation.site import SiteNode
from ehr_fed.federation.tasks import UnknownTaskError, get_task
from ehr_fed.federation.transports.base import SiteFailure, Transport
from ehr_fed.privacy import PrivacyPolicy

log = logging.getLogger(__name__)


class FederationError(RuntimeError):
    """A federated round could not complete (too few sites, every decryptor failed, bad layout...)."""


class Federation:
    """A coordinator bound to a transport.

    Parameters
    ----------
    transport : Transport
    keys : CoordinatorKeys, optional
        Public material from the key ceremony (required for ``encrypted=True``).
    policy : PrivacyPolicy, optional
        The federation's policy; its ``min_sites`` is the coordinator's quorum per round.
    encrypted : bool
    study : StudySpec or str, optional
        The study (``fed.study``); its ``study_id`` (or the str itself) is sent with every message
        (``fed.study_id``) and the sites refuse messages for another study.
    checkpoint_dir : path, optional
        Journal of completed rounds; a restarted coordinator resumes from it.
    timeout : float, optional
        Seconds to wait for the sites in each round.
    """

    def __init__(self, transport: Transport, *, keys: CoordinatorKeys | None = None,
                 policy: PrivacyPolicy | None = None, encrypted: bool = True, study: Any = None,
                 checkpoint_dir: str | Path | None = None, timeout: float | None = 600.0,
                 allow_insecure: bool = False):
        self.transport = transport
        self.keys = keys
        self.policy = policy or PrivacyPolicy()
        self.encrypted = encrypted
        self.study = study
        self.study_id = _study_id(study)
        self.timeout = timeout
        self.journal = Journal(checkpoint_dir)
        self._round = -1
        self.history: list[dict[str, Any]] = []
        #: the sites of this session's secure sums (fixed by the first one; shrinks only by drop-outs)
        self.members: list[str] | None = None
        if encrypted and (keys is None or not keys.paillier_public):
            raise FederationError("encrypted=True needs the Paillier public key from the key ceremony "
                                  "(keys=CoordinatorKeys); or pass encrypted=False for plaintext tests")
        self._pk = he.load_public(keys.paillier_public, allow_insecure=allow_insecure) if encrypted and keys else None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def in_process(cls, tables: Mapping[str, pd.DataFrame], policy: PrivacyPolicy | dict | None = None,
                   encrypted: bool = True, key_bits: int = 2048, allow_insecure: bool = False,
                   checkpoint_dir: str | Path | None = None, *, study: Any = None,
                   site_policies: Mapping[str, PrivacyPolicy] | None = None, workers: str = "threads",
                   timeout: float | None = 600.0, audit_dir: str | Path | None = None,
                   site_keys: Mapping[str, SiteKeys] | None = None, key_scheme: str = "single",
                   threshold: int | None = None, masks: bool = True) -> Federation:
        """A federation of local tables (notebooks, tests): runs the key ceremony among the sites.

        ``site_keys`` reuses existing key material (e.g. one keypair per test session) instead of a
        new ceremony. ``key_scheme="threshold"`` makes the ceremony deal t-of-n key shares (``threshold``,
        default a majority of the sites) so that no single site can decrypt. ``masks=False`` turns the
        pairwise masks off at every site: only to measure their cost. ``workers``: the sites as threads
        (default), as worker processes (``"processes"``), or answered one after another in the calling
        thread (``"sequential"``: per-site CPU without contention, one-thread profiles and tracebacks).
        """
        if not tables:
            raise FederationError("Federation.in_process needs at least one site table")
        if isinstance(policy, dict):
            policy = PrivacyPolicy.from_mapping(policy)
        policy = policy or PrivacyPolicy()
        if site_keys is not None:
            keys_by_site = {sid: site_keys[sid] for sid in tables}
            ckeys = coordinator_view(keys_by_site)
        else:
            keys_by_site = {sid: SiteKeys.generate(sid) for sid in tables}
            ckeys = run_ceremony(keys_by_site, n_length=key_bits, allow_insecure=allow_insecure,
                                 encrypted=encrypted, scheme=key_scheme, threshold=threshold)
        nodes = {}
        for sid, table in tables.items():
            sp = (site_policies or {}).get(sid, policy)
            audit = Path(audit_dir) / f"{sid}.audit.jsonl" if audit_dir else None
            nodes[sid] = SiteNode(sid, table, sp, keys_by_site[sid], study=_study_id(study), audit_log=audit,
                                  allow_insecure=allow_insecure, masks=masks)
        from ehr_fed.federation.transports.in_process import InProcessTransport

        transport = InProcessTransport(nodes, workers=workers)
        return cls(transport, keys=ckeys, policy=policy, encrypted=encrypted, study=study,
                   checkpoint_dir=checkpoint_dir, timeout=timeout, allow_insecure=allow_insecure)

    @classmethod
    def from_yaml(cls, path: str | Path, study: str | Path | None = None, encrypted: bool = True,
                  key_bits: int | None = None, allow_insecure: bool = False,
                  checkpoint_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                  **kwargs: Any) -> Federation:
        """A federation from the YAML ``ehr-fed synth`` writes (see :mod:`ehr_fed.federation.config`)."""
        from ehr_fed.federation.config import federation_from_yaml

        return federation_from_yaml(path, study=study, encrypted=encrypted, key_bits=key_bits,
                                    allow_insecure=allow_insecure, checkpoint_dir=checkpoint_dir,
                                    cache_dir=cache_dir, **kwargs)

    # -- API ---------------------------------------------------------------------------------------
    @property
    def site_ids(self) -> list[str]:
        return list(self.transport.site_ids())

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, task: str, params: dict | None = None) -> QueryResult:
        """Run ``task`` at every site; returns ``{site_id: reply dict}`` (disclosure-checked plaintext)."""
        params = validate(dict(params or {}), f"[params of {task!r}]")
        r, key, hit = self._begin("query", task, params)
        if hit is not None:
            return QueryResult(hit["data"], round=r, replayed=True, **hit["meta"])
        replies, missing = self._broadcast("query", task, r, {"params": params})
        data = {sid: rep.payload["result"] for sid, rep in replies.items()}
        supp = {sid: rep.payload.get("suppressed", {}) for sid, rep in replies.items() if rep.payload.get("suppressed")}
        result = QueryResult(data, round=r, contributors=sorted(replies), missing=missing, suppressed=supp)
        return self._finish(r, key, f"query {task}", result)

    def secure_sum(self, task: str, params: dict | None = None,
                   layout: Mapping[str, tuple[float, int]] | None = None) -> SecureSumResult:
        """Sum of every site's ``task`` outputs, encrypted at the sites and decrypted only as a sum.

        Parameters
        ----------
        task : str
            Registered site task returning ``dict[name, array]``.
        params : dict
            Task parameters (typed payload).
        layout : dict of name to (bound, max_terms), or to {"widths": segments, "max_terms": T}
            Per output: the largest absolute value one site may return and the most terms that will be
            added (for the encoding's headroom); the names must be exactly the task's outputs. The second
            form declares exact integer fields of the given bit widths (``[[repeat, [w, ...]], ...]``, see
            :mod:`ehr_fed.crypto.fields`), packed bit-tight: far fewer ciphertexts for histograms of counts.
        """
        params = validate(dict(params or {}), f"[params of {task!r}]")
        if not layout:
            raise FederationError(f"secure_sum({task!r}) needs a layout {{name: (bound, max_terms)}}")
        lay = {name: _layout_entry(name, spec) for name, spec in layout.items()}
        r, key, hit = self._begin("secure_sum", task, params, lay)
        if hit is not None:
            return SecureSumResult(hit["data"], round=r, replayed=True, **hit["meta"])
        digest = params_digest(params)
        # the participant set is fixed per session by its first sum: a site that dropped out stays out (a
        # later sum over a different set of the same sites would invite differencing)
        participants, missing = sorted(self.members or self.site_ids), {}
        while True:
            # the masks cancel only over the exact participant set: a site that drops out means the round
            # is run again with the survivors (new nonce, new masks); a subset sum is never unmasked
            decryptor = self._decryptors(participants)[0]
            payload = {"params": params, "layout": lay, "encrypted": self.encrypted, "participants": participants,
                       "decryptor": decryptor}
            nonce = new_nonce()
            replies, dropped = self._broadcast("secure_sum", task, r, payload, nonce=nonce, sites=participants)
            missing.update(dropped)
            if not dropped:
                break
            participants = sorted(replies)
            log.warning("round %d (%s): %s did not contribute; running the round again with %s", r, task,
                        sorted(dropped), participants)
        contributions = self._check_contributions(task, r, nonce, replies, lay, participants, digest, decryptor)
        self.members = list(participants)
        total = {name: he.add(self._pk, [c["arrays"][name] for c in contributions]) for name in lay}
        reveals = None
        if any(rep.payload.get("masked") for rep in replies.values()):
            reveals = self._reveals(task, r, nonce, contributions, participants, digest, decryptor)
        arrays, supp, contributors, release = self._decrypt(task, r, nonce, contributions, total, missing, lay,
                                                            participants, digest, decryptor, params,
                                                            reveals=reveals)
        result = SecureSumResult(arrays, round=r, contributors=contributors, missing=missing, suppressed=supp,
                                 release=release)
        return self._finish(r, key, f"secure_sum {task}", result)

    # -- internals ---------------------------------------------------------------------------------
    def _begin(self, action: str, task: str, *parts: Any):
        self._round += 1
        key = params_hash(action, task, *parts)
        found, stored = self.journal.lookup(self._round, key)
        return self._round, key, (stored if found else None)

    def _finish(self, r: int, key: str, label: str, result):
        meta = {k: v for k, v in result.meta().items() if k != "round"}
        self.journal.record(r, key, label, {"data": dict(result), "meta": meta})
        self.history.append({"round": r, "label": label, **result.meta()})
        if result.missing:
            log.warning("round %d (%s): missing sites %s", r, label, result.missing)
        return result

    def _messages(self, action: str, task: str, r: int, payload: dict, sites, nonce: str | None = None):
        # one message for every site: the same header and nonce, its payload validated once (nothing changes a
        # message once built; each site validates what it receives again)
        msg = TaskMessage(action, task, self.study_id, self.journal.session, r, nonce or new_nonce(), payload)
        return dict.fromkeys(sites, msg)

    def _broadcast(self, action: str, task: str, r: int, payload: dict, *, nonce: str | None = None,
                   sites: list[str] | None = None):
        msgs = self._messages(action, task, r, payload, self.site_ids if sites is None else sites, nonce)
        raw = self.transport.send(msgs, self.timeout)
        replies: dict[str, Reply] = {}
        missing: dict[str, str] = {}
        for sid, msg in msgs.items():
            rep = raw.get(sid, SiteFailure(sid, "unreachable", "the transport returned nothing"))
            if isinstance(rep, SiteFailure):
                missing[sid] = f"{rep.kind}: {rep.detail}"
                continue
            rep.check_answers(msg, sid)
            if not rep.ok:
                missing[sid] = f"{rep.error_kind}: {rep.error}"
                continue
            replies[sid] = rep
        self._check_quorum(action, task, r, replies, missing)
        return replies, missing

    def _check_quorum(self, action, task, r, replies, missing) -> None:
        need = min(self.policy.min_sites, len(self.site_ids))
        if len(replies) >= need and replies:
            return
        lines = "\n  ".join(f"{s}: {why}" for s, why in missing.items())
        raise FederationError(
            f"round {r} ({action} {task!r}): only {len(replies)} of {len(self.site_ids)} sites answered, "
            f"at least min_sites={self.policy.min_sites} are needed. Missing:\n  {lines}\n"
            "Fix the failing sites (see their errors) or retry; a restarted coordinator with the same "
            "checkpoint_dir resumes from the last completed round."
        )

    def _check_contributions(self, task, r, nonce, replies: dict[str, Reply], lay, participants,
                             digest, decryptor) -> list[dict]:
        out = []
        shapes = None
        for sid, rep in replies.items():
            p = rep.payload
            try:
                arrays, sh, sig = p["arrays"], p["shapes"], p["signature"]
            except KeyError as exc:
                raise ProtocolError(f"secure_sum reply from {sid!r} lacks {exc.args[0]!r}") from None
            if sorted(arrays) != sorted(lay) or sorted(sh) != sorted(lay):
                raise ProtocolError(f"secure_sum reply from {sid!r} has outputs {sorted(arrays)}, "
                                    f"layout declares {sorted(lay)}")
            for name, v in arrays.items():
                if self.encrypted != isinstance(v, bytes):
                    raise ProtocolError(f"site {sid!r} sent output {name!r} "
                                        f"{'unencrypted' if self.encrypted else 'encrypted'}")
            if shapes is None:
                shapes = sh
            elif any(list(sh[n]) != list(shapes[n]) for n in lay):
                raise ProtocolError(f"site {sid!r} returned shapes {sh}, other sites {shapes}: the task must "
                                    "return the same shapes at every site")
            bundle = self.keys.sites.get(sid) if self.keys else None
            if bundle is not None:
                signed = contribution_digest(study=self.study_id, session=self.journal.session, round=r,
                                             nonce=nonce, task=task, site_id=sid, arrays=arrays, shapes=sh,
                                             participants=participants, params=digest, decryptor=decryptor)
                if not bundle.verify(sig, signed):
                    raise ProtocolError(f"the signature on site {sid!r}'s contribution is invalid")
            entry = {"site_id": sid, "arrays": arrays, "shapes": sh, "signature": sig}
            if isinstance(p.get("tags"), dict):
                entry["tags"] = p["tags"]
            out.append(entry)
        return out

    def _partials(self, task, r, payload, participants, combiner) -> dict[str, dict]:
        """Threshold scheme: t - 1 other share holders among the participants each check the request and
        return their partial decryptions, encrypted to the combining site (the coordinator cannot read them)."""
        need = int(self.keys.threshold) - 1
        holders = [s for s in sorted(participants) if s != combiner and s in self.keys.share_index]
        if len(holders) < need:
            raise FederationError(
                f"round {r} ({task!r}): the threshold key needs {need + 1} share holders among the participants "
                f"{participants}; only {len(holders) + 1} hold shares")
        out: dict[str, dict] = {}
        errors: list[str] = []
        for sid in holders:
            if len(out) == need:
                break
            msg = TaskMessage("partial_decrypt", task, self.study_id, self.journal.session, r, new_nonce(), payload)
            rep = self.transport.send({sid: msg}, self.timeout).get(sid)
            if isinstance(rep, SiteFailure) or rep is None:
                errors.append(f"{sid}: {rep}")
                continue
            rep.check_answers(msg, sid)
            if not rep.ok:
                if rep.error_kind == "disclosure":
                    raise FederationError(f"round {r} ({task!r}): share holder {sid} refused: {rep.error}")
                errors.append(f"{sid}: {rep.error_kind}: {rep.error}")
                continue
            out[sid] = {k: rep.payload.get(k) for k in ("partials", "signature", "index")}
        if len(out) < need:
            raise FederationError(
                f"round {r} ({task!r}): only {len(out)} of the {need} partial decryptions needed besides the "
                "combining site's arrived:\n  " + "\n  ".join(errors))
        return out

    def _decryptors(self, candidates: list[str]) -> list[str]:
        """The decrypting site of a sum over ``candidates``: the first in sorted order, the same site for every
        computation of a federation (the contributors bind it in their signatures and refuse a second
        decrypting site for the same computation)."""
        return sorted(candidates)

    def _reveals(self, task, r, nonce, contributions, participants, digest, decryptor) -> dict[str, dict]:
        """The reveal step (:mod:`ehr_fed.federation.reveal`): every participant gets the signed summaries of all
        contributions and returns its self-mask seed, signed. Without every seed the sum cannot be opened, and
        the sites that revealed refuse this computation over any other participant set."""
        from ehr_fed.federation.reveal import contribution_summary

        entries = [{"site_id": c["site_id"], "summary": contribution_summary(c["arrays"], c["shapes"]),
                    "signature": c["signature"], **({"tags": c["tags"]} if "tags" in c else {})}
                   for c in contributions]
        payload = {"contribution_nonce": nonce, "participants": participants, "params_digest": digest,
                   "decryptor": decryptor, "contributions": entries}
        replies, missing = self._broadcast("reveal", task, r, payload, sites=participants)
        if missing:
            lines = "\n  ".join(f"{s}: {why}" for s, why in sorted(missing.items()))
            raise FederationError(
                f"round {r} ({task!r}): {sorted(missing)} did not reveal their self-mask seeds, so the sum stays "
                f"masked:\n  {lines}\nThe sites that revealed hold this computation complete with {participants}: "
                "it can only be run again over that same set, when every site is back")
        out = {}
        for sid, rep in replies.items():
            seed, sig = rep.payload.get("seed"), rep.payload.get("signature")
            if not isinstance(seed, bytes) or not isinstance(sig, bytes):
                raise ProtocolError(f"the reveal reply of {sid!r} lacks its seed or signature")
            out[sid] = {"seed": seed, "signature": sig}
            if isinstance(rep.payload.get("tags"), dict):
                out[sid]["tags"] = rep.payload["tags"]
        return out

    def _decrypt(self, task, r, nonce, contributions, total, missing, lay, participants, digest, decryptor,
                 params, reveals=None):
        payload = {"contributions": contributions, "contribution_nonce": nonce, "sum": total,
                   "encrypted": self.encrypted, "layout": lay, "participants": participants,
                   "params_digest": digest, "decryptor": decryptor}
        if _needs_params(task):  # the decrypting site releases such sums by their parameters (digest checked)
            payload["params"] = params or {}
        if reveals is not None:
            payload["reveals"] = reveals
        if self.encrypted and self.keys is not None and self.keys.scheme == "threshold":
            payload["partials"] = self._partials(task, r, payload, participants, decryptor)
        msg = TaskMessage("decrypt", task, self.study_id, self.journal.session, r, new_nonce(), payload)
        rep = self.transport.send({decryptor: msg}, self.timeout).get(decryptor)
        if isinstance(rep, SiteFailure) or rep is None:
            raise FederationError(
                f"round {r} ({task!r}): the decrypting site {decryptor} did not answer ({rep}); the contributors "
                "agreed to this site only, so rerun the analysis when it is back")
        rep.check_answers(msg, decryptor)
        if not rep.ok:
            if rep.error_kind == "disclosure":
                raise FederationError(f"round {r} ({task!r}): the decrypting site refused: {rep.error}")
            raise FederationError(f"round {r} ({task!r}): the decrypting site could not decrypt the sum: "
                                  f"{decryptor}: {rep.error_kind}: {rep.error}")
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in rep.payload["arrays"].items()}
        return (arrays, rep.payload.get("suppressed", {}), list(rep.payload.get("contributors", [])),
                rep.payload.get("release"))


def _needs_params(task: str) -> bool:
    """Whether the decrypting site needs a computation's parameters to release it (histograms over requested
    edges); a task registered only at the sites is released without them."""
    try:
        t = get_task(task)
    except UnknownTaskError:
        return False
    return t.edges is not None or t.post_decrypt is not None


def _layout_entry(name: str, spec: Any) -> Any:
    """A checked, message-safe layout entry: ``[bound, max_terms]`` or ``{"widths": ..., "max_terms": T}``."""
    if isinstance(spec, Mapping):
        try:
            max_terms = int(spec["max_terms"])
            widths = [[int(r), [int(w) for w in pattern]] for r, pattern in spec["widths"]]
            he.field_widths({"widths": widths})
        except (KeyError, TypeError, ValueError) as exc:
            raise FederationError(
                f"layout[{name!r}]: an integer-field layout is {{'widths': [[repeat, [width, ...]], ...], "
                f"'max_terms': T}} with widths in [2, 54]: {exc}"
            ) from None
        if max_terms < 1:
            raise FederationError(f"layout[{name!r}]: max_terms must be >= 1, got {max_terms}")
        return {"widths": widths, "max_terms": max_terms}
    try:
        bound, max_terms = spec
        entry = [float(bound), int(max_terms)]
    except (TypeError, ValueError):
        raise FederationError(
            f"layout[{name!r}] = {spec!r}: expected a (bound, max_terms) pair, e.g. (1e6, 3)"
        ) from None
    if not entry[0] > 0 or entry[1] < 1:
        raise FederationError(f"layout[{name!r}]: bound must be > 0 and max_terms >= 1, got {spec!r}")
    return entry


def _study_id(study: Any) -> str:
    if study is None:
        return ""
    if isinstance(study, str):
        return study
    return str(getattr(study, "study_id", "") or "")
