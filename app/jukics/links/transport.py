"""HTTPS with mutual TLS to one peer, whose identity is checked before a single payload byte leaves.

SPEC §4 "Links": TLS 1.3, the peer's own trust bundle (never the system store), the peer's names
pinned, validity and (optionally) revocation from a CRL file checked. The handshake verifies the
chain and dates; right after it, before the request is written, the peer certificate's SANs must meet
the pinned names. Any failure closes the connection: 「認証できない相手先への情報の提供はなされない」
(seed 002). Our client key may be a TPM-resident TSS2 key (the tpm2 provider loads it).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from jukics.api.tls import CachedContext, ServerTlsFiles
from jukics.config import PeerConfig
from jukics.links.protocol import CONTENT_TYPE

E_LINK_AUTH = "E_LINK_AUTH"  # the peer's certificate did not verify (wrong CA, expired, revoked)
E_LINK_PEER_IDENTITY = "E_LINK_PEER_IDENTITY"  # it verified but names someone else


class LinkAuthError(Exception):
    """The peer failed authentication; nothing was sent. ``code`` is stable, ``reason`` one line."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


def build_client_context(files: ServerTlsFiles, crl_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(files.client_ca_file))  # this peer's trust bundle only
    if crl_file:
        ctx.load_verify_locations(cafile=crl_file)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.check_hostname = False  # the pinned names are checked against the SANs, before any byte is sent
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(certfile=str(files.cert_file), keyfile=str(files.key_file))
    return ctx


def sans_of(der: bytes) -> set[str]:
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(ipaddress.ip_address(n)) for n in ext.get_values_for_type(x509.IPAddress)}


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, peer_names: tuple[str, ...],
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self.peer_names = frozenset(peer_names)

    def connect(self) -> None:
        try:
            super().connect()  # TCP, then the TLS handshake: chain, dates, CRL
        except ssl.SSLCertVerificationError as exc:
            raise LinkAuthError(E_LINK_AUTH, f"peer certificate refused: {exc.verify_message}") from None
        assert isinstance(self.sock, ssl.SSLSocket)
        presented = sans_of(self.sock.getpeercert(binary_form=True) or b"")
        if not presented & self.peer_names:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]
            raise LinkAuthError(E_LINK_PEER_IDENTITY,
                                f"peer presented {sorted(presented)}, expected one of {sorted(self.peer_names)}")


@dataclass
class Response:
    status: int
    body: bytes


class PeerTransport:
    """POSTs to one peer over a kept-alive, pinned mTLS connection (reconnects after any error)."""

    def __init__(self, peer: PeerConfig, *, timeout: float = 10.0) -> None:
        self.peer = peer
        self.timeout = timeout
        crl = str(peer.crl_file) if peer.crl_file else None
        self._ctx = CachedContext(ServerTlsFiles(peer.cert_file, peer.key_file, peer.trust_file),
                                  lambda files: build_client_context(files, crl))
        self._conn: _PinnedConnection | None = None
        self._ctx_used: ssl.SSLContext | None = None

    @property
    def name(self) -> str:
        return self.peer.peer_names[0]

    def _connection(self) -> _PinnedConnection:
        ctx = self._ctx.get()
        if self._conn is None or ctx is not self._ctx_used:  # new certificate files: new connections
            self.close()
            host, port = self.peer.host_port
            self._conn = _PinnedConnection(host, port, context=ctx, peer_names=self.peer.peer_names,
                                           timeout=self.timeout)
            self._ctx_used = ctx
        return self._conn

    def post(self, path: str, body: bytes) -> Response:
        conn = self._connection()
        try:
            conn.request("POST", path, body=body,
                         headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(len(body))})
            resp = conn.getresponse()
            data = resp.read()
            if resp.will_close:
                self.close()
            return Response(resp.status, data)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def describe_error(exc: BaseException) -> str:
    """One line for the link status (no payload, no personal data)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc}"[:200]
