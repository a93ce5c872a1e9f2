"""Self-masks and the reveal step: drop-out recovery that a coordinator and the decrypting site cannot fake.

Pairwise masks (:mod:`ehr_fed.federation.masks`) cancel only over the exact participant set, and a site that
drops out makes the coordinator run the round again with the survivors. Alone, that lets a coordinator that
colludes with the decrypting site *fake* a drop-out: it lets an attempt over ``P`` complete, claims that
site ``v`` dropped, reruns the same computation over ``P - {v}``, and the difference of the two sums is
``v``'s contribution. Following Bonawitz et al. (CCS 2017, without the Shamir shares), each contribution also
carries a **self-mask** that only its own site can remove, and a site removes it (reveals its seed) only
for an attempt it has seen complete:

1. ``secure_sum``: each site adds, besides its pairwise masks, the residues expanded from a fresh random
   32-byte seed ``b_i`` (:func:`self_residues`, its own label), persists ``b_i`` with what it signed,
   keyed by the attempt (study, session, round, nonce, task), before it replies, and never reuses it.
2. ``reveal``: once the coordinator holds every contribution it sends each participant the list of the signed
   contribution summaries (per output: shape and SHA-256 of the ciphertexts, the site's signature and its
   pairwise tags, :func:`ehr_fed.federation.masks.pair_tag`). A site checks that every other entry was made
   by its contributor (the tag addressed to it, an HMAC under a key only the two sites can derive from their
   pinned X25519 keys, or else the Ed25519 signature), that its own contribution is the one it sent and
   that the list covers exactly the attempt's participant set; then it records durably "computation
   ``X`` (study, task, parameter digest) was complete with ``P``" and returns ``b_i``, signed.
3. ``decrypt`` / ``partial_decrypt``: the decrypting site (and every share holder) checks one signed reveal
   per participant and removes the self-masks from the summed ciphertexts (one multiplication by
   ``1 - B n`` modulo ``n**2`` per ciphertext, :func:`remove_self_masks`) before it decrypts.
4. Rerun rule: a site refuses to contribute to (or reveal for) a computation ``X`` with a participant set
   other than the one it recorded as complete for ``X`` (restart-safe with a state file). A genuine
   drop-out leaves its attempt incomplete: no honest site revealed for it, so its sum stays masked by the
   missing seeds for ever, and the rerun with the survivors goes ahead.

Exchanges of one secure sum with masks on:

============ =============================== ======================================== ===============================================
action       coordinator -> sites            reply                                    the receiving site checks
============ =============================== ======================================== ===============================================
secure_sum   every participant of ``P``      ciphertexts masked pairwise and with     ``P`` (members, ``min_sites``), one decrypting
                                             ``b_i``; signature; a tag per other      site per computation, ``X`` not complete with
                                             participant                              another set
reveal       every participant of ``P``      ``b_i`` and a signature over the         every other entry's tag (or signature), its own
                                             attempt, ``P`` and ``b_i``               entry, the set is exactly ``P``, ``X`` not
                                                                                      complete with another set; then records ``X``
                                                                                      complete with ``P``
decrypt      the decrypting site (and        the released aggregate                   every contribution signature and sum, one signed
             ``partial_decrypt`` share                                                reveal per participant; removes the self-masks
             holders)
============ =============================== ======================================== ===============================================

Refusals are :class:`~ehr_fed.privacy.DisclosureError` with the reason codes of :data:`REASONS`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from ehr_fed.federation.messages import ProtocolError, TaskMessage
from ehr_fed.federation.signing import canonical_json, compact_json, contribution_summary, summary_digest
from ehr_fed.privacy import DisclosureError

__all__ = ["REASONS", "attempt_key", "computation_key", "self_residues", "contribution_summary",
           "summary_digest", "reveal_digest", "check_rerun", "new_self_seed", "keep_self_seed", "reveal_seed",
           "revealed_seeds", "remove_self_masks"]

#: reason codes of the refusals of this module
REASONS = {
    "rerun_after_complete": "contribute to a computation already complete with another participant set",
    "reveal_unknown_attempt": "reveal for an attempt this site did not contribute to",
    "reveal_incomplete_set": "reveal for a list that is not exactly the attempt's participant set",
    "reveal_bad_signature": "reveal for a list with a contribution whose signature does not verify",
    "reveal_own_contribution": "reveal for a list whose entry of this site is not what it sent",
    "reveal_other_set": "reveal for a computation already complete with another participant set",
}

_LABEL = b"ehr-fed self mask v1\x00"
_REVEAL = b"ehr-fed self-mask reveal v1\x00"


def attempt_key(study: str, session: str, round: int, nonce: str, task: str) -> str:
    """The key of one attempt of a secure sum in the site's state (unambiguous JSON)."""
    return compact_json([study, session, int(round), nonce, task])


def computation_key(study: str, task: str, digest: str) -> str:
    """The key of a computation ``X`` whatever its attempts: study, task and parameter digest.

    Session and round are left out on purpose: the same computation run again in a later round or session
    over another participant set would give the same difference as a rerun of the round.
    """
    return compact_json([study, task, digest])


