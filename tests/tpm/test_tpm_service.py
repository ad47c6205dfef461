"""The service on the TPM key store: a real gunicorn whose workers unseal the data key through
tpm2-abrmd, audit checkpoints signed by the TPM, and refusals when the TPM cannot be used.

The TLS key here is a software key: Debian 12's tpm2-openssl (1.1) cannot serve TLS with a TPM key
(jukics.keystore.provider refuses it). TLS with TPM-resident keys is proved on Debian 13 hosts, in
the molecule scenarios.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from service_helpers import Cli, free_port
from softtpm import set_lockout

from jukics.sim.kizon_client import client_context, post_batch
from jukics.sim.residents import generate_residents, resident_intake_items

ROOT = Path(__file__).resolve().parents[2]



def _write_config(work: Path, pki: Path, tcti: str, port: int) -> Path:
    config = work / "jukics.toml"
    config.write_text(
        f"""
[cs]
municipality_code = "142140"
environment = "production"
[database]
url = "sqlite:///{work}/jukics.db"
[keystore]
backend = "tpm"
tcti = "{tcti}"
state_dir = "{work}/keystore"
[intake]
listen = "127.0.0.1:{port}"
cert_file = "{pki}/cs.crt"
key_file = "{pki}/cs.key"
client_ca_file = "{pki}/ca.crt"
allowed_clients = ["kizon.lab.jukics.example"]
[server]
workers = 2
""",
        encoding="utf-8",
    )
    return config




@pytest.fixture
def tpm_service(tmp_path: Path, pki: Path, abrmd) -> Iterator[tuple[Cli, int, Path]]:
    port = free_port()
    cli = Cli(_write_config(tmp_path, pki, abrmd.tcti, port), abrmd.env)
    unmigrated = cli("keystore", "provision")
    assert unmigrated.returncode == 2 and "jukics db upgrade" in unmigrated.stderr
    assert cli("db", "upgrade").returncode == 0
    first = cli("keystore", "provision")
    assert first.returncode == 0, first.stderr
    again = cli("keystore", "provision")
    assert again.returncode == 3 and "already provisioned" in again.stdout
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jukics", "--config", str(cli.config), "serve"],
                            stdout=log, stderr=subprocess.STDOUT, env=cli.env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while cli("health").returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("service did not start: " + (tmp_path / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.3)
    try:
        yield cli, port, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_workers_unseal_the_data_key_from_the_tpm_and_checkpoints_are_signed(tpm_service, pki):
    cli, port, work = tpm_service
    status = json.loads(cli("keystore", "status", "--json").stdout)
    assert status["usable"] and status["backend"] == "tpm" and status["in_lockout"] is False
    residents = list(generate_residents(40, seed=7, municipality_code="142140", today=dt.date(2026, 11, 1)))
    items = [item for r in residents for item in resident_intake_items(r)]
    ctx = client_context(str(pki / "kizon.crt"), str(pki / "kizon.key"), str(pki / "ca.crt"))
    status, body = post_batch(ctx, "127.0.0.1", port, items)
    assert status == 200 and body["applied"] == len(items), body
    # Stored encrypted under a key derived from the TPM-sealed secret: no name, no 個人番号 in the files.
    raw = b"".join(p.read_bytes() for p in work.glob("jukics.db*"))
    for r in residents:
        assert str(r["name_kanji"]).encode() not in raw
        assert str(r["my_number"]).encode() not in raw

    cp = cli("audit", "checkpoint")
    assert cp.returncode == 0 and "signed" in cp.stdout and "unsigned" not in cp.stdout, cp.stderr
    assert cli("audit", "checkpoint").returncode in (0, 3)
    verified = cli("audit", "verify", "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["signed_checkpoints"] >= 1, verified.stdout
    # An auditor's own copy of the public key verifies the same.
    offbox = cli("audit", "verify", "--public-key", str(work / "keystore" / "checkpoint.pub.pem"))
    assert offbox.returncode == 0, offbox.stdout + offbox.stderr


def test_resigning_or_stripping_a_checkpoint_is_detected(tpm_service):
    cli, _, work = tpm_service
    assert cli("audit", "checkpoint").returncode in (0, 3)
    db = sqlite3.connect(work / "jukics.db")
    seq, digest = db.execute("SELECT seq, digest FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    # Someone who rewrote history re-signs the checkpoint with a key of their own.
    forged = ec.generate_private_key(ec.SECP256R1()).sign(bytes(digest), ec.ECDSA(Prehashed(hashes.SHA256())))
    db.execute("UPDATE audit_checkpoints SET signature = ? WHERE seq = ?", (forged, seq))
    db.commit()
    result = cli("audit", "verify")
    assert result.returncode == 1 and "signature does not verify" in result.stdout + result.stderr
    db.execute("UPDATE audit_checkpoints SET signature = NULL WHERE seq = ?", (seq,))
    db.commit()
    db.close()
    stripped = cli("audit", "verify")
    assert stripped.returncode == 1 and "not signed" in stripped.stdout + stripped.stderr


def test_the_service_refuses_to_start_without_a_usable_tpm(tmp_path, pki, swtpm):
    port = free_port()
    env = dict(os.environ)
    cli = Cli(_write_config(tmp_path, pki, f"swtpm:path={tmp_path}/no-such-tpm", port), env)
    assert cli("db", "upgrade").returncode == 0
    served = cli("serve")
    assert served.returncode == 1
    assert "refusing to start: E_KEYSTORE_UNAVAILABLE" in served.stderr
    assert cli("keystore", "status").returncode == 1

    # Provisioned on one TPM, then the TPM goes into dictionary-attack lockout.
    cli = Cli(_write_config(tmp_path, pki, swtpm.tcti, port), env)
    assert cli("keystore", "provision").returncode == 0
    db = sqlite3.connect(tmp_path / "jukics.db")
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'keystore.provision'").fetchone() == (1,)
    db.close()
    set_lockout(swtpm.tcti, 0)
    served = cli("serve")
    assert served.returncode == 1 and "refusing to start: E_KEYSTORE_LOCKED_OUT" in served.stderr
    status = json.loads(cli("keystore", "status", "--json").stdout)
    assert status["in_lockout"] is True and status["usable"] is False
