"""Site key material and the key ceremony.

Every site has its own identity: an X25519 key (to receive wrapped secrets) and an Ed25519 key (to sign
its contributions and the key hand-over). In the ceremony one site (the *creator*) generates the Paillier
keypair and hands the Paillier private key to every other site wrapped under that site's X25519 key
(ephemeral X25519 + HKDF-SHA256 + AES-256-GCM) and signed by the creator. The coordinator only relays
public bundles, the Paillier public key and wrapped blobs: :class:`CoordinatorKeys` has no field able to
hold a private key.

Key files are JSON, written with mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()
_WRAP_INFO = b"ehr-fed paillier private key wrap v1"


class KeyCeremonyError(Exception):
    """The key ceremony or a key file failed (bad signature, wrong recipient, mismatched key...)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode())


def fingerprint(data: bytes) -> str:
    """Short hex fingerprint of public key bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SitePublicBundle:
    """What a site publishes: its id, X25519 public key and Ed25519 verify key (raw 32 bytes each)."""

    site_id: str
    kex: bytes
    sign: bytes

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.sign).verify(signature, data)
            return True
        except (InvalidSignature, ValueError):
            return False

    def to_dict(self) -> dict[str, str]:
        return {"site_id": self.site_id, "kex": _b64(self.kex), "sign": _b64(self.sign)}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> SitePublicBundle:
        return cls(site_id=d["site_id"], kex=_unb64(d["kex"]), sign=_unb64(d["sign"]))


@dataclass
class SiteKeys:
    """A site's private key material: identity keys and (after the ceremony) the Paillier keys as bytes."""

    site_id: str
    kex_private: bytes
    sign_private: bytes
    paillier_public: bytes | None = None
    paillier_private: bytes | None = None
    peers: dict[str, SitePublicBundle] = field(default_factory=dict)

    @classmethod
    def generate(cls, site_id: str) -> SiteKeys:
        return cls(
            site_id=site_id,
            kex_private=X25519PrivateKey.generate().private_bytes(_RAW, _RAW_PRIV, _NOENC),
            sign_private=Ed25519PrivateKey.generate().private_bytes(_RAW, _RAW_PRIV, _NOENC),
        )

    def public_bundle(self) -> SitePublicBundle:
        kex = X25519PrivateKey.from_private_bytes(self.kex_private).public_key().public_bytes(_RAW, _RAW_PUB)
        sig = Ed25519PrivateKey.from_private_bytes(self.sign_private).public_key().public_bytes(_RAW, _RAW_PUB)
        return SitePublicBundle(self.site_id, kex, sig)

    def sign(self, data: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.sign_private).sign(data)

    # -- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "kex_private": _b64(self.kex_private),
            "sign_private": _b64(self.sign_private),
            "paillier_public": _b64(self.paillier_public) if self.paillier_public else None,
            "paillier_private": _b64(self.paillier_private) if self.paillier_private else None,
            "peers": {k: v.to_dict() for k, v in self.peers.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiteKeys:
        return cls(
            site_id=d["site_id"],
            kex_private=_unb64(d["kex_private"]),
            sign_private=_unb64(d["sign_private"]),
            paillier_public=_unb64(d["paillier_public"]) if d.get("paillier_public") else None,
            paillier_private=_unb64(d["paillier_private"]) if d.get("paillier_private") else None,
            peers={k: SitePublicBundle.from_dict(v) for k, v in (d.get("peers") or {}).items()},
        )

    def save(self, path: str | Path) -> Path:
        """Write the key file with permissions 0600 (created so, never world-readable)."""
        return write_secret_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SiteKeys:
        path = Path(path)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyCeremonyError(
                f"key file {path} has permissions {oct(mode)}; private key files must be 0600 "
                f"(run: chmod 600 {path})"
            )
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class CoordinatorKeys:
    """Everything the coordinator holds: the Paillier public key and the sites' public bundles."""

    paillier_public: bytes
    sites: dict[str, SitePublicBundle]
    creator: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "paillier_public": _b64(self.paillier_public),
            "creator": self.creator,
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoordinatorKeys:
        return cls(
            paillier_public=_unb64(d["paillier_public"]),
            sites={k: SitePublicBundle.from_dict(v) for k, v in d["sites"].items()},
            creator=d.get("creator", ""),
        )

    def save(self, path: str | Path) -> Path:
        return write_secret_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CoordinatorKeys:
        return cls.from_dict(json.loads(Path(path).read_text()))


def write_secret_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Atomically write JSON to ``path`` with mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
def _wrap_aad(recipient: str, creator: str, pk_fp: str) -> bytes:
    return json.dumps({"to": recipient, "from": creator, "pk": pk_fp}, sort_keys=True).encode()


def wrap_secret(recipient: SitePublicBundle, secret: bytes, aad: bytes) -> bytes:
    """Encrypt ``secret`` for ``recipient``: ephemeral X25519 public (32) || nonce (12) || AES-GCM ct."""
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient.kex))
    eph_pub = eph.public_key().public_bytes(_RAW, _RAW_PUB)
    key = HKDF(hashes.SHA256(), 32, salt=eph_pub + recipient.kex, info=_WRAP_INFO).derive(shared)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, secret, aad)


