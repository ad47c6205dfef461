"""A real jukics service under gunicorn with TLS, on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


def write_lab_config(work: Path, pki: Path, intake_port: int, *, workers: int = 1, extra: str = "",
                     kizon: str = "kizon.lab.jukics.example") -> Path:
    """jukics.toml for a lab service in `work`: intake with the lab PKI's cs.crt, plus `extra` sections."""
    config = work / "jukics.toml"
    config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "lab"
[database]
url = "sqlite:///{work}/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{work}/keys/dev-secret"
[intake]
listen = "127.0.0.1:{intake_port}"
cert_file = "{pki}/cs.crt"
key_file = "{pki}/cs.key"
client_ca_file = "{pki}/ca.crt"
allowed_clients = ["{kizon}"]
[server]
workers = {workers}
{extra}
""", encoding="utf-8")
    return config


@dataclass
class ServiceProcesses:
    """`jukics --config <config> ...` processes (gunicorn listeners, the metrics listener), one log each."""

    work: Path
    config: Path
    env: dict[str, str] = field(default_factory=_env)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def cli(self) -> list[str]:
        return [sys.executable, "-m", "jukics", "--config", str(self.config)]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli, *args], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=120, check=False)

    def upgrade(self) -> None:
        result = self.run("db", "upgrade")
        assert result.returncode == 0, result.stderr

    def start(self, name: str, *args: str) -> None:
        log = (self.work / f"{name}.log").open("a")
        self.procs[name] = subprocess.Popen([*self.cli, *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=self.work)
        log.close()  # the child holds its own descriptor

    def logs(self) -> str:
        return "".join(f"--- {name}.log\n" + (self.work / f"{name}.log").read_text()[-1500:] for name in self.procs)

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll `check` (OSError counts as not yet) until it holds; fail with the logs if a process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except OSError:
                pass
            if any(proc.poll() is not None for proc in self.procs.values()):
                break
            time.sleep(0.3)
        pytest.fail(f"{what} did not come up: {self.logs()}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


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
    config = write_lab_config(work, tls, port, workers=2)
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
