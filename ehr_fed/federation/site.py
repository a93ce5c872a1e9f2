"""The site runtime: a hospital's feature table, policy, key material and audit log.

:meth:`SiteNode.handle` takes one :class:`TaskMessage` (or its dict form) and always returns a
:class:`Reply` (errors become ``status="error"`` replies naming the rule or problem). Everything in an
``ok`` reply has passed the site's disclosure checks and is written to its audit log.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehr_fed.federation import he
from ehr_fed.federation.crosssite import CROSS_SITE_TASKS, apply_flags
from ehr_fed.federation.keys import SiteKeys
from ehr_fed.federation.masks import (
    SiteMasker,
    check_participants,
    mask_context,
    pair_tags,
    pairwise_seeds,
    params_digest,
)
from ehr_fed.federation.messages import ProtocolError, Reply, TaskMessage
from ehr_fed.federation.payload import PayloadTypeError, nbytes, validate
from ehr_fed.federation.releases import sign_release
from ehr_fed.federation.signing import contribution_digest
from ehr_fed.federation.state import SiteState
from ehr_fed.federation.tasks import (
    META_COLUMNS,
    SiteContext,
    SiteTask,
    UnknownTaskError,
    get_task,
    registered_tasks,
)
from ehr_fed.privacy import AuditLog, DisclosureError, PrivacyPolicy
from ehr_fed.privacy.cells import protect

log = logging.getLogger(__name__)


class SiteNode:
    """One site.

    Parameters
    ----------
    site_id : str
    table : pandas.DataFrame
        The site's feature table (internals section 3).
    policy : PrivacyPolicy, optional
    keys : SiteKeys, optional
        Identity (signing) keys and, after the ceremony, the Paillier keys. Generated if absent
        (plaintext only).
    study : str
        Study id; messages for another study are refused. ``""`` accepts any.
    audit_log : AuditLog or path, optional
        Defaults to ``policy.audit_log`` or an in-memory log.
    allow_insecure : bool
        Accept a Paillier key below 2048 bits (tests only; also ``EHR_FED_ALLOW_INSECURE_KEYS=1``).
    masks : bool, default True
        Mask contributions pairwise (:mod:`ehr_fed.federation.masks`) and with a self-mask revealed only for an
        attempt the site saw complete (:mod:`ehr_fed.federation.reveal`). ``False`` exists only to measure what
        the masks cost (benchmarks); every site of a federation must then agree, and the decrypting site can
        read each contribution.
    state : SiteState or path, optional
        The site's protocol memory (nonces, rounds, opened sums): a JSON-lines file makes it survive a
        restart (:mod:`ehr_fed.federation.state`); default in memory.
    """

    def __init__(self, site_id: str, table: pd.DataFrame, policy: PrivacyPolicy | None = None,
                 keys: SiteKeys | None = None, *, study: str = "", audit_log: AuditLog | str | Path | None = None,
                 allow_insecure: bool = False, state: SiteState | str | Path | None = None,
                 masks: bool = True):
        self.site_id = site_id
        self.table = table
        self.policy = policy or PrivacyPolicy()
        self.keys = keys or SiteKeys.generate(site_id)
        self.study = study
        if audit_log is None:
            audit_log = self.policy.audit_log
        self.audit = audit_log if isinstance(audit_log, AuditLog) else AuditLog(audit_log)
        self._pk = he.load_public(self.keys.paillier_public, allow_insecure=allow_insecure,
                                  what=f"site {site_id}'s")
        self._sk = he.load_private(self.keys.paillier_private, self._pk)
        self._share = he.load_share(self.keys.paillier_share, self._pk, allow_insecure=allow_insecure)
        self._verification = self._share.verification if self._share is not None else None
        self.state = state if isinstance(state, SiteState) else SiteState(state)
        self.masks = bool(masks)
        registered_tasks()  # the site's task table is loaded once, at start, not inside a timed round

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> SiteNode:
        """Build a site from its site YAML (see :mod:`ehr_fed.federation.config`)."""
        from ehr_fed.federation.config import load_site_config

        return load_site_config(path, **overrides)

    @property
    def holds_private_key(self) -> bool:
        """Whether this site can take part in decryption (the whole key, or a threshold share)."""
        return self._sk is not None or self._share is not None

    # ------------------------------------------------------------------------------------------
    def handle(self, message: TaskMessage | dict[str, Any]) -> Reply:
        """Answer one message; never raises for a bad message or a failing task."""
        try:
            if not isinstance(message, TaskMessage):
                message = TaskMessage.from_dict(message)
        except (ProtocolError, PayloadTypeError) as exc:
            reply = Reply(site_id=self.site_id, action="ping", task="", study="", session="", round=0,
                          nonce="-", status="error", error=f"site {self.site_id}: {exc}", error_kind="protocol")
            try:
                self.audit.record(site_id=self.site_id, task="", action="malformed", round=0, kind="error",
                                  payload={}, nbytes=0, status="error", error_kind="protocol", error=reply.error)
            except Exception:
                log.exception("site %s: could not write the audit entry of a malformed message", self.site_id)
            return reply
        try:
            self._check_fresh(message)
            handler = {"query": self._query, "secure_sum": self._secure_sum, "reveal": self._reveal,
                       "decrypt": self._decrypt,
                       "partial_decrypt": self._partial_decrypt, "ping": self._ping}[message.action]
            return handler(message)
        except DisclosureError as exc:
            kind, err = "disclosure", str(exc)
        except (ProtocolError, PayloadTypeError) as exc:
            kind, err = "protocol", str(exc)
        except UnknownTaskError as exc:
            kind, err = "unknown_task", str(exc)
        except (ValueError, KeyError, TypeError) as exc:  # a failing task: the reason, no traceback
            log.debug("site %s task %s failed\n%s", self.site_id, message.task, traceback.format_exc())
            kind, err = "task_error", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # unexpected: its text may hold data, so only its type leaves the site
            log.warning("site %s task %s failed\n%s", self.site_id, message.task, traceback.format_exc())
            kind, err = "task_error", f"{type(exc).__name__} (details in the site's log)"
        reply = message.reply(self.site_id, status="error", error=f"site {self.site_id}: {err}", error_kind=kind)
        self._audit_error(message, reply)
        return reply

    def _audit_error(self, message: TaskMessage, reply: Reply) -> None:
        """Every reply leaves a line in the audit log, refusals and errors included."""
        try:
            self.audit.record(site_id=self.site_id, task=message.task, action=message.action,
                              round=message.round, kind="error", payload={}, nbytes=len(reply.error),
                              status="error", error_kind=reply.error_kind, error=reply.error,
                              request=_request_digest(message))
        except Exception:  # the audit log must never turn a refusal into a crash
            log.exception("site %s: could not write the audit entry of a refusal", self.site_id)

    def _check_fresh(self, msg: TaskMessage) -> None:
        if self.study and msg.study != self.study:
            raise ProtocolError(f"message is for study {msg.study!r}, this site runs study {self.study!r}")
        problem = self.state.check_fresh(msg.session, msg.round, msg.nonce)
        if problem:
            raise ProtocolError(problem)

    def record_opening(self, study: str, task: str, digest: str, sites) -> None:
        """Refuse to open the computation ``(study, task, digest)`` over a second participant set."""
        prev = self.state.record_opening(f"{study}/{task}/{digest}", sites)
        if prev is not None:
            raise DisclosureError(
                f"site {self.site_id} already decrypted this {task!r} computation over {len(prev)} sites; "
                "opening it over another participant set would reveal the difference",
                rule="differencing", site_id=self.site_id,
            )

    def _context(self, msg: TaskMessage) -> SiteContext:
        return SiteContext(site_id=self.site_id, policy=self.policy, study=msg.study, round=msg.round,
                           n_rows=len(self.table), session=msg.session, peers=self.keys.peers,
                           participants=tuple(msg.payload.get("participants") or ()),
                           state=self.state)

    def _run(self, task: SiteTask, msg: TaskMessage) -> dict[str, Any]:
        from ehr_fed.privacy.budget import charge_release, open_release
        from ehr_fed.privacy.dp import granted

        self.policy.check_task(task.name, self.site_id)
        params = msg.payload.get("params") or {}
        # differential privacy: the site derives its noise from the declared plan and refuses a release over
        # its budget before anything is computed (None: not a private release)
        release = open_release(self, task, msg, params)
        with granted(release):
            if release is None:
                result = task.fn(self.table, params, self._context(msg))
            elif release.fn is not None:  # a private form declared beside the task
                result = release.fn(release.table, params, self._context(msg), release)
            else:
                result = task.fn(release.table, params, self._context(msg))
        if not isinstance(result, dict):
            raise ProtocolError(f"task {task.name!r} returned {type(result).__name__}, expected a dict")
        if release is not None:
            charge_release(self, release, msg)
        return result

    def _check_gradient(self, task: SiteTask, arrays: dict[str, np.ndarray]) -> None:
        if task.kind != "gradient":
            return
        # a model has as many parameters as its gradient has entries (a Hessian of them is d(d+1)/2
        # values, but no more parameters); without a "gradient" output, the longest output counts
        if "gradient" in arrays and np.ndim(arrays["gradient"]) >= 1:
            n_params = int(np.size(arrays["gradient"]))
        else:
            n_params = max((a.shape[0] for a in arrays.values() if a.ndim >= 1), default=0)
        self.policy.check_params(n_params, len(self.table), task.name, self.site_id)

    def _release(self, msg: TaskMessage, kind: str, payload: dict[str, Any], **extra: Any) -> Reply:
        reply = msg.reply(self.site_id, payload)
        self.audit.record(site_id=self.site_id, task=msg.task, action=msg.action, round=msg.round,
                          kind=kind, payload=reply.payload, nbytes=nbytes(reply.payload), status="ok",
                          request=_request_digest(msg), **extra)
        return reply

    # -- actions ---------------------------------------------------------------------------------
    def _ping(self, msg: TaskMessage) -> Reply:
        return self._release(msg, "meta", {
            "site_id": self.site_id,
            "public_key": he.public_fingerprint(self.keys.paillier_public),
            "holds_private_key": self.holds_private_key,
        })

    def _admit(self, task: SiteTask, msg: TaskMessage, mode: str) -> None:
        """The checks every computing request passes first: the task's release mode, the (task, mode)
        allow-list, and parameters that name only study features (never a meta column)."""
        if mode not in task.release:
            raise DisclosureError(
                f"site {self.site_id} refuses {task.name!r} as a {mode} release: its output leaves this site only "
                f"as {' or '.join(task.release)} (rule release_mode)", rule="release_mode", site_id=self.site_id)
        self.policy.check_task(task.name, self.site_id, mode)
        params = msg.payload.get("params") or {}
        if task.params is not None and isinstance(params, dict):
            unknown = sorted(set(params) - set(task.params) - {"dp"})  # "dp": every task's privacy plan
            if unknown:
                raise ProtocolError(f"task {task.name!r} takes the parameters {list(task.params)}, not {unknown}")
        problem = _meta_column_use(params)
        if problem:
            raise DisclosureError(
                f"site {self.site_id} refuses {task.name!r}: {problem} (rule meta_columns)", rule="meta_columns",
                site_id=self.site_id)

    def _query(self, msg: TaskMessage) -> Reply:
        task = get_task(msg.task)
        self._admit(task, msg, "plaintext")
        result = validate(self._run(task, msg), f"[{task.name!r} result]")
        suppressed = self._suppress(task, result, msg.payload.get("params"), [self.site_id], msg.study)
        if task.name in CROSS_SITE_TASKS:  # cells some other member hides are hidden here too
            for name, cells in apply_flags(self, task.name, msg, result).items():
                suppressed[name] = sorted(set(suppressed.get(name, [])) | set(cells))
        arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
        self._check_gradient(task, arrays)
        return self._release(msg, task.kind, {"result": result, "suppressed": suppressed},
                             suppressed=suppressed)

    def _suppress(self, task: SiteTask, result: dict[str, Any], params: dict | None = None,
                  scope: list[str] | None = None, study: str = "") -> dict[str, list[int]]:
        """Suppress small cells of the task's declared count outputs (and their dependents) in place.

        ``params`` and ``scope`` (the sites the result sums over) are needed for histograms over requested
        edges (``task.edges``): their bins are merged against this site's interval ledger of the column."""
        missing = [name for name in (*task.counts, *task.histograms) if name not in result]
        if missing:
            raise ProtocolError(f"task {task.name!r} declares the output(s) {missing} but did not return them")
        over_edges = task.edges is not None
        done = protect(result, task.counts, () if over_edges else task.histograms, self.policy.min_cell_count)
        if over_edges:
            for hname in task.histograms:
                groups, merged = self._merge_intervals(task, np.array(result[hname], dtype=np.float64), params,
                                                       scope, study)
                result[hname] = merged
                if groups:
                    done[hname] = groups
        return done

    def _record_cells(self, task: SiteTask, msg: TaskMessage, digest: str, participants: list[str]) -> None:
        """Refuse to contribute what an earlier computation of this study revealed over another participant set.

        Keys: the task with its parameter digest, and the task's declared cells (one per statistics column, the
        row count): the same column summed over {A, B, C} and then over {B, C} gives site A's cell, whatever the
        two requests were called. A drop-out rerun (same session and round, a new nonce, fewer sites) replaces
        the record of the attempt that did not complete.
        """
        keys = [f"task:{task.name}/{digest}", *task.cell_keys(msg.payload.get("params") or {})]
        sites = sorted(participants)
        new = []
        for key in keys:
            rec = self.state.get_record(f"{msg.study}/cells/{key}")
            if rec is not None and rec["sites"] == sites:
                continue
            new.append(key)
            if rec is None:
                continue
            rerun = (rec.get("session") == msg.session and rec.get("round") == msg.round
                     and set(sites) < set(rec["sites"]))
            if not rerun:
                raise DisclosureError(
                    f"site {self.site_id} already contributed {_cell_name(key)} to this study over "
                    f"{len(rec['sites'])} sites; the same over {len(sites)} sites would reveal the difference "
                    "(rule differencing). Run the analysis over the same sites, or start a new study id in "
                    "every site's config", rule="differencing", site_id=self.site_id)
        for key in new:
            self.state.put_record(f"{msg.study}/cells/{key}",
                                  {"sites": sites, "session": msg.session, "round": int(msg.round)})

    def _merge_intervals(self, task: SiteTask, h: np.ndarray, params: dict | None,
                         scope: list[str] | None, study: str) -> list:
        """Histograms ``(n_groups, n_columns, n_bins)`` over ``params[task.edges]``, merged so that no
        interval between boundaries this site has released for a column (over the same sites) holds
        1 .. min_cell_count-1 rows. Returns ``[merged groups, merged histogram]``."""
        from ehr_fed.privacy.intervals import IntervalLedger, merge_against

        if not isinstance(params, dict) or scope is None:
            raise ProtocolError(f"task {task.name!r}: a histogram over requested edges is released only with its "
                                "parameters and participant set")
        try:
            columns = [str(c) for c in params["columns"]]
            edges = np.asarray(params[task.edges], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"task {task.name!r}: columns and {task.edges!r} are required ({exc})") from None
        if h.ndim != 3 or h.shape[1] != len(columns) or edges.shape != (len(columns), h.shape[2] + 1):
            raise ProtocolError(f"task {task.name!r}: histogram of shape {h.shape} does not match {len(columns)} "
                                f"columns and edges of shape {edges.shape}")
        by = params.get("by") or "all"
        where = f"{study}/intervals/{','.join(sorted(scope))}"
        out, groups = np.empty_like(h), []
        for j, column in enumerate(columns):
            keys = [f"{where}/{column}/all"] + ([f"{where}/{column}/{by}"] if by != "all" else [])
            records = [self.state.get_record(key) for key in keys]
            ledgers = [IntervalLedger.from_dict(rec) if rec else IntervalLedger(n)
                       for rec, n in zip(records, (1, h.shape[0]), strict=False)]
            try:
                out[:, j], merged = merge_against(h[:, j], edges[j], self.policy.min_cell_count, ledgers)
            except ValueError as exc:
                raise DisclosureError(f"site {self.site_id} refuses the histogram of {column!r}: {exc} "
                                      "(rule differencing)", rule="differencing", site_id=self.site_id) from None
            for key, rec, led in zip(keys, records, ledgers, strict=True):
                if led.to_dict() != rec:  # a durable line only when the release showed something new
                    self.state.put_record(key, led.to_dict())
            groups.extend([[g * h.shape[1] + j, *m] for g in range(h.shape[0]) for m in merged])
        return [groups, out]

    def _secure_sum(self, msg: TaskMessage) -> Reply:
        task = get_task(msg.task)
        self._admit(task, msg, "secure_sum")
        layout = msg.payload.get("layout") or {}
        encrypted = bool(msg.payload.get("encrypted", False))
        if encrypted and self._pk is None:
            raise ProtocolError("encrypted secure_sum requested but this site holds no Paillier public key; "
                                "run the key ceremony first")
        if not encrypted and self._pk is not None:
            raise ProtocolError("plaintext secure_sum requested from a site of an encrypted federation; this site "
                                "sends its contributions only encrypted and masked")
        participants = check_participants(msg.payload.get("participants"), self.site_id, self.keys.peers,
                                          self.policy.min_sites)
        digest = params_digest(msg.payload.get("params") or {})
        decryptor = msg.payload.get("decryptor")
        if not isinstance(decryptor, str) or decryptor not in participants:
            raise ProtocolError("secure_sum request names no decrypting site among its participants "
                                "(payload 'decryptor')")
        self_seed = self._self_seed(msg, participants, digest) if encrypted and self.masks else None
        prev = self.state.record_contribution(f"{msg.study}/{msg.task}/{digest}", decryptor)
        if prev is not None:
            raise DisclosureError(
                f"site {self.site_id} contributed to this {task.name!r} computation for the decrypting site "
                f"{prev}; a second decrypting site could open it over another participant set (differencing)",
                rule="differencing", site_id=self.site_id)
        self._record_cells(task, msg, digest, participants)
        masker = None
        if encrypted and self.masks:
            context = mask_context(study=msg.study, session=msg.session, round=msg.round, nonce=msg.nonce,
                                   task=msg.task, participants=participants, digest=digest)
            masker = SiteMasker(pairwise_seeds(self.keys.kex_private, self.site_id, self.keys.peers,
                                               participants, context), self_seed=self_seed)
        result = self._run(task, msg)
        if set(result) != set(layout):
            raise ProtocolError(
                f"task {task.name!r} returned outputs {sorted(result)} but the layout declares {sorted(layout)}"
            )
        arrays, shapes = {}, {}
        plain = {k: np.asarray(v, dtype=np.float64) for k, v in result.items()}
        self._check_gradient(task, plain)
        pk = self._pk if encrypted else None
        for name, a in plain.items():
            if not np.isfinite(a).all():
                raise ProtocolError(f"task {task.name!r} output {name!r} has NaN or infinite values")
            if isinstance(layout[name], dict):
                arrays[name] = self._encrypt_fields(task, name, a, layout[name], pk, masker)
                shapes[name] = list(a.shape)
                continue
            bound, max_terms = layout[name]
            if a.size and np.abs(a).max() > bound:
                raise ProtocolError(
                    f"task {task.name!r} output {name!r}: a value exceeds the layout bound {bound:g}; raise "
                    "the bound in the layout"
                )
            arrays[name] = he.encrypt(pk, a, bound, int(max_terms), masker, name)
            shapes[name] = list(a.shape)
        signed = contribution_digest(study=msg.study, session=msg.session, round=msg.round, nonce=msg.nonce,
                                     task=msg.task, site_id=self.site_id, arrays=arrays, shapes=shapes,
                                     participants=participants, params=digest, decryptor=decryptor)
        if self_seed is not None:
            from ehr_fed.federation.reveal import keep_self_seed

            keep_self_seed(self, msg, self_seed, participants=participants, digest=digest, decryptor=decryptor,
                           signed=signed)
        payload = {"arrays": arrays, "shapes": shapes, "signature": self.keys.sign(signed),
                   "encrypted": encrypted, "masked": masker is not None}
        if self_seed is not None:  # what the other participants check in the reveal step (masks.pair_tag)
            payload["tags"] = pair_tags(self.keys.kex_private, self.site_id, self.keys.peers, participants, signed)
        return self._release(msg, task.kind, payload, encrypted=encrypted, participants=participants)

    def _self_seed(self, msg: TaskMessage, participants: list[str], digest: str) -> bytes:
        """The rerun rule, then a fresh self-mask seed for this attempt (:mod:`ehr_fed.federation.reveal`)."""
        from ehr_fed.federation.reveal import check_rerun, new_self_seed

        check_rerun(self, msg, participants, digest)
        return new_self_seed()

    def _reveal(self, msg: TaskMessage) -> Reply:
        """Reveal this site's self-mask seed of a complete attempt (checks in :func:`reveal.reveal_seed`)."""
        from ehr_fed.federation.reveal import reveal_seed

        task = get_task(msg.task)
        self.policy.check_task(task.name, self.site_id)
        return self._release(msg, f"{task.kind}:self_mask_seed", reveal_seed(self, msg))

    def _encrypt_fields(self, task: SiteTask, name: str, a: np.ndarray, spec: dict, pk, masker):
        from ehr_fed.crypto import EncodingOverflowError

        try:
            widths = he.field_widths(spec)
        except ValueError as exc:
            raise ProtocolError(f"layout of {name!r}: {exc}") from None
        try:
            return he.encrypt_fields(pk, a, widths, int(spec["max_terms"]), masker, name)
        except EncodingOverflowError as exc:
            raise ProtocolError(f"task {task.name!r} output {name!r}: {exc}; widen the layout") from None

    def _partial_decrypt(self, msg: TaskMessage) -> Reply:
        from ehr_fed.federation.decrypt import partial_for_combiner

        task = get_task(msg.task)
        self.policy.check_task(task.name, self.site_id)
        payload = partial_for_combiner(self, msg)
        return self._release(msg, f"{task.kind}:partial_decryption", payload,
                             combiner=msg.payload.get("decryptor"))

    def _decrypt(self, msg: TaskMessage) -> Reply:
        from ehr_fed.federation.decrypt import open_sum

        task = get_task(msg.task)
        self.policy.check_task(task.name, self.site_id)
        result, contributors = open_sum(self, msg)
        if task.post_decrypt is not None:  # the task's release step, on the decrypted aggregate, here
            result = validate(task.post_decrypt(result, _decrypt_params(msg), self._context(msg)),
                              f"[{task.name!r} release]")
        suppressed = self._suppress(task, result, msg.payload.get("params"), contributors, msg.study)
        # the released values, signed: later requests carry them back so every site can replay the protocol
        record = sign_release(self.keys, study=msg.study, session=msg.session, round=msg.round, task=msg.task,
                              params_digest=msg.payload["params_digest"],
                              participants=msg.payload["participants"], arrays=result, suppressed=suppressed)
        return self._release(msg, f"{task.kind}:aggregate",
                             {"arrays": result, "suppressed": suppressed, "contributors": contributors,
                              "release": record},
                             suppressed=suppressed, contributors=contributors)