def unwrap_secret(keys: SiteKeys, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`wrap_secret` with the recipient's private key."""
    if len(blob) < 44 + 16:
        raise KeyCeremonyError(f"wrapped key for {keys.site_id} is truncated ({len(blob)} bytes)")
    eph_pub, nonce, ct = blob[:32], blob[32:44], blob[44:]
    priv = X25519PrivateKey.from_private_bytes(keys.kex_private)
    my_pub = priv.public_key().public_bytes(_RAW, _RAW_PUB)
    shared = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    key = HKDF(hashes.SHA256(), 32, salt=eph_pub + my_pub, info=_WRAP_INFO).derive(shared)
    try:
        return AESGCM(key).decrypt(nonce, ct, aad)
    except InvalidTag:
        raise KeyCeremonyError(
            f"site {keys.site_id} cannot open the wrapped private key: it was not wrapped for this "
            "site's key, or it was altered in transit; rerun the ceremony with this site's current bundle"
        ) from None


@dataclass(frozen=True)
class WrappedKey:
    """The Paillier private key for one recipient, wrapped and signed by the creator."""

    recipient: str
    creator: str
    blob: bytes
    signature: bytes

    def signed_data(self, pk_fp: str) -> bytes:
        return _wrap_aad(self.recipient, self.creator, pk_fp) + self.blob


def create_paillier(creator: SiteKeys, n_length: int, *, allow_insecure: bool = False) -> bytes:
    """The creator site generates the Paillier keypair, keeps it, and returns the public key bytes."""
    from ehr_fed import crypto

    pk, sk = crypto.generate_keypair(n_length, allow_insecure=allow_insecure)
    creator.paillier_public = crypto.public_key_to_bytes(pk)
    creator.paillier_private = crypto.private_key_to_bytes(sk)
    return creator.paillier_public


def wrap_private_key(creator: SiteKeys, recipients: dict[str, SitePublicBundle]) -> dict[str, WrappedKey]:
    """Wrap the creator's Paillier private key for every recipient (never for the coordinator)."""
    if creator.paillier_private is None or creator.paillier_public is None:
        raise KeyCeremonyError(f"site {creator.site_id} holds no Paillier keypair; call create_paillier first")
    pk_fp = fingerprint(creator.paillier_public)
    out = {}
    for sid, bundle in recipients.items():
        if sid == creator.site_id:
            continue
        aad = _wrap_aad(sid, creator.site_id, pk_fp)
        blob = wrap_secret(bundle, creator.paillier_private, aad)
        out[sid] = WrappedKey(sid, creator.site_id, blob, creator.sign(aad + blob))
    return out


def accept_private_key(keys: SiteKeys, wrapped: WrappedKey, creator: SitePublicBundle,
                       paillier_public: bytes) -> None:
    """A recipient checks the creator's signature, unwraps the key and checks it matches the public key."""
    from ehr_fed import crypto

    if wrapped.recipient != keys.site_id:
        raise KeyCeremonyError(f"wrapped key is for {wrapped.recipient!r}, not for {keys.site_id!r}")
    pk_fp = fingerprint(paillier_public)
    if not creator.verify(wrapped.signature, wrapped.signed_data(pk_fp)):
        raise KeyCeremonyError(
            f"the wrapped key for {keys.site_id} is not signed by the creator site {creator.site_id!r}; "
            "do not use it"
        )
    secret = unwrap_secret(keys, wrapped.blob, _wrap_aad(keys.site_id, creator.site_id, pk_fp))
    pk = crypto.public_key_from_bytes(paillier_public)
    sk = _private_from_bytes(secret, pk)
    if crypto.key_fingerprint(sk_public(sk, pk)) != crypto.key_fingerprint(pk):
        raise KeyCeremonyError("the unwrapped private key does not belong to the announced public key")
    keys.paillier_public = paillier_public
    keys.paillier_private = secret


def _private_from_bytes(secret: bytes, pk):
    from ehr_fed import crypto

    try:
        return crypto.private_key_from_bytes(secret, pk)
    except TypeError:
        return crypto.private_key_from_bytes(secret)


def sk_public(sk, pk):
    return getattr(sk, "public_key", pk)


def run_ceremony(
    sites: dict[str, SiteKeys], *, creator: str | None = None, n_length: int = 2048,
    allow_insecure: bool = False, encrypted: bool = True,
) -> CoordinatorKeys:
    """Run the whole ceremony among local :class:`SiteKeys` (notebooks, tests, ``ehr-fed keys ceremony``).

    The messages exchanged are exactly those of a distributed ceremony: public bundles go to everyone,
    the creator's wrapped blobs go through the coordinator (relay) to each recipient. Returns the
    coordinator's keys (public only). With ``encrypted=False`` only identities are exchanged.
    """
    if not sites:
        raise KeyCeremonyError("no sites in the ceremony")
    creator = creator or next(iter(sites))
    if creator not in sites:
        raise KeyCeremonyError(f"creator {creator!r} is not one of the sites {sorted(sites)}")
    bundles = {sid: k.public_bundle() for sid, k in sites.items()}
    for k in sites.values():
        k.peers = dict(bundles)
    pk_bytes = b""
    if encrypted:
        pk_bytes = create_paillier(sites[creator], n_length, allow_insecure=allow_insecure)
        relay = wrap_private_key(sites[creator], bundles)        # what the coordinator relays
        for sid, wrapped in relay.items():
            accept_private_key(sites[sid], wrapped, bundles[creator], pk_bytes)
    return CoordinatorKeys(paillier_public=pk_bytes, sites=bundles, creator=creator)
