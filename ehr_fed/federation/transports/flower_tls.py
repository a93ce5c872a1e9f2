"""TLS material for Flower deployments on loopback, pilots and tests.

A production federation uses the hospitals' own PKI: the SuperLink gets a
certificate for its public host name, and every SuperNode trusts the CA that
signed it (``--root-certificates``). For a pilot or a test on one machine,
:func:`make_loopback_certificates` creates a throw-away CA and a server
certificate valid for ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a CA certificate and a server certificate with its key (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_loopback_certificates(
    directory: str | Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 7,
) -> TlsFiles:
    """Create a CA and a server certificate for ``hosts`` in ``directory``.

    Parameters
    ----------
    directory : path
        Created when missing; the private keys are written with mode 0600.
    hosts : tuple of str
        DNS names or IP addresses the server certificate is valid for.
    days : int
        Validity of both certificates.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ehr-fed loopback CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(files.server_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    return files


@dataclass(frozen=True)
class NodeAuthKeys:
    """A SuperNode's authentication key pair (OpenSSH format, EC P-384)."""

    private_key: Path
    public_key: Path


def make_supernode_auth_keys(directory: str | Path, name: str = "supernode") -> NodeAuthKeys:
    """Create the key pair a SuperNode authenticates with (``--auth-supernode-private-key``).

    The private key (``NAME.key``, 0600) stays at the hospital; the public key (``NAME.pub``) is
    registered with the SuperLink (``flwr supernode register NAME.pub``), which then accepts only
    registered SuperNodes (``flower-superlink --enable-supernode-auth``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    files = NodeAuthKeys(directory / f"{name}.key", directory / f"{name}.pub")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(files.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    files.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return files
