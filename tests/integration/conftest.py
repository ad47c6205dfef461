"""A real jukics service under gunicorn with TLS, on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    port: int
    pki: Path
    config: Path
    workdir: Path
    process: subprocess.Popen

    def jukics(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jukics", "--config", str(self.config), *args],
            capture_output=True, text=True, env=_env(), timeout=60, check=False,
        )


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "app"))


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(ROOT / "scripts/lab-pki.sh"), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def running_service(tmp_path_factory: pytest.TempPathFactory, lab_pki: Path) -> Iterator[RunningService]:
    work = tmp_path_factory.mktemp("svc")
    tls = work / "tls"
    tls.mkdir()
    for name in ("cs.crt", "cs.key", "ca.crt"):
        (tls / name).write_bytes((lab_pki / name).read_bytes())
    port = free_port()
    config = work / "jukics.toml"
    config.write_text(
        f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{work}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{work}/keys/dev-secret"
[intake]
listen = "127.0.0.1:{port}"
cert_file = "{tls}/cs.crt"
key_file = "{tls}/cs.key"
client_ca_file = "{tls}/ca.crt"
allowed_clients = ["kizon.lab.jukics.example"]
[server]
workers = 2
""",
        encoding="utf-8",
    )
    upgrade = subprocess.run([sys.executable, "-m", "jukics", "--config", str(config), "db", "upgrade"],
                             capture_output=True, text=True, env=_env(), check=False)
    assert upgrade.returncode == 0, upgrade.stderr
    log = (work / "gunicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jukics", "--config", str(config), "serve"],
                            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=work)
    svc = RunningService(port=port, pki=lab_pki, config=config, workdir=work, process=proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if svc.jukics("health").returncode == 0:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    else:
        proc.terminate()
        pytest.fail("service did not become healthy: " + (work / "gunicorn.log").read_text()[-2000:])
    if proc.poll() is not None:
        pytest.fail("gunicorn exited: " + (work / "gunicorn.log").read_text()[-2000:])
    yield svc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
