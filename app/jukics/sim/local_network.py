"""The whole network on loopback, as processes: a CS (gunicorn intake + the delivery worker) and the
simulated 都道府県サーバ and 全国サーバ, with a throwaway PKI made at run time.

For the reliability tests (kill -9 of workers mid-run, a peer down for the middle of a run) and the
relay benchmarks: every part is a real process talking real mutual TLS, so a kill is a real crash.
Nothing leaves 127.0.0.1; everything lives in one work folder that the caller removes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jukics.sim import kizon_client
from jukics.sim.pki import LabPki, make_lab_pki

MUNICIPALITY = "142140"
SENDER = f"cs-{MUNICIPALITY}"
KIZON = "kizon.lab.jukics.example"
APP_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(APP_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass
class LocalNetwork:
    work: Path
    workers: int = 2
    batch_size: int = 500
    pki: LabPki = field(init=False)
    ports: dict[str, int] = field(init=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    logs: dict[str, IO[str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.pki = make_lab_pki(self.work / "pki", {
            "cs1": ["cs1", "127.0.0.1"], "kizon": [KIZON], "pref1": ["pref1", "127.0.0.1"],
            "nat1": ["nat1", "127.0.0.1"],
        }, bad_for="pref1")
        self.ports = {name: free_port() for name in ("intake", "pref", "pref_admin", "nat", "nat_admin")}
        self._write_configs()

    # ---- configuration -------------------------------------------------------------------------
    def _write_configs(self) -> None:
        w, pki, p = self.work, self.pki, self.ports
        cs1 = pki.leaf("cs1")
        peer = (f'cert_file = "{cs1.cert}"\nkey_file = "{cs1.key}"\ntrust_file = "{pki.ca}"\n'
                f'peer_names = ["pref1"]\n')
        (w / "jukics.toml").write_text(f"""
[cs]
municipality_code = "{MUNICIPALITY}"
environment = "lab"
[database]
url = "sqlite:///{w}/cs/jukics.db"
[keystore]
backend = "dev"
dev_secret_file = "{w}/cs/keys/dev-secret"
[intake]
listen = "127.0.0.1:{p['intake']}"
cert_file = "{cs1.cert}"
key_file = "{cs1.key}"
client_ca_file = "{pki.ca}"
allowed_clients = ["{KIZON}"]
[server]
workers = {self.workers}
[links]
batch_size = {self.batch_size}
poll_interval_seconds = 0.005
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.5
timeout_seconds = 5
[links.legal_basis]
"prefecture.update_notice" = "住民基本台帳法第30条の6"
"fuhyo.fuhyo_notice" = "住民基本台帳法第30条の41"
[links.peers.prefecture]
url = "https://127.0.0.1:{p['pref']}"
{peer}
[links.peers.fuhyo]
url = "https://127.0.0.1:{p['pref']}"
{peer}
""", encoding="utf-8")
        for role, name, port, admin in (("prefecture", "pref1", p["pref"], p["pref_admin"]),
                                        ("national", "nat1", p["nat"], p["nat_admin"])):
            leaf = pki.leaf(name)
            wrong = pki.leaf(f"{name}-wrongca") if name == "pref1" else None
            extra = (f'wrong_cert_file = "{wrong.cert}"\nwrong_key_file = "{wrong.key}"\n' if wrong else "")
            forward = (f'[sim.national]\nurl = "https://127.0.0.1:{p["nat"]}"\npeer_name = "nat1"\n'
                       if role == "prefecture" else "")
            (w / f"{role}.toml").write_text(f"""
