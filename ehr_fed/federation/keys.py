"""Site key material and the key ceremony.

Every site generates its own identity where it runs (``ehr-fed keys init``): an X25519 key (pairwise mask
seeds, receiving wrapped secrets) and an Ed25519 key (signing its contributions and the key hand-over). It
publishes only its public bundle, whose short fingerprint (:meth:`SitePublicBundle.fingerprint`) the
hospitals' administrators exchange out of band; every site pins the fingerprints of the other members
(:meth:`SiteKeys.pin`) and the ceremony refuses any bundle whose fingerprint is not pinned, so a relaying
coordinator cannot substitute its own.

In the ceremony one site (the *creator*) generates the Paillier key. Two schemes (``scheme``):

``single``     the creator keeps the private key and hands it to every other site, wrapped under that site's
               X25519 key (ephemeral X25519 + HKDF-SHA256 + AES-256-GCM) and signed by the creator: any
               site can decrypt a (masked) sum.
``threshold``  the creator deals t-of-n shares (:mod:`ehr_fed.crypto.threshold`, safe primes) and hands
               share i to site i the same way; it keeps only its own share. No site holds p, q or lambda
               after the ceremony; t sites must each agree (and check) before a sum is opened.

The coordinator only relays public bundles, the Paillier public key and wrapped blobs:
:class:`CoordinatorKeys` has no field able to hold a private key.

Key files are JSON, written with mode 0600; the private part is encrypted at rest (scrypt + AES-256-GCM)
under a passphrase the site supplies (``EHR_FED_KEY_PASSPHRASE`` or ``EHR_FED_KEY_PASSPHRASE_FILE``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
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
@functools.lru_cache(maxsize=1024)
def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    """A verification key object (parsed once per key and process: every message signature is checked)."""
    return Ed25519PublicKey.from_public_bytes(raw)


@functools.lru_cache(maxsize=64)
def _ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    """A signing key object (parsed once per key and process)."""
    return Ed25519PrivateKey.from_private_bytes(raw)


@dataclass(frozen=True)
class SitePublicBundle:
    """What a site publishes: its id, X25519 public key and Ed25519 verify key (raw 32 bytes each)."""

    site_id: str
    kex: bytes
    sign: bytes

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            _ed25519_public(bytes(self.sign)).verify(signature, data)
            return True
        except (InvalidSignature, ValueError):
            return False

    def fingerprint(self) -> str:
        """Short fingerprint of the whole bundle (site id and both keys), ``xxxx-xxxx-xxxx-xxxx-xxxx``:
        what administrators compare out of band (80 bits)."""
        digest = hashlib.sha256(b"ehr-fed site bundle v1\x00" + self.site_id.encode() + b"\x00"
                                + self.kex + self.sign).hexdigest()[:20]
        return "-".join(digest[i:i + 4] for i in range(0, 20, 4))

    def to_dict(self) -> dict[str, str]:
        return {"site_id": self.site_id, "kex": _b64(self.kex), "sign": _b64(self.sign),
                "fingerprint": self.fingerprint()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> SitePublicBundle:
        try:
            bundle = cls(site_id=d["site_id"], kex=_unb64(d["kex"]), sign=_unb64(d["sign"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyCeremonyError(f"not a site public bundle: {exc}") from None
        if len(bundle.kex) != 32 or len(bundle.sign) != 32:
            raise KeyCeremonyError(f"the public bundle of {bundle.site_id!r} does not hold two 32-byte keys")
        return bundle


@dataclass
class SiteKeys:
    """A site's private key material: identity keys, pinned peers and (after the ceremony) its Paillier
    key material as bytes: the whole private key (``single`` scheme) or its own key share (``threshold``)."""

    site_id: str
    kex_private: bytes
    sign_private: bytes
    paillier_public: bytes | None = None
    paillier_private: bytes | None = None
    peers: dict[str, SitePublicBundle] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)
    paillier_share: bytes | None = None
    verification: bytes | None = None
    scheme: str = "single"

    @classmethod
    def generate(cls, site_id: str) -> SiteKeys:
        if not isinstance(site_id, str) or not site_id:
            raise KeyCeremonyError("a site id is a non-empty string")
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
        return _ed25519_private(bytes(self.sign_private)).sign(data)

    # -- pinning ---------------------------------------------------------------------------------
    def pin(self, site_id: str, fingerprint: str) -> None:
        """Pin the fingerprint of another member's bundle (as its administrator read it out of band)."""
        fp = normalize_fingerprint(fingerprint)
        self.pinned[site_id] = fp

    def accept_bundle(self, bundle: SitePublicBundle) -> None:
        """Add a member's bundle if its fingerprint is the pinned one; else :class:`KeyCeremonyError`."""
        if bundle.site_id == self.site_id:
            if bundle != self.public_bundle():
                raise KeyCeremonyError(
                    f"a bundle claims to be this site {self.site_id!r} but holds other keys; refused")
            self.peers[bundle.site_id] = bundle
            return
        want = self.pinned.get(bundle.site_id)
        if want is None:
            raise KeyCeremonyError(
                f"site {self.site_id} has no pinned fingerprint for {bundle.site_id!r}; refusing its bundle "
                f"(fingerprint {bundle.fingerprint()}). Compare it with {bundle.site_id}'s administrator out of "
                f"band, then: ehr-fed keys pin --keys <this site's key file> --peer {bundle.site_id}=<fingerprint>")
        if want != bundle.fingerprint():
            raise KeyCeremonyError(
                f"the bundle offered for {bundle.site_id!r} has fingerprint {bundle.fingerprint()}, but site "
                f"{self.site_id} pinned {want}: it was substituted on the way (or the site made new keys); "
                "refused. Check the fingerprint with that site's administrator")
        self.peers[bundle.site_id] = bundle

    # -- files ----------------------------------------------------------------------------
    def _secret_dict(self) -> dict[str, Any]:
        return {
            "kex_private": _b64(self.kex_private),
            "sign_private": _b64(self.sign_private),
            "paillier_private": _b64(self.paillier_private) if self.paillier_private else None,
            "paillier_share": _b64(self.paillier_share) if self.paillier_share else None,
        }

    def _public_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "scheme": self.scheme,
            "fingerprint": self.public_bundle().fingerprint(),
            "paillier_public": _b64(self.paillier_public) if self.paillier_public else None,
            "verification": _b64(self.verification) if self.verification else None,
            "peers": {k: v.to_dict() for k, v in self.peers.items()},
            "pinned": dict(self.pinned),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self._public_dict(), **self._secret_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiteKeys:
        try:
            return cls(
                site_id=d["site_id"],
                kex_private=_unb64(d["kex_private"]),
                sign_private=_unb64(d["sign_private"]),
                paillier_public=_unb64(d["paillier_public"]) if d.get("paillier_public") else None,
                paillier_private=_unb64(d["paillier_private"]) if d.get("paillier_private") else None,
                peers={k: SitePublicBundle.from_dict(v) for k, v in (d.get("peers") or {}).items()},
                pinned=dict(d.get("pinned") or {}),
                paillier_share=_unb64(d["paillier_share"]) if d.get("paillier_share") else None,
                verification=_unb64(d["verification"]) if d.get("verification") else None,
                scheme=d.get("scheme") or "single",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyCeremonyError(f"not a site key file: {type(exc).__name__}: {exc}") from None

    def save(self, path: str | Path, passphrase: str | bytes | None = None, *,
             allow_unencrypted: bool = False) -> Path:
        """Write the key file with permissions 0600, the private part encrypted under ``passphrase``
        (default: ``$EHR_FED_KEY_PASSPHRASE`` or the file named by ``$EHR_FED_KEY_PASSPHRASE_FILE``).

        Without a passphrase the file is refused, unless ``allow_unencrypted=True`` or the explicit test mode
        (``EHR_FED_ALLOW_INSECURE_KEYS=1``).
        """
        secret = passphrase if passphrase is not None else passphrase_from_env()
        if secret is None:
            from ehr_fed.crypto.keys import insecure_keys_allowed

            if not (allow_unencrypted or insecure_keys_allowed()):
                raise KeyCeremonyError(
                    f"refusing to write the private keys of {self.site_id} unencrypted to {path}: set "
                    f"{PASSPHRASE_ENV} (or {PASSPHRASE_FILE_ENV}=<file holding it>), or pass --passphrase-file")
            return write_secret_json(path, self.to_dict())
        return write_secret_json(path, {**self._public_dict(),
                                        "encrypted": seal(json.dumps(self._secret_dict()).encode(), secret,
                                                          aad=self.site_id.encode())})

    @classmethod
    def load(cls, path: str | Path, passphrase: str | bytes | None = None) -> SiteKeys:
        path = Path(path)
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            raise KeyCeremonyError(f"key file {path} does not exist; create it with `ehr-fed keys init`") from None
        if mode & 0o077:
            raise KeyCeremonyError(
                f"key file {path} has permissions {oct(mode)}; private key files must be 0600 "
                f"(run: chmod 600 {path})"
            )
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyCeremonyError(f"key file {path} is not valid JSON ({exc}); restore it from backup") from None
        if not isinstance(data, dict) or "site_id" not in data:
            raise KeyCeremonyError(f"{path} is not a site key file (no site_id); did you pass another file?")
        if "encrypted" in data:
            secret = passphrase if passphrase is not None else passphrase_from_env()
            if secret is None:
                raise KeyCeremonyError(
                    f"key file {path} is encrypted: set {PASSPHRASE_ENV} (or {PASSPHRASE_FILE_ENV}) or pass "
                    "--passphrase-file")
            opened = json.loads(unseal(data.pop("encrypted"), secret, aad=str(data["site_id"]).encode(),
                                       where=str(path)))
            data.update(opened)
        return cls.from_dict(data)


PASSPHRASE_ENV = "EHR_FED_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "EHR_FED_KEY_PASSPHRASE_FILE"
_SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}


