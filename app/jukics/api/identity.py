"""Who is calling: the identity in the client's TLS certificate, read from the socket.

gunicorn puts no SSL_CLIENT_* variables in the WSGI environ, but exposes the accepted socket as
`gunicorn.socket` (an SSLSocket under the sync and gthread workers). The identity is read there,
never from a request header a client could send itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeerIdentity:
    """Names a client certificate vouches for (already verified against the CA by the TLS layer)."""

    dns_names: tuple[str, ...]
    common_name: str | None

    def matches(self, allowed: Iterable[str]) -> str | None:
        """The first allowed identity this peer holds (SAN DNS first, CN only if it has no SAN)."""
        allowed_set = set(allowed)
        for name in self.dns_names:
            if name in allowed_set:
                return name
        if not self.dns_names and self.common_name in allowed_set:
            return self.common_name
        return None


IdentitySource = Callable[[Mapping[str, Any]], PeerIdentity | None]


def identity_from_peercert(cert: Mapping[str, Any] | None) -> PeerIdentity | None:
    if not cert:
        return None
    dns = tuple(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    cn = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    return PeerIdentity(dns_names=dns, common_name=cn)


def identity_from_gunicorn(environ: Mapping[str, Any]) -> PeerIdentity | None:
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        return identity_from_peercert(sock.getpeercert())
    except (ValueError, OSError):
        return None