def _cell_name(key: str) -> str:
    """A readable name of a cell key: ``col:age`` -> "the statistics of 'age'"."""
    if key.startswith("col:"):
        return f"the statistics of {key[4:]!r}"
    return f"the computation {key[5:].split('/')[0]!r}" if key.startswith("task:") else repr(key)


def _decrypt_params(msg: TaskMessage) -> dict[str, Any]:
    """The parameters a decrypt request carries for the task's release step: exactly those every contributor
    computed on (:func:`ehr_fed.federation.decrypt.verified_sum` has checked their digest against the one in
    the signed contributions)."""
    params = msg.payload.get("params")
    if not isinstance(params, dict):
        raise ProtocolError(f"the decrypt request of {msg.task!r} must carry the parameters the contributors "
                            "signed (payload 'params', matching 'params_digest')")
    return params


def _request_digest(msg: TaskMessage) -> str:
    """What an audit line names its request by: a digest of the header and the parameters."""
    from ehr_fed.federation.checkpoint import params_hash

    return params_hash(msg.header(), msg.payload.get("params") or {})


#: parameter keys that name feature-table columns to compute on (at any depth of the parameters)
_COLUMN_KEYS = ("features", "columns", "terms", "feature_names")


def _meta_column_use(params: Any) -> str | None:
    """Why ``params`` misuse a meta column (``None`` if they do not): a record identifier, the index time or the
    outcome named as a feature or statistics column, an outcome other than ``label``, or a grouping by a record
    identifier (grouping by the outcome is Table 1's ``by="label"``)."""
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if key in _COLUMN_KEYS:
            named = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            meta = sorted({c for c in named if isinstance(c, str) and c in META_COLUMNS})
            if meta:
                return f"{key} {meta} are record identifiers or the outcome, never features"
        elif key == "label" and value != "label":
            return f"the outcome is the column 'label', not {value!r}"
        elif key == "by" and value in META_COLUMNS and value != "label":
            return f"grouping by {value!r} would release one group per record"
        elif isinstance(value, dict):
            nested = _meta_column_use(value)
            if nested:
                return nested
    return None
