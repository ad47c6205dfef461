"""Certificate swap on a running service (real gunicorn, real TLS): `jukics cert activate` while a
client keeps opening new connections. No request fails, new connections see the new certificate at
once, and a request in flight across the swap completes on the connection it started with."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "certs"))
from test_cert_lifecycle import Ca, pem

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT / "app"), "PATH": "/usr/bin:/bin"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jukics(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jukics", "--config", str(config), *args], env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def _served_serial(ctx: ssl.SSLContext, port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="cs1.lab.jukics.example") as tls:
        # The peer's certificate now: once the server has closed, ssl no longer gives it.
        serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"").serial_number
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: cs\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(data[:60])
        return serial


def test_activate_under_load_drops_nothing(tmp_path):
    port = _port()
    config = tmp_path / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{tmp_path}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{tmp_path}/dev-secret"
[intake]
listen = "127.0.0.1:{port}"
cert_file = "{tmp_path}/tls/intake/current/cert.pem"
key_file = "{tmp_path}/tls/intake/current/key.pem"
client_ca_file = "{tmp_path}/tls/intake/trust.pem"
allowed_clients = ["kizon.lab.jukics.example"]
[server]
workers = 2
[tls]
dir = "{tmp_path}/tls"
[tls.identities.intake]
role = "server"
subject_names = ["cs1.lab.jukics.example", "127.0.0.1"]
peer_names = ["kizon.lab.jukics.example"]
""")
    ca = Ca("lab CA")
    (tmp_path / "ca.crt").write_bytes(pem(ca.cert))
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "kizon.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    (tmp_path / "kizon.crt").write_bytes(pem(ca.issue(key.public_key(), names=["kizon.lab.jukics.example"],
                                                      eku=ExtendedKeyUsageOID.CLIENT_AUTH)))

    def issue(name: str) -> int:
        assert _jukics(config, "cert", "csr", "intake").returncode == 0
        csr = x509.load_pem_x509_csr((tmp_path / "tls/intake/pending/csr.pem").read_bytes())
        cert = ca.issue(csr.public_key())
        (tmp_path / name).write_bytes(pem(cert))
        staged = _jukics(config, "cert", "stage", "intake", "--cert", str(tmp_path / name),
                         "--chain", str(tmp_path / "ca.crt"))
        assert staged.returncode == 0, staged.stderr
        return cert.serial_number

    assert _jukics(config, "db", "upgrade").returncode == 0
    assert _jukics(config, "cert", "ca", "add", "intake", str(tmp_path / "ca.crt")).returncode == 0
    old = issue("first.crt")
    assert _jukics(config, "cert", "activate", "intake").returncode == 0
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jukics", "--config", str(config), "serve"], env=ENV,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(tmp_path / "ca.crt"))
        ctx.load_cert_chain(str(tmp_path / "kizon.crt"), str(tmp_path / "kizon.key"))
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _served_serial(ctx, port) == old
                break
            except (OSError, RuntimeError):
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-2000:]
                time.sleep(0.2)
        new = issue("second.crt")

        # A request in flight: TLS is up, the headers are half sent when the swap happens.
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        inflight = ctx.wrap_socket(raw, server_hostname="cs1.lab.jukics.example")
        inflight.sendall(b"GET /v1/health HTTP/1.1\r\nHost: cs\r\n")

        seen: list[tuple[float, int]] = []
        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    seen.append((time.monotonic(), _served_serial(ctx, port)))
                except (OSError, RuntimeError, ssl.SSLError) as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        activated_at = time.monotonic()
        assert _jukics(config, "cert", "activate", "intake").returncode == 0
        activated_done = time.monotonic()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(10)

        inflight.sendall(b"Connection: close\r\n\r\n")
        body = b""
        while chunk := inflight.recv(65536):
            body += chunk
        inflight_serial = x509.load_der_x509_certificate(inflight.getpeercert(binary_form=True)).serial_number
        inflight.close()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()

    assert errors == []
    assert body.startswith(b"HTTP/1.1 200") and inflight_serial == old
    before = [s for t, s in seen if t < activated_at]
    after = [s for t, s in seen if t > activated_done]
    assert before and set(before) == {old}
    assert after and set(after) == {new}  # every connection opened after activate returned: the new cert
    assert len(seen) > 50
