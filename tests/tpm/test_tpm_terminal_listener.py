"""The counter-terminal listener with its server key in the TPM (swtpm behind tpm2-abrmd), under a
real gunicorn (`jukics serve --listener terminal`), as cs_service deploys it: identity ``terminal``
made with `jukics cert csr` (a TSS2 blob, never a plain key), its CSR signed by the lab CA
(scripts/lab-ca-sign.sh), staged and activated; the terminal CA in its trust bundle.

With tpm2-openssl >= 1.2 (Debian 13, the appliance) the listed terminal's certificate completes a
real mutual-TLS handshake and reaches the API, a certificate from the same CA that is not listed is
refused by the service, and one from a foreign CA by TLS. With Debian 12's 1.1 (which would route
every digest to the TPM) the listener must refuse to start: never a fallback to a software key.
Exactly one of the two tests runs on a given host: on this project's bookworm CI host the refusal;
`scripts/test-tpm-trixie.sh` runs this file on Debian 13 in a container, where the handshake test
runs (and passes). The molecule default scenario proves the deployed unit end to end
(molecule/default/verify/terminal.yml).
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from service_helpers import Cli, free_port

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = "term-01.lab.jukics.example"


def _provider_version() -> tuple[int, ...]:
    """The installed tpm2-openssl (as tests/tpm/test_provider.py reads it)."""
    text = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "tpm2-openssl"], capture_output=True,
                          text=True, check=False).stdout
    return tuple(int(x) for x in text.split("-")[0].split(".")[:2] if x.isdigit())


PROVIDER = _provider_version()
CAN_SERVE = PROVIDER >= (1, 2)





@pytest.fixture
def terminal_identity(tmp_path: Path, pki: Path, abrmd) -> tuple[Cli, int]:
    """A config like the role's, the terminal identity's key made in the TPM and its certificate active."""
    intake, port = free_port(), free_port()
    tls = tmp_path / "tls"
    config = tmp_path / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "production"
[database]
url = "sqlite:///{tmp_path}/jukics.db"
[keystore]
backend = "tpm"
tcti = "{abrmd.tcti}"
state_dir = "{tmp_path}/keystore"
[intake]
listen = "127.0.0.1:{intake}"
cert_file = "{pki}/cs.crt"
key_file = "{pki}/cs.key"
client_ca_file = "{pki}/ca.crt"
allowed_clients = ["kizon.lab.jukics.example"]
[server]
workers = 1
[tls]
dir = "{tls}"
[tls.identities.terminal]
role = "server"
subject_names = ["cs1", "127.0.0.1"]
peer_names = ["{TERMINAL}"]
[terminal_listener]
listen = "127.0.0.1:{port}"
workers = 2
cert_file = "{tls}/terminal/current/cert.pem"
key_file = "{tls}/terminal/current/key.pem"
client_ca_file = "{tls}/terminal/trust.pem"
allowed_terminals = ["{TERMINAL}"]
[terminal_listener.purposes]
F7-inquiry = "住民からの照会"
""", encoding="utf-8")
    cli = Cli(config, abrmd.env)
    for step in (("db", "upgrade"), ("keystore", "provision"), ("cert", "csr", "terminal")):
        done = cli(*step)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    key = tls / "terminal/pending/key.pem"
    assert key.read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    cert = tmp_path / "terminal.crt"
    csr = tls / "terminal/pending/csr.pem"
    signed = subprocess.run(["bash", str(ROOT / "scripts/lab-ca-sign.sh"), str(pki), str(csr), str(cert), "serverAuth"],
                            capture_output=True, text=True, check=False)
    assert signed.returncode == 0, signed.stderr
    for step in (("cert", "ca", "add", "terminal", str(pki / "ca.crt")),
                 ("cert", "stage", "terminal", "--cert", str(cert), "--chain", str(pki / "ca.crt")),
                 ("cert", "activate", "terminal")):
        done = cli(*step)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    current = (tls / "terminal/current/key.pem").read_bytes()
    assert current.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    for path in tmp_path.rglob("*.pem"):
        assert b"BEGIN PRIVATE KEY" not in path.read_bytes() and b"BEGIN EC PRIVATE KEY" not in path.read_bytes()
    return cli, port


