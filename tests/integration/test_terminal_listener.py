"""The counter-terminal listener under a real gunicorn (`jukics serve --listener terminal`): mutual TLS
with the lab terminal certificate, an operator added with the CLI logs in with password + TOTP,
searches; a refused search, a certificate not on the terminal list, and no client certificate."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from conftest import ServiceProcesses, _env, free_port, write_lab_config

PASSWORD = "Counter-Staff-2026"


@pytest.fixture(scope="module")
def terminal_listener(tmp_path_factory: pytest.TempPathFactory, lab_pki: Path) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("terminal")
    port = free_port()
    config = write_lab_config(work, lab_pki, free_port(), extra=f"""
[terminal_listener]
listen = "127.0.0.1:{port}"
cert_file = "{lab_pki}/cs.crt"
key_file = "{lab_pki}/cs.key"
client_ca_file = "{lab_pki}/ca.crt"
allowed_terminals = ["term-01.lab.jukics.example"]
[terminal_listener.purposes]
F7-inquiry = "住民からの照会"
""")
    services = ServiceProcesses(work, config)
    services.upgrade()
    expires = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    added = services.run("operator", "add", "clerk1", "--actor", "admin", "--department", "市民課", "--role",
                         "counter", "--expires", expires, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    totp = pyotp.parse_uri(json.loads(added.stdout.splitlines()[0])["provisioning_uri"])
    services.start("terminal", "serve", "--listener", "terminal")
    try:
        services.wait_until(lambda: call({"port": port, "pki": lab_pki}, "terminal", "GET",
                                         "/v1/search-notice")[0] == 200, "the terminal listener")
        yield {"port": port, "pki": lab_pki, "totp": totp, "cli": services.cli}
    finally:
        services.stop_all()


def call(listener: dict, leaf: str | None, method: str, path: str, body: dict | None = None,
         token: str | None = None) -> tuple[int, dict]:
    pki = listener["pki"]
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if leaf is not None:
        ctx.load_cert_chain(pki / f"{leaf}.crt", pki / f"{leaf}.key")
    conn = http.client.HTTPSConnection("127.0.0.1", listener["port"], context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def test_login_search_and_refusals_over_mtls(terminal_listener):
    status, body = call(terminal_listener, "terminal", "POST", "/v1/sessions",
                        {"user_id": "clerk1", "password": PASSWORD, "totp": terminal_listener["totp"].now()})
    assert status == 201, body
    token = body["token"]
    status, body = call(terminal_listener, "terminal", "POST", "/v1/searches",
                        {"criteria": {"name_kana": "シケン ハナコ", "birth_date": "1990-04-01"},
                         "purpose": "F7-inquiry", "access_logged_ack": True}, token)
    assert status == 200 and body["found"] == 0, body
    status, body = call(terminal_listener, "terminal", "POST", "/v1/searches",
                        {"criteria": {"name_kana": "シケン ハナコ"}, "purpose": "F7-inquiry",
                         "access_logged_ack": True}, token)
    assert status == 400 and body["error"]["code"] == "E_SEARCH_CRITERIA", body
    # view: nobody has this code on an empty file
    status, body = call(terminal_listener, "terminal", "GET",
                        "/v1/residents/12345678901?purpose=F7-inquiry&access_logged_ack=true", token=token)
    assert status == 404 and body["error"]["code"] == "E_UNKNOWN_RESIDENT", body
    # a certificate from the same CA but not a listed terminal: refused before any session check
    status, body = call(terminal_listener, "kizon", "POST", "/v1/searches",
                        {"criteria": {"juminhyo_code": "12345678901"}, "purpose": "F7-inquiry",
                         "access_logged_ack": True}, token)
    assert status == 403 and body["error"]["code"] == "E_CLIENT_NOT_ALLOWED", body


def test_no_client_certificate_no_connection(terminal_listener):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        call(terminal_listener, None, "GET", "/v1/search-notice")


def test_the_audit_chain_still_verifies_after_the_calls(terminal_listener):
    out = subprocess.run([*terminal_listener["cli"], "audit", "verify"], env=_env(), capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
