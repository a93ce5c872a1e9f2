"""Pairwise masks of secure-sum contributions (Bonawitz et al., CCS 2017, without the recovery round).

For one secure sum over the participant set ``P`` every pair of sites ``i < j`` in ``P`` shares a seed

    s_ij = HKDF-SHA256(X25519(i, j), salt = "ehr-fed pairwise mask v1", info = context || i || j)

from the two sites' own X25519 identity keys (the coordinator never sees a private key, so it cannot
compute a seed). The context binds the study, session, round, nonce (fresh for every attempt), task, a digest
of the parameters, and the exact sorted participant set. For each output and ciphertext index the seed is expanded into a
residue modulo ``n`` (:func:`ehr_fed.crypto.masking.expand_residues`); site ``i`` adds the residues of every
``j > i`` and subtracts those of every ``j < i``. Over exactly ``P`` the masks cancel modulo ``n`` and the
decrypted sum is bit-identical to the unmasked one; one site's ciphertext, or the sum of any proper subset of
``P``, decrypts to a uniformly random residue (it still carries the masks shared with the missing sites).

A site that drops out leaves masks that cannot be removed: the coordinator runs the round again with the
survivors (a new nonce, so new seeds and new masks), and no subset sum is ever unmasked. Each contribution
also carries a *self-mask* from a fresh random seed of its own site, revealed only for an attempt the site
has seen complete (:mod:`ehr_fed.federation.reveal`), so a drop-out claimed after an attempt completed
cannot be turned into a second, smaller sum of the same computation.

Cost per secure sum at a site of ``|P|`` participants: ``|P| - 1`` HKDF expansions, one HMAC each (the
X25519 agreement of a pair and its HKDF-Extract are computed once per process and reused; each sum's seed
has its own HKDF context), one stream expansion (SHAKE-256 or ChaCha20) of ``bytes(n) + 16`` bytes per
ciphertext and peer, and one addition modulo ``n`` per plaintext, before encryption. For the federation that is ``|P| (|P| - 1) / 2`` pairwise seeds per round.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ehr_fed.federation.messages import ProtocolError
from ehr_fed.federation.signing import canonical_compact_json

_SALT = b"ehr-fed pairwise mask v1"
_TAG_SALT = b"ehr-fed contribution tag v1"


def params_digest(params: Any) -> str:
    """Hex SHA-256 of a computation's parameters (canonical form of the typed payload).

    Together with the study and the task it names *what* is computed, whatever the encoding (the layout,
    which depends on the number of sites, is left out): the key of the sites' differencing records.
    """
    from ehr_fed.federation.checkpoint import params_hash

    return params_hash("computation", params)


def mask_context(*, study: str, session: str, round: int, nonce: str, task: str, participants: Sequence[str],
                 digest: str) -> bytes:
    """The bytes every participant binds its pairwise seeds to (identical at every site of one sum)."""
    return canonical_compact_json({"v": 1, "study": study, "session": session, "round": int(round),
                                   "nonce": nonce, "task": task, "participants": sorted(participants),
                                   "params": digest}).encode()


def check_participants(participants: Any, site_id: str, peers: dict, min_sites: int) -> list[str]:
    """The participant list of a secure-sum request, checked by a contributing site.

    It must be a list of distinct known site ids that includes this site and has at least the site's own
    ``min_sites`` members (fewer would leave this site's share barely masked).
    """
    if not isinstance(participants, list) or not all(isinstance(p, str) and p for p in participants):
        raise ProtocolError("secure_sum request carries no valid participant list (a list of site ids)")
    if len(set(participants)) != len(participants):
        raise ProtocolError(f"secure_sum participant list repeats a site: {participants}")
    if site_id not in participants:
        raise ProtocolError(f"secure_sum participant list {participants} does not include this site {site_id!r}")
    # a site without a ceremony (plaintext federations of tests) knows no members to check against
    unknown = sorted(set(participants) - set(peers)) if peers else []
    if unknown:
        raise ProtocolError(f"secure_sum participants {unknown} are not members of this site's key ceremony")
    if len(participants) < min_sites:
        from ehr_fed.privacy import DisclosureError

        raise DisclosureError(
            f"site {site_id} refuses to contribute to a sum over {len(participants)} site(s); its policy "
            f"requires min_sites={min_sites}", rule="min_sites", site_id=site_id)
    return sorted(participants)


@functools.lru_cache(maxsize=4096)
def _agreement(kex_private: bytes, peer_kex: bytes) -> bytes:
    """The X25519 shared secret of this site's key and a peer's public key (the same for every sum between
    the two, so it is computed once per pair and process; every seed and tag key derives from it with its
    own HKDF context)."""
    return X25519PrivateKey.from_private_bytes(kex_private).exchange(X25519PublicKey.from_public_bytes(peer_kex))


def _hkdf_extract(salt: bytes, key_material: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 section 2.2): the pseudo-random key of ``key_material``."""
    return hmac.digest(salt, key_material, "sha256")


def _hkdf_expand32(prk: bytes, info: bytes) -> bytes:
    """HKDF-Expand with SHA-256 to 32 bytes (RFC 5869 section 2.3, one block: ``HMAC(prk, info || 0x01)``)."""
    return hmac.digest(prk, info + b"\x01", "sha256")


@functools.lru_cache(maxsize=4096)
def _seed_prk(kex_private: bytes, peer_kex: bytes) -> bytes:
    """The HKDF pseudo-random key of a pair's seeds (salt and shared secret are the same for every sum
    between the two sites, so HKDF-Extract runs once per pair and process; each seed's expansion has its own
    context)."""
    return _hkdf_extract(_SALT, _agreement(kex_private, peer_kex))


def pairwise_seeds(kex_private: bytes, site_id: str, peers: dict, participants: Sequence[str],
                   context: bytes) -> list[tuple[int, bytes]]:
    """``[(sign, seed), ...]`` for every other participant: ``+1`` for peers after this site, ``-1`` before.

    Each seed is ``HKDF-SHA256(X25519(i, j), salt, info)`` to 32 bytes, computed as its two HMACs
    (bit-identical to a general HKDF implementation, without building one per seed).
    """
    out = []
    kex_private = bytes(kex_private)
    for other in sorted(participants):
        if other == site_id:
            continue
        prk = _seed_prk(kex_private, bytes(peers[other].kex))
        lo, hi = sorted((site_id, other))
        info = hashlib.sha256(context + b"\x00" + lo.encode() + b"\x00" + hi.encode()).digest()
        out.append((1 if site_id < other else -1, _hkdf_expand32(prk, info)))
    return out


@functools.lru_cache(maxsize=4096)
def _tag_key(kex_private: bytes, peer_kex: bytes, lo: str, hi: str) -> bytes:
    """HKDF-SHA256 of the pair's X25519 secret under the tag salt and label (computed once per pair)."""
    info = b"ehr-fed contribution tag v1\x00" + lo.encode() + b"\x00" + hi.encode()
    return _hkdf_expand32(_hkdf_extract(_TAG_SALT, _agreement(kex_private, peer_kex)), info)


def pair_tag(kex_private: bytes, site_id: str, peer_id: str, peer_kex: bytes, statement: bytes) -> bytes:
    """HMAC-SHA256 of ``statement`` under the key only ``site_id`` and ``peer_id`` can derive.

    A contributor tags its signed contribution statement once for every other participant; in the reveal
    step each participant checks the tags addressed to it (one HMAC per entry) instead of every other
    contributor's Ed25519 signature. For that check a tag is as good as the signature: the key is derived from
    the two sites' own X25519 keys, so apart from the receiving site itself only the contributor can produce
    it (neither the coordinator nor a third member can). The signatures stay for the decrypting site and the
    coordinator, which must prove to others what they opened.
    """
    lo, hi = sorted((site_id, peer_id))
    return hmac.digest(_tag_key(bytes(kex_private), bytes(peer_kex), lo, hi), statement, "sha256")


def pair_tags(kex_private: bytes, site_id: str, peers: dict, participants: Sequence[str],
              statement: bytes) -> dict[str, bytes]:
    """``{peer: pair_tag(...)}`` for every other participant of a contribution."""
    return {other: pair_tag(kex_private, site_id, other, peers[other].kex, statement)
            for other in sorted(participants) if other != site_id}


class SiteMasker:
    """The masks one site adds to its contributions to one secure sum.

    ``seeds`` are the pairwise ``(sign, seed)`` pairs; ``self_seed`` (optional) the site's own self-mask seed
    of this attempt (:func:`ehr_fed.federation.reveal.self_residues`), added on top.
    """

    def __init__(self, seeds: list[tuple[int, bytes]], self_seed: bytes | None = None):
        self.seeds = seeds
        self.self_seed = self_seed

    def residues(self, name: str, count: int, n: int) -> list:
        """The summed mask residues (mod ``n``) for the ``count`` ciphertexts of output ``name``."""
        from ehr_fed.crypto.masking import sum_residues

        # one pass: sum_j sign_j * expand_residues(seed_j, name, count, n) (+ the self-mask stream), reduced
        # once per index
        streams = list(self.seeds)
        if self.self_seed is not None:
            from ehr_fed.federation.reveal import self_label

            streams.append((1, self.self_seed, self_label(name)))
        return sum_residues(streams, name.encode(), count, n)