def _start(cli: Cli, work: Path) -> tuple[subprocess.Popen, Path]:
    log_path = work / "terminal.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jukics", "--config", str(cli.config), "serve",
                                 "--listener", "terminal"], stdout=log, stderr=subprocess.STDOUT, env=cli.env, cwd=work)
    return proc, log_path


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def call(pki: Path, port: int, leaf: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))  # the server's certificate from the lab CA
    ctx.load_cert_chain(pki / f"{leaf}.crt", pki / f"{leaf}.key")
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        served = conn.sock.getpeercert(binary_form=True)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else {}, served
    finally:
        conn.close()


def _wait_serving(proc: subprocess.Popen, log: Path, pki: Path, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(pki, port, "terminal", "GET", "/v1/search-notice")[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("terminal listener did not start: " + log.read_text()[-3000:])
        time.sleep(0.3)


def _assert_serves_mutual_tls(work: Path, pki: Path, port: int) -> None:
    status, body, served = call(pki, port, "terminal", "GET", "/v1/search-notice")
    assert status == 200, body
    # The certificate served is the one activated for the TPM key.
    active = x509.load_pem_x509_certificate((work / "tls/terminal/current/cert.pem").read_bytes())
    assert served == active.public_bytes(serialization.Encoding.DER)
    search = {"criteria": {"juminhyo_code": "12345678906"}, "purpose": "F7-inquiry", "access_logged_ack": True}
    status, body, _ = call(pki, port, "terminal", "POST", "/v1/searches", search)
    assert status == 401 and body["error"]["code"] == "E_SESSION_REQUIRED", body
    # Same CA, not a listed terminal: TLS completes, the service refuses.
    status, body, _ = call(pki, port, "wrongname", "POST", "/v1/searches", search)
    assert status == 403 and body["error"]["code"] == "E_CLIENT_NOT_ALLOWED", body
    # A foreign CA: the handshake itself is refused (TLS 1.3 reports it at the first read).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(pki, port, "stranger", "GET", "/v1/search-notice")
    # Several handshakes in a row over both workers' own TPM connections.
    for _ in range(10):
        assert call(pki, port, "terminal", "GET", "/v1/search-notice")[0] == 200


def _assert_refuses_to_start(proc: subprocess.Popen, log: Path, pki: Path, port: int) -> None:
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the listener kept running with a TSS2 key it cannot use: " + log.read_text()[-2000:])
    text = log.read_text()
    assert rc != 0, text[-2000:]
    assert "E_KEYSTORE_PROVIDER" in text or "tpm2-openssl" in text, text[-2000:]
    # Nothing answered on the port meanwhile: no fallback to a software key.
    with pytest.raises(OSError):
        call(pki, port, "terminal", "GET", "/v1/search-notice")


def test_terminal_listener_with_its_key_in_the_tpm(tmp_path, pki, terminal_identity):
    """Where tpm2-openssl can serve TLS with a TPM key (>= 1.2: Debian 13, the appliance) the listener
    serves mutual TLS with it; where it cannot (1.1: Debian 12) the listener refuses to start, never
    falling back to a software key. A host proves the case that applies to it; `make test` also runs
    this file on Debian 13 (scripts/test-tpm-trixie.sh), so CI proves both."""
    cli, port = terminal_identity
    proc, log = _start(cli, tmp_path)
    try:
        if CAN_SERVE:
            _wait_serving(proc, log, pki, port)
            _assert_serves_mutual_tls(tmp_path, pki, port)
        else:
            _assert_refuses_to_start(proc, log, pki, port)
    finally:
        _stop(proc)
