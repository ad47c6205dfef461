"""Link security with real TLS handshakes on loopback: a peer with a certificate from the wrong CA, an
expired one, or one naming someone else receives ZERO payload bytes; the attempt is audited and
counted. The right peer gets the batch. (SPEC §4 "Links": 「認証できない相手先への情報の提供はなされない」)"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from jukics.config import PeerConfig
from jukics.links.protocol import Result, decode_batch, encode_results
from jukics.links.transport import E_LINK_AUTH, E_LINK_PEER_IDENTITY, LinkAuthError, PeerTransport
from jukics.links.worker import DELIVERED, FAILED, LinkWorker
from jukics.sim.pki import make_lab_pki
from jukics.store.schema import audit_log

from .test_link_worker import load, make_service


class RecordingPeer:
    """A TLS server that requires our client certificate and records every byte it receives."""

    def __init__(self, pki, stem: str) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(str(pki.ca))
        leaf = pki.leaf(stem)
        self.ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.handshakes = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(ssl.SSLError, OSError), raw:
                raw.settimeout(3)
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    self.handshakes += 1
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.received += data
                    if not data:
                        continue
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length")))
                    while len(body) < length:
                        chunk = tls.recv(65536)
                        self.received += chunk
                        body += chunk
                    batch = decode_batch(body)
                    answer = encode_results([Result(e.seq, "ack") for e in batch])
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)

    def stop(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"), {"cs1": ["cs1"], "pref1": ["pref1", "127.0.0.1"]},
                        bad_for="pref1")


def peer_config(pki, port: int, names=("pref1",)) -> PeerConfig:
    cs = pki.leaf("cs1")
    return PeerConfig("prefecture", f"https://127.0.0.1:{port}", cs.cert, cs.key, pki.ca, tuple(names))


@pytest.mark.parametrize(("stem", "code", "reason"), [
    ("pref1-wrongca", E_LINK_AUTH, "unable to get local issuer certificate"),
    ("pref1-expired", E_LINK_AUTH, "certificate has expired"),
    ("pref1-wrongsan", E_LINK_PEER_IDENTITY, "expected one of ['pref1']"),
])
def test_an_unauthenticated_peer_receives_zero_payload_bytes(tmp_path: Path, pki, stem, code, reason):
    svc = make_service(tmp_path)
    load(svc, 5)
    peer = RecordingPeer(pki, stem)
    try:
        transport = PeerTransport(peer_config(pki, peer.port))
        with pytest.raises(LinkAuthError) as exc:
            transport.post("/v1/links/prefecture/messages", b'{"messages": []}')
        assert exc.value.code == code and reason in exc.value.reason
        # and through the worker: nothing sent, nothing settled, audited, counted
        w = LinkWorker("prefecture", source=svc.store, state=svc.link_state, transport=transport,
                       sender="cs-142140", message_type="update_notice", legal_basis="住基法第30条の6")
        assert w.step().outcome == FAILED
    finally:
        peer.stop()
    assert bytes(peer.received) == b""
    assert svc.store.outbox_counts()["prefecture"] > 0  # still queued
    status = {s["link"]: s for s in svc.link_state.status()}["prefecture"]
    assert status["auth_failures_total"] == 1 and status["acked_seq"] == 0
    with svc.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.code, audit_log.c.outcome)
                            .where(audit_log.c.action == "link.auth_failed")).all()
    assert [(r.code, r.outcome) for r in rows] == [(code, "refused")]


def test_the_right_peer_gets_the_batch(tmp_path: Path, pki):
    svc = make_service(tmp_path)
    load(svc, 5)
    peer = RecordingPeer(pki, "pref1")
    try:
        w = LinkWorker("prefecture", source=svc.store, state=svc.link_state,
                       transport=PeerTransport(peer_config(pki, peer.port)),
                       sender="cs-142140", message_type="update_notice", legal_basis="住基法第30条の6")
        result = w.step()
    finally:
        peer.stop()
    assert result.outcome == DELIVERED and result.acked == result.sent > 0
    assert b'"sender":"cs-142140"' in peer.received and peer.handshakes == 1
    assert svc.store.outbox_counts()["prefecture"] == 0


def test_a_peer_that_is_not_listening_is_a_retry_not_an_auth_failure(tmp_path: Path, pki):
    svc = make_service(tmp_path)
    load(svc, 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = LinkWorker("prefecture", source=svc.store, state=svc.link_state,
                   transport=PeerTransport(peer_config(pki, port), timeout=2),
                   sender="cs-142140", message_type="update_notice", legal_basis="住基法第30条の6")
    assert w.step().error == "connection refused"
    status = {s["link"]: s for s in svc.link_state.status()}["prefecture"]
    assert status["auth_failures_total"] == 0 and status["consecutive_failures"] == 1