def self_label(name: str) -> bytes:
    """The stream label of the self-mask residues of output ``name``."""
    return _LABEL + name.encode()


def self_residues(seed: bytes, name: str, count: int, n: int) -> list:
    """The self-mask residues (mod ``n``) of output ``name`` from seed ``b_i``, one per ciphertext."""
    from ehr_fed.crypto.masking import expand_residues

    return expand_residues(seed, self_label(name), count, n)


def new_self_seed() -> bytes:
    """A fresh self-mask seed (32 bytes from the operating system's CSPRNG)."""
    return secrets.token_bytes(32)


# -- what is signed ---------------------------------------------------------------------------------------
def reveal_digest(*, study: str, session: str, round: int, nonce: str, task: str, site_id: str,
                  participants: Sequence[str], params: str, decryptor: str, seed: bytes) -> bytes:
    """What a site signs when it reveals its self-mask seed of one attempt."""
    header = {"study": study, "session": session, "round": int(round), "nonce": nonce, "task": task,
              "site_id": site_id, "participants": sorted(participants), "params": params, "decryptor": decryptor}
    return hashlib.sha256(_REVEAL + canonical_json(header).encode() + b"\x00" + bytes(seed)).digest()


# -- the contributing site ----------------------------------------------------------------------------------
def _refuse(site, code: str, text: str) -> DisclosureError:
    return DisclosureError(f"site {site.site_id} refuses to {REASONS[code]}: {text}", rule="differencing",
                           code=code, site_id=site.site_id)


def check_rerun(site, msg: TaskMessage, participants: Sequence[str], digest: str) -> None:
    """The rerun rule: refuse a secure sum of a computation already complete with another participant set."""
    prev = site.state.complete_set(computation_key(msg.study, msg.task, digest))
    if prev is not None and list(prev) != sorted(participants):
        raise _refuse(site, "rerun_after_complete",
                      f"this {msg.task!r} computation was complete with {len(prev)} sites {list(prev)}; a sum over "
                      f"{sorted(participants)} would reveal the difference (a drop-out claimed after the fact)")


def keep_self_seed(site, msg: TaskMessage, seed: bytes, *, participants: Sequence[str], digest: str,
                   decryptor: str, signed: bytes) -> None:
    """Persist the attempt's seed and what the site signed in it (before the reply leaves the site)."""
    site.state.record_self_mask(attempt_key(msg.study, msg.session, msg.round, msg.nonce, msg.task), {
        "seed": bytes(seed).hex(), "participants": sorted(participants), "params": digest,
        "decryptor": decryptor, "digest": bytes(signed).hex()})


def reveal_seed(site, msg: TaskMessage) -> dict[str, Any]:
    """The ``reveal`` action: every check, the durable "complete" record, then the signed seed."""
    p = msg.payload
    nonce, entries = p.get("contribution_nonce"), p.get("contributions")
    if not isinstance(nonce, str) or not isinstance(entries, list):
        raise ProtocolError("reveal request needs 'contribution_nonce' (str) and 'contributions' (a list of "
                            "{site_id, summary, signature})")
    mine = site.state.self_mask(attempt_key(msg.study, msg.session, msg.round, nonce, msg.task))
    if mine is None:
        raise _refuse(site, "reveal_unknown_attempt", f"no contribution of this site to {msg.task!r} round "
                      f"{msg.round} with that nonce")
    participants, digest, decryptor = mine["participants"], mine["params"], mine["decryptor"]
    signed = _verified_entries(site, msg, nonce, entries, participants, digest, decryptor)
    if sorted(signed) != participants:
        raise _refuse(site, "reveal_incomplete_set",
                      f"the list holds contributions of {sorted(signed)}, the attempt's participants are "
                      f"{participants}")
    if signed[site.site_id].hex() != mine["digest"]:
        raise _refuse(site, "reveal_own_contribution", "the list's entry of this site differs from its contribution")
    prev = site.state.record_complete(computation_key(msg.study, msg.task, digest), participants)
    if prev is not None:
        raise _refuse(site, "reveal_other_set", f"this {msg.task!r} computation was complete with {list(prev)}")
    seed = bytes.fromhex(mine["seed"])
    statement = reveal_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce, task=msg.task,
                              site_id=site.site_id, participants=participants, params=digest, decryptor=decryptor,
                              seed=seed)
    from ehr_fed.federation.masks import pair_tags

    # the signature for anyone; a tag for each other participant (the decrypting site and share holders check
    # theirs, one HMAC instead of a signature verification)
    return {"seed": seed, "signature": site.keys.sign(statement),
            "tags": pair_tags(site.keys.kex_private, site.site_id, site.keys.peers, participants, statement)}