def passphrase_from_env() -> bytes | None:
    """The key-file passphrase from ``$EHR_FED_KEY_PASSPHRASE`` or ``$EHR_FED_KEY_PASSPHRASE_FILE``."""
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode()
    f = os.environ.get(PASSPHRASE_FILE_ENV)
    if f:
        try:
            return Path(f).read_bytes().strip()
        except OSError as exc:
            raise KeyCeremonyError(f"cannot read the passphrase file {f} ({exc.strerror})") from None
    return None


def _scrypt_key(secret: bytes, salt: bytes, params: dict) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=int(params["n"]), r=int(params["r"]), p=int(params["p"])).derive(secret)


def seal(plaintext: bytes, passphrase: str | bytes, *, aad: bytes = b"") -> dict[str, Any]:
    """Encrypt ``plaintext`` under a passphrase: scrypt (N=2^15, r=8, p=1) -> AES-256-GCM."""
    secret = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
    if not secret:
        raise KeyCeremonyError("the key-file passphrase is empty")
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _scrypt_key(secret, salt, _SCRYPT)
    return {"kdf": "scrypt", **_SCRYPT, "salt": _b64(salt), "cipher": "AES-256-GCM", "nonce": _b64(nonce),
            "ciphertext": _b64(AESGCM(key).encrypt(nonce, plaintext, aad))}


