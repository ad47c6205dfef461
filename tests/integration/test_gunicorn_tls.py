"""The service under a real gunicorn: mutual TLS handshakes, identity pinning, certificate swap."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from jukics.sim.residents import generate_residents, resident_intake_items

KIZON = "kizon.lab.jukics.example"


def ctx(pki: Path, cert: str | None, *, tls12: bool = False) -> ssl.SSLContext:
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(cafile=str(pki / "ca.crt"))
    if cert:
        c.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    if tls12:
        c.maximum_version = ssl.TLSVersion.TLSv1_2
    return c


def request(svc, cert: str | None, method: str, path: str, body: object = None, **kw) -> tuple[int, dict]:
    conn = http.client.HTTPSConnection("127.0.0.1", svc.port, context=ctx(svc.pki, cert, **kw), timeout=10)
    try:
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def served_serial(port: int) -> int:
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, c.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_health_over_mtls(running_service):
    status, body = request(running_service, "kizon", "GET", "/v1/health")
    assert status == 200 and body["status"] == "ok"


def test_intake_over_mtls(running_service):
    people = generate_residents(20, seed=3, municipality_code="142140", today=dt.date(2026, 11, 1))
    items = [i for p in people for i in resident_intake_items(p)]
    status, body = request(running_service, "kizon", "POST", "/v1/intake/updates", {"items": items})
    assert status == 200, body
    assert body["applied"] == len(items)


@pytest.mark.parametrize("cert", [None, "stranger"])
def test_tls_refuses_clients_without_a_trusted_certificate(running_service, cert):
    # No certificate, or one from another CA claiming the 既存住基 name: the handshake fails and no
    # HTTP exchange happens at all (zero payload bytes reach the app).
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        request(running_service, cert, "GET", "/v1/health")


def test_tls12_refused(running_service):
    with pytest.raises(ssl.SSLError):
        request(running_service, "kizon", "GET", "/v1/health", tls12=True)


def test_trusted_but_not_allowed_identity_gets_403(running_service):
    status, body = request(running_service, "wrongname", "POST", "/v1/intake/updates", {"items": [{}]})
    assert status == 403 and body["error"]["code"] == "E_CLIENT_NOT_ALLOWED"


def test_certificate_swap_applies_to_new_connections_without_restart(running_service):
    svc = running_service
    tls = svc.workdir / "tls"
    before = served_serial(svc.port)
    # Issue a new server certificate for the same key from the same CA, then swap the file atomically.
    old = x509.load_pem_x509_certificate((tls / "cs.crt").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((svc.pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((svc.pki / "ca.key").read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(4242)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=2))
    )
    for ext in old.extensions:
        if ext.oid != x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            builder = builder.add_extension(ext.value, ext.critical)
    new = tls / "cs-new.crt"
    new.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    new.replace(tls / "cs.crt")
    seen = {served_serial(svc.port) for _ in range(6)}  # both workers rebuild on their next connection
    assert seen == {4242} and before != 4242
    status, _ = request(svc, "kizon", "GET", "/v1/health")
    assert status == 200
    assert svc.process.poll() is None


def test_cli_health_and_audit_verify(running_service):
    assert running_service.jukics("health").returncode == 0
    verify = running_service.jukics("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ok" in verify.stdout


def test_cli_stats_gives_aggregate_counts_only(running_service):
    out = running_service.jukics("stats")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert set(stats) == {"residents", "deleted", "versions", "outbox_pending"}
    assert stats["outbox_pending"]["prefecture"] == stats["outbox_pending"]["fuhyo"] == stats["versions"]