def _verified_entries(site, msg, nonce, entries, participants, digest, decryptor) -> dict[str, bytes]:
    """``{site_id: signed digest}`` of the reveal list, every signature checked against the pinned keys."""
    out: dict[str, bytes] = {}
    for entry in entries:
        sid = entry.get("site_id") if isinstance(entry, dict) else None
        if not isinstance(sid, str) or sid in out:
            raise _refuse(site, "reveal_incomplete_set", f"the list names a site twice or not at all ({sid!r})")
        bundle = site.keys.peers.get(sid)
        if bundle is None:
            raise _refuse(site, "reveal_incomplete_set", f"{sid!r} is not a member of this site's key ceremony")
        summary, signature = entry.get("summary"), entry.get("signature")
        try:
            statement = summary_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce,
                                       task=msg.task, site_id=sid, summary=summary, participants=participants,
                                       params=digest, decryptor=decryptor)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _refuse(site, "reveal_bad_signature", f"the entry of {sid!r} is not a contribution summary") from None
        if sid != site.site_id and not _authentic(site, sid, bundle, entry, signature, statement):
            raise _refuse(site, "reveal_bad_signature",
                          f"the signature of {sid!r} does not match a contribution to this attempt")
        out[sid] = statement  # this site's own entry is compared with what it signed (reveal_own_contribution)
    return out


def _authentic(site, sid: str, bundle, entry: dict, signature: Any, statement: bytes) -> bool:
    """Whether ``sid`` made the contribution statement: the pairwise tag it addressed to this site (one HMAC
    under a key only the two sites derive, :func:`ehr_fed.federation.masks.pair_tag`), or else its signature."""
    from ehr_fed.federation.masks import pair_tag

    tags = entry.get("tags")
    tag = tags.get(site.site_id) if isinstance(tags, dict) else None
    if isinstance(tag, bytes) and getattr(bundle, "kex", None):
        expected = pair_tag(site.keys.kex_private, site.site_id, sid, bundle.kex, statement)
        if hmac.compare_digest(tag, expected):
            return True
    return isinstance(signature, bytes) and bundle.verify(signature, statement)


# -- the decrypting site and the share holders --------------------------------------------------------------
def revealed_seeds(site, msg: TaskMessage, *, nonce: str, participants: Sequence[str], digest: str,
                   decryptor: str) -> dict[str, bytes]:
    """The self-mask seeds of a decrypt request: one signed reveal per participant, nothing else."""
    reveals = msg.payload.get("reveals")
    if not isinstance(reveals, dict):
        raise ProtocolError("decrypt request carries no revealed self-mask seeds (payload 'reveals'); the sum "
                            "stays masked until every participant has revealed its seed")
    extra = sorted(set(reveals) - set(participants))
    missing = sorted(set(participants) - set(reveals))
    if extra or missing:
        raise ProtocolError(f"decrypt request: reveals of {sorted(reveals)} for the participants "
                            f"{sorted(participants)} (missing {missing}, not participants {extra}); refusing")
    seeds = {}
    for sid in sorted(participants):
        entry, bundle = reveals[sid], site.keys.peers.get(sid)
        seed = entry.get("seed") if isinstance(entry, dict) else None
        signature = entry.get("signature") if isinstance(entry, dict) else None
        if bundle is None or not isinstance(seed, bytes) or len(seed) != 32 or not isinstance(signature, bytes):
            raise ProtocolError(f"the reveal of {sid!r} is malformed (a 32-byte seed and a signature)")
        statement = reveal_digest(study=msg.study, session=msg.session, round=msg.round, nonce=nonce,
                                  task=msg.task, site_id=sid, participants=participants, params=digest,
                                  decryptor=decryptor, seed=seed)
        kept = _own_seed(site, msg, nonce) if sid == site.site_id else None
        if kept is not None and seed != kept:
            raise ProtocolError("the revealed self-mask seed of this site is not the one it kept for this attempt; "
                                "refusing to decrypt")
        if kept is None and not _authentic(site, sid, bundle, entry, signature, statement):
            raise ProtocolError(f"the revealed self-mask seed of {sid!r} is not signed by {sid!r} for this attempt; "
                                "refusing to decrypt")
        seeds[sid] = seed
    return seeds


def _own_seed(site, msg: TaskMessage, nonce: str) -> bytes | None:
    """The self-mask seed this site kept for an attempt (None when it kept none)."""
    mine = site.state.self_mask(attempt_key(msg.study, msg.session, msg.round, nonce, msg.task))
    return None if mine is None else bytes.fromhex(mine["seed"])


def remove_self_masks(pk, sums: Mapping[str, bytes], seeds: Mapping[str, bytes]) -> dict[str, bytes]:
    """The summed ciphertexts without the participants' self-masks: ``c (1 - B n) mod n**2`` per ciphertext,
    ``B`` the sum of every seed's residue for that ciphertext."""
    from ehr_fed.crypto import EncryptedVector
    from ehr_fed.crypto.masking import mask_vector, sum_residues

    n = int(pk.n)
    out = {}
    for name, blob in sums.items():
        ev = EncryptedVector.from_bytes(pk, blob)
        label = self_label(name)
        # minus the sum of every seed's residues, mod n, in one pass
        minus = sum_residues([(-1, seed, label) for seed in seeds.values()], label, ev.layout.n_ciphertexts, n)
        out[name] = mask_vector(ev, minus).to_bytes()
    return out
