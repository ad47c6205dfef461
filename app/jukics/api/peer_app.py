"""The peer-facing listener's WSGI app (住基ネット side): what the 都道府県サーバ delivers to this CS.

One route, the jukics delivery protocol (:mod:`jukics.links.protocol`) in the receiving direction:
``POST /v1/links/tokurei/messages``, F6 転出証明書情報 relayed by the prefecture from the 転出地 CS.
The caller is identified by its client certificate; only the SANs of ``[peer_listener]
allowed_peers`` may deliver, each as its configured sender id, and an envelope naming another
sender is refused (E_SENDER_MISMATCH). Every refusal is in the audit chain. The listener is its own
TLS endpoint (port 8444 in the lab, reachable from the prefecture only: firewall), separate from the
intake port, so the 庁内 side and the 住基ネット side never share one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jukics import metrics
from jukics.audit.chain import AuditEvent, AuditLog
from jukics.links import protocol as p
from jukics.links.tokurei import LINK as TOKUREI_LINK

MAX_BODY = 16 * 1024 * 1024
PeerNames = Callable[[Mapping[str, Any]], Sequence[str]]


class PeerApp:
    """A plain WSGI app (no framework needed for one protocol route)."""

    def __init__(self, *, senders: Mapping[str, str], receive: Callable[[str, list[p.Envelope]], list[p.Result]],
                 audit: AuditLog, peer_names: PeerNames) -> None:
        self.senders = dict(senders)
        self.receive = receive
        self.audit = audit
        self.peer_names = peer_names

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, body = self._handle(environ)
        data = json.dumps(body, ensure_ascii=False).encode()
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                  413: "Payload Too Large", 503: "Service Unavailable"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", p.CONTENT_TYPE), ("Content-Length", str(len(data)))])
        return [data]

    def _refuse(self, status: int, code: str, message: str, who: str) -> tuple[int, Any]:
        self.audit.append(AuditEvent(actor=who[:128] or "unknown", terminal=who[:128] or "unknown",
                                     action="peer.refused", purpose="relay", outcome="refused", code=code))
        return status, {"code": code, "message": message}

    def _handle(self, environ: dict[str, Any]) -> tuple[int, Any]:
        # The body is read before any answer: a TLS connection closed with unread request bytes is
        # reset, and the peer would see a dropped connection instead of the refusal.
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        raw = environ["wsgi.input"].read(length) if 0 < length <= MAX_BODY else b""
        names = list(self.peer_names(environ))
        sender = next((self.senders[n] for n in names if n in self.senders), None)
        who = names[0] if names else ""
        if sender is None:
            metrics.TLS_AUTH_FAILURES.labels("peer", metrics.peer_label(who)).inc()
            return self._refuse(403, p.E_UNKNOWN_SENDER, "this peer may not deliver here", who)
        if environ.get("REQUEST_METHOD") != "POST":
            return 405, {"code": p.E_PROTOCOL, "message": "POST only"}
        if environ.get("PATH_INFO", "") != p.messages_path(TOKUREI_LINK):
            return 404, {"code": p.E_PROTOCOL, "message": "no such link here"}
        if not 0 < length <= MAX_BODY:
            return self._refuse(413 if length > MAX_BODY else 400, p.E_PROTOCOL, "a body of 1 byte to 16 MiB", sender)
        try:
            envelopes = p.decode_batch(raw, link=TOKUREI_LINK)
        except p.ProtocolError as exc:
            return self._refuse(400, exc.code, exc.message, sender)
        if envelopes[0].sender != sender:
            metrics.TLS_AUTH_FAILURES.labels("peer", metrics.peer_label(who)).inc()
            return self._refuse(403, p.E_SENDER_MISMATCH, "the envelope's sender is not the certificate's", sender)
        return 200, {"results": [r.as_dict() for r in self.receive(sender, envelopes)]}


def gunicorn_peer_names(environ: Mapping[str, Any]) -> list[str]:
    """The SANs of the verified client certificate of a gunicorn TLS connection."""
    from jukics.links.transport import sans_of

    sock = environ.get("gunicorn.socket")
    der = sock.getpeercert(binary_form=True) if sock is not None and hasattr(sock, "getpeercert") else None
    return sorted(sans_of(der)) if der else []
