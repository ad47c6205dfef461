"""The peer-facing listener under a real gunicorn (`jukics serve --listener peer`): its own port and
process tree next to the intake's; only the configured prefecture delivers 転出証明書情報 over mutual
TLS, a 既存住基 certificate (good for the intake port) is refused there; `jukics health` probes both."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServiceProcesses, _env, free_port, write_lab_config

from jukics.config import PeerConfig
from jukics.links import protocol as p
from jukics.links.transport import PeerTransport

CERT = {"cert_id": "T-9001", "juminhyo_code": "12345678901", "name_kanji": "試験 花子", "name_kana": "シケン ハナコ",
        "birth_date": "1990-04-01", "sex": "2", "my_number": "123456789018", "address": "東京都千代田区1-1",
        "destination_address": "神奈川県伊勢原市1-1", "planned_move_on": "2026-11-01",
        "from_municipality_code": "131016", "to_municipality_code": "142140"}


@pytest.fixture(scope="module")
def both_listeners(tmp_path_factory: pytest.TempPathFactory, lab_pki: Path) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("peer")
    peer = free_port()
    config = write_lab_config(work, lab_pki, free_port(), extra=f"""
[peer_listener]
listen = "127.0.0.1:{peer}"
cert_file = "{lab_pki}/cs.crt"
key_file = "{lab_pki}/cs.key"
client_ca_file = "{lab_pki}/ca.crt"
allowed_peers = {{ pref1 = "pref-14" }}
""")
    services = ServiceProcesses(work, config)
    services.upgrade()
    services.start("intake", "serve")
    services.start("peer", "serve", "--listener", "peer")
    health: list[subprocess.CompletedProcess[str]] = []

    def healthy() -> bool:
        health.append(services.run("health"))
        return health[-1].returncode == 0

    services.wait_until(healthy, "the intake and peer listeners (jukics health)")
    try:
        yield {"port": peer, "pki": lab_pki, "cli": services.cli, "health": health[-1].stdout, "work": work}
    finally:
        services.stop_all()


def transport(listener: dict, leaf: str) -> PeerTransport:
    pki = listener["pki"]
    return PeerTransport(PeerConfig("inbound", f"https://127.0.0.1:{listener['port']}", pki / f"{leaf}.crt",
                                    pki / f"{leaf}.key", pki / "ca.crt", ("localhost",)), timeout=10)


def deliver(t: PeerTransport, seq: int) -> tuple[int, dict]:
    env = p.Envelope("pref-14", "tokurei", seq, f"tokurei-{seq}", p.TENSHUTSU_CERT, "住基法第24条の2", p.utc_stamp(),
                     CERT)
    resp = t.post(p.messages_path("tokurei"), p.encode_batch([env]))
    return resp.status, json.loads(resp.body)


def test_health_probes_both_listeners(both_listeners):
    assert "intake TLS on" in both_listeners["health"] and "peer_listener TLS on" in both_listeners["health"]


def test_the_prefecture_delivers_and_a_replay_is_a_duplicate(both_listeners):
    t = transport(both_listeners, "pref1")
    status, body = deliver(t, 1)
    assert status == 200 and body["results"][0]["status"] == "ack", body
    status, body = deliver(t, 1)
    assert status == 200 and body["results"][0]["status"] == "duplicate", body
    out = subprocess.run([*both_listeners["cli"], "tokurei", "status"], env=_env(), capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and json.loads(out.stdout)["waiting"] == 1, out


def test_a_kizon_certificate_is_refused_on_the_peer_port(both_listeners):
    status, body = deliver(transport(both_listeners, "kizon"), 2)
    assert status == 403 and body["code"] == "E_UNKNOWN_SENDER"
