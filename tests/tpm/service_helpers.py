"""Helpers for the TPM tests that run the real `jukics` CLI and listeners against swtpm."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cli:
    """`jukics --config <config> ...` with the TPM's environment (TCTI, D-Bus) and the repo's app."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = dict(env, PYTHONPATH=str(ROOT / "app"))

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jukics", "--config", str(self.config), *args],
                              capture_output=True, text=True, env=self.env, timeout=120, check=False)
