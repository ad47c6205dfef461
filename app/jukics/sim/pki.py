"""A throwaway PKI made at run time for the simulated network, tests and benchmarks. NEVER for a site.

Nothing of it is committed: :func:`make_lab_pki` writes a fresh CA (and an unrelated "stranger" CA)
and leaf certificates into a folder, EC P-256, each private key 0600. Besides the good leaves it makes
the bad ones the link tests need: a certificate from the wrong CA, an expired one, one with a wrong SAN.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, cn: str, now: dt.datetime | None = None) -> Ca:
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, names: Sequence[str], *, eku: Sequence[x509.ObjectIdentifier] = SERVER_AND_CLIENT,
              start: dt.datetime | None = None, days: int = 30,
              key: ec.EllipticCurvePrivateKey | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        start = start or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class LeafFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LabPki:
    """Where :func:`make_lab_pki` put things. ``ca`` signs every good leaf; ``stranger_ca`` none of them."""

    dir: Path
    ca: Path
    stranger_ca: Path

    def leaf(self, name: str) -> LeafFiles:
        return LeafFiles(self.dir / f"{name}.crt", self.dir / f"{name}.key")


def make_lab_pki(out: Path, leaves: dict[str, Sequence[str]], *, bad_for: str | None = None) -> LabPki:
    """A CA and one leaf per entry of ``leaves`` (file stem -> SANs, server+client EKU).

    With ``bad_for`` (a stem of ``leaves``), also the bad variants of that leaf: ``<stem>-wrongca``
    (same names, from the stranger CA), ``<stem>-expired`` (ended yesterday) and ``<stem>-wrongsan``
    (the lab CA, another name).
    """
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    ca, stranger = Ca.new("jukics lab CA (throwaway)"), Ca.new("stranger CA (throwaway)")
    _write(out / "ca.crt", cert_pem(ca.cert), 0o644)
    _write(out / "ca.key", key_pem(ca.key), 0o600)
    _write(out / "stranger-ca.crt", cert_pem(stranger.cert), 0o644)

    def put(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        _write(out / f"{stem}.crt", cert_pem(cert), 0o644)
        _write(out / f"{stem}.key", key_pem(key), 0o600)

    for stem, names in leaves.items():
        put(stem, *ca.issue(names))
    if bad_for is not None:
        names = leaves[bad_for]
        put(f"{bad_for}-wrongca", *stranger.issue(names))
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
        put(f"{bad_for}-expired", *ca.issue(names, start=long_ago, days=30))
        put(f"{bad_for}-wrongsan", *ca.issue([f"not-{names[0]}"]))
    return LabPki(out, out / "ca.crt", out / "stranger-ca.crt")
