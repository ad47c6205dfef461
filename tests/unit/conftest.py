"""Shared set-up for unit tests that drive the `jukics` CLI against a throwaway development config."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

# Passes the password policy; tests that need a different one pass it to add_operator.
OPERATOR_PASSWORD = "Counter-Staff-2026"


@dataclass
class DevCli:
    """`jukics --config <dev config> ...` with stdin fed per call; the database is migrated."""

    config: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    @property
    def base(self) -> list[str]:
        return ["--config", str(self.config)]

    def __call__(self, *args: str, stdin: str | None = None) -> int:
        from jukics.cli.main import main as cli_main

        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return cli_main([*self.base, *args])

    def add_operator(self, user_id: str, *, role: str = "counter", expires: str = "2099-03-31",
                     password: str = OPERATOR_PASSWORD, extra: tuple[str, ...] = ()) -> pyotp.TOTP:
        """Add an operator through the CLI; returns its TOTP from the printed provisioning URI."""
        self.capsys.readouterr()
        rc = self("operator", "add", user_id, "--department", "市民課", "--role", role, "--expires", expires,
                  "--actor", "admin1", *extra, stdin=password + "\n")
        assert rc == 0, self.capsys.readouterr().err
        out = self.capsys.readouterr().out
        totp = pyotp.parse_uri(json.loads(out.splitlines()[-1])["provisioning_uri"])
        assert isinstance(totp, pyotp.TOTP)
        return totp


@pytest.fixture
def dev_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Callable[..., DevCli]:
    """Factory: dev_cli(extra_toml="", cert_file="/x") writes jukics.toml, runs `db upgrade`."""

    def make(extra_toml: str = "", cert_file: str = "/x") -> DevCli:
        config = tmp_path / "jukics.toml"
        config.write_text(f"""
[cs]
municipality_code = "142140"
environment = "development"
[database]
url = "sqlite:///{tmp_path}/j.db"
[keystore]
backend = "dev"
dev_secret_file = "{tmp_path}/secret"
[intake]
listen = "127.0.0.1:8443"
cert_file = "{cert_file}"
key_file = "/x"
client_ca_file = "/x"
allowed_clients = ["kizon"]
{extra_toml}
""")
        cli = DevCli(config, monkeypatch, capsys)
        assert cli("db", "upgrade") == 0
        return cli

    return make
