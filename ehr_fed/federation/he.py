"""The bridge to :mod:`ehr_fed.crypto` used by sites and coordinator (federation never imports phe).

Contributions are either ciphertext bytes (encrypted mode) or float64 arrays (plaintext mode, for tests
and parity); these helpers treat both the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def load_public(pk_bytes: bytes | None, *, allow_insecure: bool = False, what: str = "the federation's"):
    """The Paillier public key from its bytes; below 2048 bits only in an explicit test mode."""
    if not pk_bytes:
        return None
    from ehr_fed import crypto

    pk = crypto.public_key_from_bytes(pk_bytes)
    crypto.check_key_size(pk.n, allow_insecure=allow_insecure, what=f"{what} Paillier key")
    return pk


def load_private(sk_bytes: bytes | None, pk):
    if not sk_bytes:
        return None
    from ehr_fed.federation.keys import _private_from_bytes

    return _private_from_bytes(sk_bytes, pk)


def encrypt(pk, values: np.ndarray, bound: float, max_terms: int, masker=None, name: str = "") -> bytes | np.ndarray:
    """Encrypt a flat float vector (or return it as float64 when ``pk`` is None).

    ``masker`` (a :class:`ehr_fed.federation.masks.SiteMasker`) adds the site's pairwise masks of output
    ``name`` to every packed plaintext before it is encrypted (one addition mod ``n`` per ciphertext), so no
    unmasked ciphertext of the contribution is ever computed.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if pk is None:
        return values
    from ehr_fed import crypto

    return crypto.encrypt_vector(pk, values, bound=bound, max_terms=max_terms,
                                 masks=_masks(masker, name, pk.n)).to_bytes()


def _masks(masker, name: str, n: int):
    """The ``masks`` argument of the crypto encryptions: ``count -> masker's residues of output name``."""
    if masker is None:
        return None
    return lambda count: _mask_residues(masker, name, count, n)


def _mask_residues(masker, name: str, count: int, n: int) -> list:
    """The summed pairwise mask residues (mod ``n``) of the ``count`` plaintexts of output ``name``."""
    residues = masker.residues(name, count, n)
    if len(residues) != count:
        raise ValueError(f"the masker gave {len(residues)} residues for the {count} ciphertexts of {name!r}")
    return residues


def field_widths(spec: Any) -> np.ndarray:
    """Widths of an integer-field layout ``{"widths": [[repeat, [w, ...]], ...], "max_terms": T}``."""
    from ehr_fed.crypto.fields import expand_segments

    return expand_segments(spec["widths"])


def encrypt_fields(pk, values: np.ndarray, widths: np.ndarray, max_terms: int, masker=None,
                   name: str = "") -> bytes | np.ndarray:
    """Encrypt exact integer fields packed bit-tight (or return them as float64 when ``pk`` is None).

    Either way the values are checked against the widths first (``EncodingOverflowError``). ``masker``
    and ``name``: as in :func:`encrypt`.
    """
    from ehr_fed.crypto.fields import check_fields

    if pk is None:
        return check_fields(values, widths).astype(np.float64)
    from ehr_fed.crypto.fields import encrypt_fields as _encrypt

    return _encrypt(pk, values, widths, max_terms=max_terms, masks=_masks(masker, name, pk.n)).to_bytes()


def decrypt_fields(sk, pk, total: Any, widths: np.ndarray) -> np.ndarray:
    if pk is None:
        return np.asarray(total, dtype=np.float64)
    from ehr_fed import crypto
    from ehr_fed.crypto.fields import decrypt_fields as _decrypt

    ev = crypto.EncryptedVector.from_bytes(pk, total)
    return _decrypt(sk, ev, widths).astype(np.float64)


def add(pk, parts: list[Any]) -> bytes | np.ndarray:
    """Sum of contributions (ciphertexts added homomorphically, or arrays added)."""
    if pk is None:
        return np.sum(np.stack([np.asarray(p, dtype=np.float64) for p in parts]), axis=0)
    from ehr_fed import crypto

    evs = [crypto.EncryptedVector.from_bytes(pk, p) for p in parts]
    return sum(evs[1:], evs[0]).to_bytes()


def decrypt(sk, pk, total: Any) -> np.ndarray:
    if pk is None:
        return np.asarray(total, dtype=np.float64)
    from ehr_fed import crypto

    ev = crypto.EncryptedVector.from_bytes(pk, total)
    return np.asarray(crypto.decrypt_vector(sk, ev), dtype=np.float64)


def public_fingerprint(pk_bytes: bytes | None) -> str:
    if not pk_bytes:
        return ""
    from ehr_fed.federation.keys import fingerprint

    return fingerprint(pk_bytes)


# -- threshold decryption ------------------------------------------------------------------------------------
def load_share(share_bytes: bytes | None, pk, *, allow_insecure: bool = False):
    """A site's threshold key share (checked against the federation's public key), or None."""
    if not share_bytes:
        return None
    from ehr_fed.crypto import ThresholdKeyShare
    from ehr_fed.crypto.keys import insecure_keys_allowed

    return ThresholdKeyShare.from_bytes(share_bytes, pk, allow_insecure=insecure_keys_allowed(allow_insecure))


def partial(share, pk, total: Any) -> tuple[list[int], bytes]:
    """This share's partial decryptions of a summed vector and the proof that they are correct."""
    from ehr_fed import crypto

    ev = crypto.EncryptedVector.from_bytes(pk, total)
    parts = crypto.partial_decrypt(share, ev)
    return parts, crypto.prove_partial(share, ev, parts).to_bytes()


def combine_decode(pk, total: Any, partials: dict[int, list[int]], proofs: dict[int, bytes], verification,
                   spec: Any) -> np.ndarray:
    """Check every share's proof, combine the partial decryptions of ``total`` and decode them
    (float layout ``[bound, max_terms]`` or integer fields ``{"widths": ..., "max_terms": T}``)."""
    from ehr_fed import crypto
    from ehr_fed.crypto.fields import decode_fields

    ev = crypto.EncryptedVector.from_bytes(pk, total)
    plain = crypto.combine_partials(
        pk, partials, verification.threshold, verification.n_shares, ciphertexts=ev, verification=verification,
        proofs={i: crypto.PartialProof.from_bytes(p) for i, p in proofs.items()})
    if isinstance(spec, dict):
        return decode_fields(ev, plain, field_widths(spec)).astype(np.float64)
    return np.asarray(crypto.decode_vector(ev, plain), dtype=np.float64)