def unseal(box: dict[str, Any], passphrase: str | bytes, *, aad: bytes = b"", where: str = "key file") -> bytes:
    secret = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
    try:
        key = _scrypt_key(secret, _unb64(box["salt"]), box)
        return AESGCM(key).decrypt(_unb64(box["nonce"]), _unb64(box["ciphertext"]), aad)
    except InvalidTag:
        raise KeyCeremonyError(f"{where}: wrong passphrase (or the file was altered); nothing was loaded") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyCeremonyError(f"{where}: the encrypted section is damaged ({exc})") from None


def normalize_fingerprint(fingerprint: str) -> str:
    """``ab12-cd34-...`` from any spelling (case, spaces, dashes); :class:`KeyCeremonyError` if malformed."""
    raw = "".join(ch for ch in str(fingerprint).lower() if ch not in " -:")
    if len(raw) != 20 or any(ch not in "0123456789abcdef" for ch in raw):
        raise KeyCeremonyError(
            f"{fingerprint!r} is not a site fingerprint (20 hex digits, e.g. 1a2b-3c4d-5e6f-7a8b-9c0d)")
    return "-".join(raw[i:i + 4] for i in range(0, 20, 4))


@dataclass(frozen=True)
class CoordinatorKeys:
    """Everything the coordinator holds: the Paillier public key and the sites' public bundles.

    With the ``threshold`` scheme also the public threshold parameters: ``threshold`` (t), the share index
    of each site and the public verification keys of the shares.
    """

    paillier_public: bytes
    sites: dict[str, SitePublicBundle]
    creator: str = ""
    scheme: str = "single"
    threshold: int = 0
    share_index: dict[str, int] = field(default_factory=dict)
    verification: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "paillier_public": _b64(self.paillier_public),
            "creator": self.creator,
            "scheme": self.scheme,
            "threshold": self.threshold,
            "share_index": dict(self.share_index),
            "verification": _b64(self.verification) if self.verification else None,
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoordinatorKeys:
        if "kex_private" in d or "sign_private" in d or "encrypted" in d:
            raise KeyCeremonyError("this is a site's private key file, not the coordinator's public key file")
        try:
            return cls(
                paillier_public=_unb64(d["paillier_public"]),
                sites={k: SitePublicBundle.from_dict(v) for k, v in d["sites"].items()},
                creator=d.get("creator", ""),
                scheme=d.get("scheme") or "single",
                threshold=int(d.get("threshold") or 0),
                share_index={k: int(v) for k, v in (d.get("share_index") or {}).items()},
                verification=_unb64(d["verification"]) if d.get("verification") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyCeremonyError(f"not a coordinator key file: {type(exc).__name__}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        return write_secret_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CoordinatorKeys:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise KeyCeremonyError(f"coordinator key file {path} does not exist") from None
        except ValueError as exc:
            raise KeyCeremonyError(f"coordinator key file {path} is not valid JSON ({exc})") from None


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
    """Paillier key material for one recipient (the private key, or its threshold share), wrapped under the
    recipient's X25519 key and signed by the creator."""

    recipient: str
    creator: str
    blob: bytes
    signature: bytes
    kind: str = "private"
    index: int = 0

    def aad(self, pk_fp: str, verification: bytes | None) -> bytes:
        return json.dumps({"to": self.recipient, "from": self.creator, "pk": pk_fp, "kind": self.kind,
                           "index": int(self.index),
                           "verification": hashlib.sha256(verification or b"").hexdigest()},
                          sort_keys=True).encode()

    def signed_data(self, pk_fp: str, verification: bytes | None = None) -> bytes:
        return self.aad(pk_fp, verification) + self.blob

    def to_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "creator": self.creator, "blob": _b64(self.blob),
                "signature": _b64(self.signature), "kind": self.kind, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WrappedKey:
        try:
            return cls(d["recipient"], d["creator"], _unb64(d["blob"]), _unb64(d["signature"]),
                       d.get("kind", "private"), int(d.get("index", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyCeremonyError(f"not a wrapped key: {exc}") from None


SCHEMES = ("single", "threshold")


def default_threshold(n_sites: int) -> int:
    """A strict majority: any two sets of t share holders overlap, so one honest holder sees both."""
    return n_sites // 2 + 1


def deal_paillier(creator: SiteKeys, n_length: int = 2048, *, scheme: str = "single", threshold: int | None = None,
                  allow_insecure: bool = False) -> tuple[CoordinatorKeys, dict[str, WrappedKey]]:
    """The creator site makes the Paillier key and wraps it (or a share of it) for every accepted member.

    Members are the bundles in ``creator.peers``, which :meth:`SiteKeys.accept_bundle` fills only with
    pinned fingerprints. Returns the coordinator's public keys and what the coordinator relays.

    With ``scheme="threshold"`` the creator keeps only its own share: the dealt primes exist only inside
    :func:`ehr_fed.crypto.generate_threshold_keypair`, and the other shares only in this call until they are
    wrapped (see that function's notes for what the dealing process must erase, and when).
    """
    from ehr_fed import crypto

    if scheme not in SCHEMES:
        raise KeyCeremonyError(f"unknown key scheme {scheme!r}; use one of {SCHEMES}")
    members = sorted(creator.peers)
    if creator.site_id not in members:
        creator.peers[creator.site_id] = creator.public_bundle()
        members = sorted(creator.peers)
    share_index: dict[str, int] = {}
    verification = None
    if scheme == "single":
        pk, sk = crypto.generate_keypair(n_length, allow_insecure=allow_insecure)
        secrets_for = {sid: crypto.private_key_to_bytes(sk) for sid in members}
        creator.paillier_private = secrets_for[creator.site_id]
        t = 0
    else:
        t = int(threshold or default_threshold(len(members)))
        if len(members) < 2 or not 2 <= t <= len(members):
            raise KeyCeremonyError(
                f"a threshold key needs at least 2 sites and 2 <= threshold <= {len(members)} sites, got "
                f"threshold={t} for {len(members)} site(s)")
        pk, shares = crypto.generate_threshold_keypair(n_length, len(members), t, allow_insecure=allow_insecure)
        share_index = {sid: i + 1 for i, sid in enumerate(members)}
        secrets_for = {sid: shares[share_index[sid] - 1].to_bytes() for sid in members}
        verification = shares[0].verification.to_bytes()
        del shares
        creator.paillier_share = secrets_for[creator.site_id]
        creator.paillier_private = None
        creator.verification = verification
    pk_bytes = crypto.public_key_to_bytes(pk)
    creator.paillier_public = pk_bytes
    creator.scheme = scheme
    pk_fp = fingerprint(pk_bytes)
    relay = {}
    for sid in members:
        if sid == creator.site_id:
            continue
        unsigned = WrappedKey(sid, creator.site_id, b"", b"", "private" if scheme == "single" else "share",
                              share_index.get(sid, 0))
        blob = wrap_secret(creator.peers[sid], secrets_for[sid], unsigned.aad(pk_fp, verification))
        signed = dataclasses.replace(unsigned, blob=blob)
        relay[sid] = dataclasses.replace(signed, signature=creator.sign(signed.signed_data(pk_fp, verification)))
    secrets_for.clear()
    ckeys = CoordinatorKeys(paillier_public=pk_bytes, sites={sid: creator.peers[sid] for sid in members},
                            creator=creator.site_id, scheme=scheme, threshold=t, share_index=share_index,
                            verification=verification)
    return ckeys, relay


def accept_wrapped(keys: SiteKeys, wrapped: WrappedKey, paillier_public: bytes,
                   verification: bytes | None = None, *, allow_insecure: bool = False) -> None:
    """A member checks the creator's signature (with the creator's *pinned* bundle), unwraps its key material
    and checks that it belongs to the announced public key."""
    from ehr_fed import crypto

    if wrapped.recipient != keys.site_id:
        raise KeyCeremonyError(f"wrapped key is for {wrapped.recipient!r}, not for {keys.site_id!r}")
    creator = keys.peers.get(wrapped.creator)
    if creator is None:
        raise KeyCeremonyError(
            f"the key comes from {wrapped.creator!r}, whose bundle this site has not accepted (pinned); refused")
    pk_fp = fingerprint(paillier_public)
    if not creator.verify(wrapped.signature, wrapped.signed_data(pk_fp, verification)):
        raise KeyCeremonyError(
            f"the wrapped key for {keys.site_id} is not signed by the creator site {creator.site_id!r}; "
            "do not use it"
        )
    secret = unwrap_secret(keys, wrapped.blob, wrapped.aad(pk_fp, verification))
    pk = crypto.public_key_from_bytes(paillier_public)
    if wrapped.kind == "share":
        try:
            share = crypto.ThresholdKeyShare.from_bytes(secret, pk,
                                                        allow_insecure=crypto.insecure_keys_allowed(allow_insecure))
        except ValueError as exc:
            raise KeyCeremonyError(f"the key share for {keys.site_id} is invalid: {exc}") from None
        if share.index != wrapped.index or share.verification.to_bytes() != verification:
            raise KeyCeremonyError("the key share does not match its announced index or verification keys")
        keys.paillier_share, keys.verification, keys.scheme = secret, verification, "threshold"
        keys.paillier_private = None
    else:
        sk = _private_from_bytes(secret, pk)
        if crypto.key_fingerprint(sk_public(sk, pk)) != crypto.key_fingerprint(pk):
            raise KeyCeremonyError("the unwrapped private key does not belong to the announced public key")
        keys.paillier_private, keys.scheme = secret, "single"
    keys.paillier_public = paillier_public


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
    allow_insecure: bool = False, encrypted: bool = True, scheme: str = "single", threshold: int | None = None,
) -> CoordinatorKeys:
    """Run the whole ceremony among local :class:`SiteKeys` (notebooks, tests, ``ehr-fed keys ceremony``).

    All sites are in this process, so each pins the others' fingerprints directly; the messages exchanged
    are otherwise exactly those of the distributed ceremony (``ehr-fed keys init / pin / deal / accept``):
    bundles checked against pins, the creator's wrapped blobs relayed to each recipient. Returns the
    coordinator's keys (public only). With ``encrypted=False`` only identities are exchanged.
    """
    if not sites:
        raise KeyCeremonyError("no sites in the ceremony")
    creator = creator or next(iter(sites))
    if creator not in sites:
        raise KeyCeremonyError(f"creator {creator!r} is not one of the sites {sorted(sites)}")
    bundles = {sid: k.public_bundle() for sid, k in sites.items()}
    for k in sites.values():
        for sid, b in bundles.items():
            if sid != k.site_id:
                k.pin(sid, b.fingerprint())
            k.accept_bundle(b)
    if not encrypted:
        return CoordinatorKeys(paillier_public=b"", sites=bundles, creator=creator)
    ckeys, relay = deal_paillier(sites[creator], n_length, scheme=scheme, threshold=threshold,
                                 allow_insecure=allow_insecure)
    for sid, wrapped in relay.items():                              # what the coordinator relays
        accept_wrapped(sites[sid], wrapped, ckeys.paillier_public, ckeys.verification,
                       allow_insecure=allow_insecure)
    return ckeys


def coordinator_view(sites: dict[str, SiteKeys]) -> CoordinatorKeys:
    """The public keys a coordinator would hold for these (already ceremonied) sites: for reusing key
    material in notebooks and tests without a new ceremony."""
    first = next(iter(sites.values()))
    share_index, threshold = {}, 0
    if first.scheme == "threshold" and first.paillier_share:
        from ehr_fed import crypto

        pk = crypto.public_key_from_bytes(first.paillier_public)
        for sid, k in sites.items():
            share = crypto.ThresholdKeyShare.from_bytes(k.paillier_share, pk, allow_insecure=True)
            share_index[sid], threshold = share.index, share.threshold
    return CoordinatorKeys(paillier_public=first.paillier_public or b"",
                           sites={s: k.public_bundle() for s, k in sites.items()},
                           scheme=first.scheme, threshold=threshold, share_index=share_index,
                           verification=first.verification)