[sim]
role = "{role}"
name = "{name}"
sender_id = "{'pref-14' if role == 'prefecture' else 'nat'}"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
cert_file = "{leaf.cert}"
key_file = "{leaf.key}"
ca_file = "{pki.ca}"
{extra}database = "{w}/{role}/{role}.sqlite"
prefecture_code = "14"
[sim.senders]
"cs1" = "{SENDER}"
"pref1" = "pref-14"
{forward}""", encoding="utf-8")
            (w / role).mkdir(exist_ok=True)

    # ---- processes -----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        log = self.logs.get(name) or (self.work / f"{name}.log").open("a", encoding="utf-8")
        self.logs[name] = log
        # argv is built here from constants and paths of this work folder: no shell, no outside input
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=self.work)  # noqa: S603
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-n:] if path.exists() else ""

    def start_sim(self, role: str) -> None:
        port = self.ports["pref" if role == "prefecture" else "nat"]
        proc = self._spawn(role, [sys.executable, "-m", "jukics.sim.peer_cli", "run",
                                  "--config", str(self.work / f"{role}.toml")])
        if not _wait_port(port, 30, proc):
            raise RuntimeError(f"the {role} sim did not start:\n{self.log_tail(role)}")

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def cs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # fixed argv (this package's CLI), no shell
        out = subprocess.run([sys.executable, "-m", "jukics", "--config", str(self.work / "jukics.toml"), *args],  # noqa: S603
                             capture_output=True, text=True, env=_env(), timeout=120, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"jukics {' '.join(args)}: rc {out.returncode}: {out.stderr[-2000:]}")
        return out

    def start_cs(self) -> None:
        self.cs("db", "upgrade")
        proc = self._spawn("gunicorn", [sys.executable, "-m", "jukics", "--config", str(self.work / "jukics.toml"),
                                        "serve"])
        if not _wait_port(self.ports["intake"], 60, proc):
            raise RuntimeError(f"the CS did not start:\n{self.log_tail('gunicorn')}")

    def start_links(self) -> None:
        self._spawn("links", [sys.executable, "-m", "jukics", "--config", str(self.work / "jukics.toml"),
                              "links", "run", "--tick", "1"])

    def gunicorn_workers(self) -> list[int]:
        master = self.procs["gunicorn"].pid
        children = Path(f"/proc/{master}/task/{master}/children")
        return [int(x) for x in children.read_text().split()] if children.exists() else []

    def start(self) -> LocalNetwork:
        self.start_sim("national")
        self.start_sim("prefecture")
        self.start_cs()
        self.start_links()
        return self

    def close(self) -> None:
        for name in ("links", "gunicorn", "prefecture", "national"):
            self.stop(name)
        for log in self.logs.values():
            log.close()

    def __enter__(self) -> LocalNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the 既存住基 side ---------------------------------------------------------------------
    def post(self, items: list[Any], *, retries: int = 100) -> dict[str, Any]:
        """Post one intake batch; on a crash of the serving worker (connection reset) post it again:
        the intake is idempotent on 依頼管理番号, so a retry applies nothing twice."""
        kizon = self.pki.leaf("kizon")
        ctx = kizon_client.client_context(str(kizon.cert), str(kizon.key), str(self.pki.ca))
        for attempt in range(retries):
            try:
                status, result = kizon_client.post_batch(ctx, "127.0.0.1", self.ports["intake"], items, timeout=60)
            except (OSError, ValueError, kizon_client.http.client.HTTPException):
                time.sleep(min(0.05 * (attempt + 1), 0.5))
                continue
            if status in (500, 502, 503):
                time.sleep(0.1)
                continue
            return {"status": status, **result}
        raise RuntimeError(f"intake batch not accepted after {retries} attempts")

    # ---- the peers' side -----------------------------------------------------------------------
    def sim(self, role: str, *args: str) -> str:
        admin = self.ports["pref_admin" if role == "prefecture" else "nat_admin"]
        out = subprocess.run([sys.executable, "-m", "jukics.sim.peer_cli", *args[:1], "--admin",  # noqa: S603
                              f"127.0.0.1:{admin}", *args[1:]],
                             capture_output=True, text=True, env=_env(), timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"jukics-sim {' '.join(args)}: rc {out.returncode}: {out.stderr[-2000:]}")
        return out.stdout

    def received(self, role: str = "prefecture", link: str = "prefecture", sender: str = SENDER) -> list[dict]:
        text = self.sim(role, "received", "--sender", sender, "--link", link)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def link_status(self) -> dict[str, dict[str, Any]]:
        return {r["link"]: r for r in json.loads(self.cs("links", "status", check=False).stdout)}

    def pending(self) -> int:
        return sum(int(r["pending"]) for r in self.link_status().values())


def batches_of_whole_residents(per_resident: Iterable[list[dict[str, Any]]], size: int = 1000) -> list[list[dict]]:
    """Intake batches of at most ``size`` items that never split one resident's items."""
    out: list[list[dict]] = []
    batch: list[dict] = []
    for items in per_resident:
        if batch and len(batch) + len(items) > size:
            out.append(batch)
            batch = []
        batch += items
    if batch:
        out.append(batch)
    return out
