"""Certificate lifecycle of one TLS identity: CSR, stage, verify, activate, rollback, CA bundle.

Layout under ``<tls.dir>/<identity>/`` (SPEC §5 "Certificates"):

    pending/key.pem, pending/csr.pem   made by ``csr``; the key is made by the key store (in the TPM)
    releases/<stamp>-<serial>/          made by ``stage``: cert.pem, chain.pem, key.pem; never changed
    current, previous, staged           symlinks into releases/, switched atomically (rename)
    trust.pem                           the identity's trust bundle (the CAs of its PEERS)
    ca.pem                              the CA(s) that issue OUR certificates (from the chain file)
    state.json                          the last swap: result and time

The service names ``current/cert.pem`` and ``current/key.pem``; its per-worker TLS context is rebuilt
when those paths change (inode), so ``activate`` applies to new connections while connections in
flight keep the old certificate. Every refusal leaves the active material untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jukics.keystore.base import TlsKeySource

KEEP_RELEASES = 3


class CertError(Exception):
    """A step refused; ``code`` is stable (E_CERT_*), the message says what is wrong in one line."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Identity:
    name: str
    role: str  # "server" | "client"
    subject_names: tuple[str, ...]
    peer_names: tuple[str, ...] = ()
    peer_endpoint: str | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _sans_of(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(ext.get_values_for_type(x509.DNSName)) | {str(i) for i in ext.get_values_for_type(x509.IPAddress)}


def load_pem_certs(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertError("E_CERT_PEM", f"{source}: not a complete PEM certificate (truncated or damaged)") from None
    if not certs:
        raise CertError("E_CERT_PEM", f"{source}: no certificate in it")
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _atomic_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # rename(2): a reader sees the old or the new link, never none
    dfd = os.open(link.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CertStore:
    """The files of one identity and the steps on them. The key store makes and uses the keys."""

    def __init__(self, tls_dir: Path, identity: Identity, keys: TlsKeySource) -> None:
        self.identity = identity
        self.dir = Path(tls_dir) / identity.name
        self.keys = keys

    # --- paths ---------------------------------------------------------------------------------
    def link(self, which: str) -> Path:
        return self.dir / which

    def release_of(self, which: str) -> Path | None:
        link = self.link(which)
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    @property
    def trust_file(self) -> Path:
        return self.dir / "trust.pem"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def _ensure_dirs(self) -> None:
        # The TLS directory is setgid to the service's group (the role makes it so): what we create
        # below it belongs to that group, so the service can read the certificate and the key blob.
        (self.dir / "releases").mkdir(mode=0o750, parents=True, exist_ok=True)

    # --- csr -----------------------------------------------------------------------------------
    def csr(self, force: bool = False) -> Path:
        pending = self.dir / "pending"
        if (pending / "key.pem").exists():
            if not force:
                raise CertError("E_CERT_PENDING", f"{self.identity.name}: a pending key and CSR exist (use --force)")
            shutil.rmtree(pending)
        self._ensure_dirs()
        pending.mkdir(mode=0o750)
        self.keys.create_tls_key(pending / "key.pem")
        signer = self.keys.tls_signer(pending / "key.pem")
        names = self.identity.subject_names
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
               .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
               .sign(signer, hashes.SHA256()))
        out = pending / "csr.pem"
        _atomic_write(out, csr.public_bytes(serialization.Encoding.PEM))
        return out

    # --- checks --------------------------------------------------------------------------------
    def check(self, cert: x509.Certificate, chain: list[x509.Certificate], key_file: Path,
              anchors: list[x509.Certificate] | None = None, now: dt.datetime | None = None) -> list[str]:
        """Problems with ``cert`` for this identity (empty when fine). Warnings start with "warning:"."""
        now = now or _utcnow()
        problems: list[str] = []
        public = self.keys.tls_public_key(key_file)
        cert_public = cert.public_key()
        if not isinstance(cert_public, ec.EllipticCurvePublicKey) or \
                cert_public.public_numbers() != public.public_numbers():
            problems.append("the certificate does not match the key (in the TPM)")
        if now < cert.not_valid_before_utc:
            problems.append(f"not yet valid (from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)")
        if now >= cert.not_valid_after_utc:
            problems.append(f"expired ({cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)")
        missing = set(self.identity.subject_names) - _sans_of(cert)
        if missing:
            problems.append(f"the SANs lack {', '.join(sorted(missing))}")
        want = ExtendedKeyUsageOID.SERVER_AUTH if self.identity.role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if want not in eku:
                problems.append(f"the EKU lacks {want._name}")
        except x509.ExtensionNotFound:
            problems.append(f"no EKU (needs {want._name})")
        roots = anchors if anchors is not None else [c for c in chain if _is_self_signed(c)] or chain[-1:]
        if not roots:
            problems.append("no issuing CA: give the chain file (intermediates and the CA)")
        else:
            problem = _chain_problem(cert, chain, roots, now, self.identity)
            if problem:
                problems.append(problem)
        if not problems:
            lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
            if cert.not_valid_after_utc - now < lifetime / 3:
                problems.append("warning: less than a third of its lifetime left: renew")
        return problems

    # --- stage / activate / rollback -----------------------------------------------------------
    def stage(self, cert_file: Path, chain_file: Path | None = None, reuse_key: bool = False) -> Path | None:
        """Check and stage; returns the release, or None when the same certificate is staged/current."""
        certs = load_pem_certs(Path(cert_file).read_bytes(), str(cert_file))
        cert, extra = certs[0], certs[1:]
        chain = extra + (load_pem_certs(Path(chain_file).read_bytes(), str(chain_file)) if chain_file else [])
        if not chain and self.ca_file.exists():
            chain = load_pem_certs(self.ca_file.read_bytes(), str(self.ca_file))
        for which in ("staged", "current"):
            rel = self.release_of(which)
            if rel and (rel / "cert.pem").exists() and \
                    fingerprint(load_pem_certs((rel / "cert.pem").read_bytes(), which)[0]) == fingerprint(cert):
                return None
        if reuse_key:
            current = self.release_of("current")
            if current is None:
                raise CertError("E_CERT_NO_KEY", f"{self.identity.name}: --reuse-key but nothing is current")
            key_source = current / "key.pem"
        else:
            key_source = self.dir / "pending" / "key.pem"
            if not key_source.exists():
                raise CertError("E_CERT_NO_KEY", f"{self.identity.name}: no pending key; run `jukics cert csr` first")
        problems = [p for p in self.check(cert, chain, key_source) if not p.startswith("warning:")]
        if problems:
            raise CertError("E_CERT_REFUSED", f"{self.identity.name}: {'; '.join(problems)}")
        self._ensure_dirs()
        stamp = _utcnow().strftime("%Y%m%dT%H%M%SZ")
        release = self.dir / "releases" / f"{stamp}-{cert.serial_number:x}"[:80]
        tmp = release.with_name(f".{release.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o750)
        (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "chain.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        shutil.copy2(key_source, tmp / "key.pem")
        os.chmod(tmp / "key.pem", 0o640)
        os.replace(tmp, release)
        if chain:
            roots = [c for c in chain if _is_self_signed(c)] or chain[-1:]
            _atomic_write(self.ca_file, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots))
        _atomic_symlink(self.link("staged"), f"releases/{release.name}")
        if not reuse_key:
            shutil.rmtree(self.dir / "pending", ignore_errors=True)
        return release

    def activate(self) -> Path | None:
        staged = self.release_of("staged")
        if staged is None:
            return None
        cert = load_pem_certs((staged / "cert.pem").read_bytes(), "staged")[0]
        chain = load_pem_certs((staged / "chain.pem").read_bytes(), "chain") if (staged / "chain.pem").stat().st_size \
            else []
        problems = [p for p in self.check(cert, chain, staged / "key.pem") if not p.startswith("warning:")]
        if problems:
            self._record("activate", False)
            raise CertError("E_CERT_REFUSED", f"{self.identity.name}: staged certificate: {'; '.join(problems)}")
        current = self.release_of("current")
        if current is not None:
            _atomic_symlink(self.link("previous"), f"releases/{current.name}")
        _atomic_symlink(self.link("current"), f"releases/{staged.name}")
        self.link("staged").unlink()
        self._record("activate", True)
        self._prune()
        return staged

    def rollback(self) -> Path | None:
        previous, current = self.release_of("previous"), self.release_of("current")
        if previous is None:
            return None
        _atomic_symlink(self.link("current"), f"releases/{previous.name}")
        if current is not None:
            _atomic_symlink(self.link("previous"), f"releases/{current.name}")
        self._record("rollback", True)
        return previous

    def _prune(self) -> None:
        keep = {r for r in (self.release_of(w) for w in ("current", "previous", "staged")) if r}
        releases = sorted((self.dir / "releases").iterdir(), key=lambda p: p.name)
        for old in releases[:-KEEP_RELEASES]:
            if old.resolve() not in keep:
                shutil.rmtree(old)

    def _record(self, step: str, ok: bool) -> None:
        _atomic_write(self.dir / "state.json", json.dumps(
            {"last_swap": step, "last_swap_ok": ok, "last_swap_at": _utcnow().isoformat()}).encode())

    def last_swap(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dir / "state.json").read_text()))
        except (OSError, ValueError):
            return {}

    # --- trust bundle (the peers' CAs) --------------------------------------------------------
    def trust(self) -> list[x509.Certificate]:
        if not self.trust_file.exists():
            return []
        return load_pem_certs(self.trust_file.read_bytes(), str(self.trust_file))

    def ca_add(self, ca_file: Path) -> bool:
        new = load_pem_certs(Path(ca_file).read_bytes(), str(ca_file))
        for c in new:
            try:
                if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                    raise x509.ExtensionNotFound("not a CA", x509.BasicConstraints.oid)
            except x509.ExtensionNotFound:
                raise CertError("E_CERT_NOT_CA", f"{ca_file}: {c.subject.rfc4514_string()} is not a CA") from None
        have = self.trust()
        known = {fingerprint(c) for c in have}
        added = [c for c in new if fingerprint(c) not in known]
        if not added:
            return False
        self._ensure_dirs()
        _atomic_write(self.trust_file, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in have + added))
        return True

    def ca_remove(self, sha256: str) -> bool:
        have = self.trust()
        keep = [c for c in have if fingerprint(c) != sha256.lower()]
        if len(keep) == len(have):
            return False
        if not keep:
            raise CertError("E_CERT_LAST_CA", f"{self.identity.name}: refusing to remove the last trusted CA")
        _atomic_write(self.trust_file, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in keep))
        return True

    # --- status / live check -------------------------------------------------------------------
    def describe(self, which: str) -> dict[str, Any] | None:
        rel = self.release_of(which)
        if rel is None or not (rel / "cert.pem").exists():
            return None
        cert = load_pem_certs((rel / "cert.pem").read_bytes(), which)[0]
        left = cert.not_valid_after_utc - _utcnow()
        return {
            "release": rel.name, "serial": f"{cert.serial_number:x}", "sha256": fingerprint(cert),
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat(),
            "days_left": round(left.total_seconds() / 86400, 1), "subject_names": sorted(_sans_of(cert)),
            "issuer": cert.issuer.rfc4514_string(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "identity": self.identity.name, "role": self.identity.role, "dir": str(self.dir),
            "current": self.describe("current"), "staged": self.describe("staged"),
            "previous": self.describe("previous"), "pending_csr": (self.dir / "pending" / "csr.pem").exists(),
            "trusted_cas": [{"subject": c.subject.rfc4514_string(), "sha256": fingerprint(c)} for c in self.trust()],
            **self.last_swap(),
        }

    def live_check(self, which: str) -> None:
        """A real TLS 1.3 handshake with the release's certificate and key (through the key store)."""
        rel = self.release_of(which)
        if rel is None:
            raise CertError("E_CERT_NOTHING", f"{self.identity.name}: no {which} certificate")
        if getattr(self.keys, "tls_key_format", "") == "tss2":
            from jukics.keystore.provider import ensure_tpm2_provider

            ensure_tpm2_provider(getattr(self.keys, "tcti", None))
        chain_file = rel / "chain.pem"
        full = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)  # noqa: SIM115 - removed below
        try:
            full.write((rel / "cert.pem").read_bytes() + (chain_file.read_bytes() if chain_file.exists() else b""))
            full.close()
            if self.identity.role == "client":
                self._handshake_to_peer(full.name, rel / "key.pem")
            else:
                self._handshake_to_self(full.name, rel / "key.pem", rel)
        except (OSError, ssl.SSLError) as exc:
            raise CertError("E_CERT_HANDSHAKE", f"{self.identity.name}: live TLS handshake failed: {exc}") from None
        finally:
            os.unlink(full.name)

    def _handshake_to_self(self, cert_file: str, key_file: Path, rel: Path) -> None:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_3
        server.load_cert_chain(cert_file, str(key_file))
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        roots = rel / "chain.pem"
        if roots.exists() and roots.stat().st_size:
            client.load_verify_locations(cafile=str(roots))
        else:
            client.load_verify_locations(cafile=cert_file)
        errors: list[BaseException] = []
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            port = lsock.getsockname()[1]

            def serve() -> None:
                try:
                    conn, _ = lsock.accept()
                    with server.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (OSError, ssl.SSLError) as exc:
                    errors.append(exc)

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    client.wrap_socket(raw, server_hostname=self.identity.subject_names[0]) as tls:
                if tls.recv(2) != b"ok":
                    raise ssl.SSLError("no data after the handshake")
            t.join(10)
        if errors:
            raise errors[0]

    def _handshake_to_peer(self, cert_file: str, key_file: Path) -> None:
        if not self.identity.peer_endpoint:
            raise CertError("E_CERT_NO_PEER", f"{self.identity.name}: no peer_endpoint configured for --live")
        host, _, port = self.identity.peer_endpoint.rpartition(":")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=str(self.trust_file))  # the peer's CA only, never the system store
        ctx.load_cert_chain(cert_file, str(key_file))
        ctx.check_hostname = False  # the pinned names are checked below, against the SANs
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
            # In TLS 1.3 the client's handshake ends before the peer has judged our certificate; a peer
            # that refuses it sends its alert right after. Wait briefly for it (an accepting peer sends
            # nothing, or session tickets, until we speak).
            tls.settimeout(PEER_VERDICT_SECONDS)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)
        if self.identity.peer_names and not (_sans_of(peer) & set(self.identity.peer_names)):
            raise CertError("E_CERT_PEER_IDENTITY",
                            f"{self.identity.name}: the peer presented {sorted(_sans_of(peer))}, "
                            f"expected one of {list(self.identity.peer_names)}")


PEER_VERDICT_SECONDS = 1.5


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _chain_problem(cert: x509.Certificate, chain: list[x509.Certificate], roots: list[x509.Certificate],
                   now: dt.datetime, identity: Identity) -> str | None:
    """Path validation with cryptography's own verifier (RFC 5280 profile); None when the chain holds."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    builder = PolicyBuilder().store(Store(roots)).time(now)
    intermediates = [c for c in chain if not _is_self_signed(c)]
    try:
        if identity.role == "server":
            subject = _san_entries(identity.subject_names[:1])[0]
            assert isinstance(subject, (x509.DNSName, x509.IPAddress))
            builder.build_server_verifier(subject).verify(cert, intermediates)
        else:
            builder.build_client_verifier().verify(cert, intermediates)
    except VerificationError as exc:
        return f"the chain does not verify against the issuing CA ({exc})"
    return None
