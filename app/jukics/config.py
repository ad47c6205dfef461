"""Service configuration: one TOML file, validated at start with clear errors.

Every problem is reported at once (not the first only), each as `<section>.<key>: <what is wrong>`,
under the stable code E_CONFIG. `jukics config check` prints them and exits 2; the service refuses to
start with the same text.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENVIRONMENTS = ("production", "lab", "development")
KEYSTORE_BACKENDS = ("tpm", "dev")


class ConfigError(Exception):
    """The configuration cannot be used. `problems` lists every issue found."""

    code = "E_CONFIG"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Listener:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IntakeConfig:
    listen: Listener
    cert_file: Path
    key_file: Path
    client_ca_file: Path
    allowed_clients: tuple[str, ...]


@dataclass(frozen=True)
class TlsIdentityConfig:
    name: str
    role: str
    subject_names: tuple[str, ...]
    peer_names: tuple[str, ...]
    peer_endpoint: str | None


@dataclass(frozen=True)
class TlsConfig:
    dir: Path
    metrics_file: Path | None
    identities: Mapping[str, TlsIdentityConfig]


def _tls_config(section: Any, problems: list[str]) -> TlsConfig | None:
    """``[tls]``: the certificate directories and the TLS identities (optional section)."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        problems.append("tls: must be a table")
        return None
    tls_dir = section.get("dir", "/etc/jukics/tls")
    if not isinstance(tls_dir, str) or not tls_dir.startswith("/"):
        problems.append("tls.dir: must be an absolute path")
        tls_dir = "/"
    metrics = section.get("metrics_file")
    if metrics is not None and (not isinstance(metrics, str) or not metrics.startswith("/")):
        problems.append("tls.metrics_file: must be an absolute path")
        metrics = None
    identities: dict[str, TlsIdentityConfig] = {}
    raw = section.get("identities", {})
    if not isinstance(raw, Mapping):
        problems.append("tls.identities: must be a table of identities")
        raw = {}
    for name, ident in raw.items():
        where = f"tls.identities.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
            problems.append(f"{where}: the name must match [a-z][a-z0-9_-]{{0,31}}")
            continue
        if not isinstance(ident, Mapping):
            problems.append(f"{where}: must be a table")
            continue
        role = ident.get("role")
        if role not in ("server", "client"):
            problems.append(f"{where}.role: must be server or client")
        names = ident.get("subject_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            problems.append(f"{where}.subject_names: must be a non-empty list of names (DNS or IP)")
            names = []
        peers = ident.get("peer_names", [])
        if not isinstance(peers, list) or not all(isinstance(n, str) and n for n in peers):
            problems.append(f"{where}.peer_names: must be a list of names")
            peers = []
        endpoint = ident.get("peer_endpoint")
        if endpoint is not None and (not isinstance(endpoint, str) or not re.fullmatch(r".+:\d{1,5}", endpoint)):
            problems.append(f"{where}.peer_endpoint: must be HOST:PORT")
            endpoint = None
        identities[name] = TlsIdentityConfig(name, str(role), tuple(names), tuple(peers), endpoint)
    return TlsConfig(Path(tls_dir), Path(metrics) if metrics else None, identities)


@dataclass(frozen=True)
class Config:
    municipality_code: str
    environment: str
    sender_id: str
    database_url: str
    keystore: Mapping[str, Any]
    intake: IntakeConfig
    workers: int
    max_body_bytes: int
    metrics_listen: Listener
    juminhyo_validator: str
    tls: TlsConfig | None = None
    source: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


class _Reader:
    """Reads typed values out of the parsed TOML, collecting problems instead of stopping."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: list[str] = []

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            self.problems.append(f"{name}: must be a table")
            return {}
        return value

    def get(self, section: str, key: str, kind: type, default: Any = ...) -> Any:
        sec = self.section(section)
        if key not in sec:
            if default is ...:
                self.problems.append(f"{section}.{key}: missing")
                return None
            return default
        value = sec[key]
        # bool is an int in Python; a port of `true` is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problems.append(f"{section}.{key}: must be {kind.__name__}, got {type(value).__name__}")
            return None
        return value

    def listener(self, section: str, key: str, default: str | None = None) -> Listener | None:
        raw = self.get(section, key, str, default if default is not None else ...)
        if raw is None:
            return None
        host, sep, port_text = raw.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
            if not sep or not 1 <= port <= 65535:
                raise ValueError
            ipaddress.ip_address(host)
        except ValueError:
            self.problems.append(f"{section}.{key}: must be ADDRESS:PORT with an IP address and a port 1-65535")
            return None
        return Listener(host, port)


def _check_municipality_code(code: str) -> bool:
    # 全国地方公共団体コード: 5 digits + check digit (weights 6..2, 11 - sum mod 11, last digit).
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(code[:5], (6, 5, 4, 3, 2), strict=True))
    return (11 - total % 11) % 10 == int(code[5])


def _tpm_keystore_problems(keystore: Mapping[str, Any]) -> list[str]:
    problems = []
    tcti = keystore.get("tcti")
    if not isinstance(tcti, str) or not tcti:
        problems.append("keystore.tcti: missing (e.g. 'device:/dev/tpmrm0' or 'tabrmd' for swtpm through tpm2-abrmd)")
    elif tcti.split(":", 1)[0] not in ("device", "tabrmd", "swtpm", "mssim"):
        problems.append("keystore.tcti: must start with device, tabrmd or swtpm")
    state_dir = keystore.get("state_dir", "/var/lib/jukics/keystore")
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        problems.append("keystore.state_dir: must be an absolute path")
    policy = keystore.get("pcr_policy", "")
    if not isinstance(policy, str):
        problems.append("keystore.pcr_policy: must be a string like 'sha256:0,7' (or empty)")
    elif policy:
        from jukics.keystore.base import KeyStoreError, parse_pcr_policy

        try:
            parse_pcr_policy(policy)
        except KeyStoreError as exc:
            problems.append(exc.message)
    handle = keystore.get("srk_handle", "0x81000001")
    try:
        if not isinstance(handle, str) or not 0x81000000 <= int(handle, 16) <= 0x817FFFFF:
            raise ValueError
    except ValueError:
        problems.append("keystore.srk_handle: must be a persistent owner handle 0x81000000-0x817fffff (as a string)")
    unknown = set(keystore) - {"backend", "tcti", "state_dir", "pcr_policy", "srk_handle"}
    if unknown:
        problems.append(f"keystore: unknown keys for the tpm backend: {', '.join(sorted(unknown))}")
    return problems


def parse_config(data: Mapping[str, Any], source: Path | None = None) -> Config:
    r = _Reader(data)
    known = {"cs", "database", "keystore", "intake", "server", "metrics", "validation", "links", "audit", "tls"}
    for name in data:
        if name not in known:
            r.problems.append(f"{name}: unknown section (known: {', '.join(sorted(known))})")

    code = r.get("cs", "municipality_code", str)
    if code is not None and not _check_municipality_code(code):
        r.problems.append("cs.municipality_code: must be a 6-digit 全国地方公共団体コード with a valid check digit")
    env = r.get("cs", "environment", str, "production")
    if env is not None and env not in ENVIRONMENTS:
        r.problems.append(f"cs.environment: must be one of {', '.join(ENVIRONMENTS)}")
    sender = r.get("cs", "sender_id", str, f"cs-{code}" if code else "cs")

    url = r.get("database", "url", str)
    if url is not None and not (url.startswith("sqlite:///") or url.startswith("postgresql")):
        r.problems.append("database.url: must be a sqlite:/// or postgresql+psycopg:// URL")

    keystore = dict(r.section("keystore"))
    backend = keystore.get("backend")
    if backend not in KEYSTORE_BACKENDS:
        r.problems.append(f"keystore.backend: must be one of {', '.join(KEYSTORE_BACKENDS)}")
    elif backend == "dev":
        if env == "production":
            # The development key source keeps the data key in a plain file: never in production.
            r.problems.append("keystore.backend: 'dev' keeps the data key in a file and is refused in production")
        if not isinstance(keystore.get("dev_secret_file"), str):
            r.problems.append("keystore.dev_secret_file: missing (required for the dev backend)")
    elif backend == "tpm":
        r.problems.extend(_tpm_keystore_problems(keystore))

    listen = r.listener("intake", "listen")
    files = {k: r.get("intake", k, str) for k in ("cert_file", "key_file", "client_ca_file")}
    clients = r.get("intake", "allowed_clients", list)
    if clients is not None and (not clients or not all(isinstance(c, str) and c for c in clients)):
        r.problems.append("intake.allowed_clients: must be a non-empty list of client identities (certificate SANs)")

    workers = r.get("server", "workers", int, 2)
    if workers is not None and not 1 <= workers <= 64:
        r.problems.append("server.workers: must be between 1 and 64")
    max_body = r.get("server", "max_body_bytes", int, 8 * 1024 * 1024)
    if max_body is not None and not 1024 <= max_body <= 256 * 1024 * 1024:
        r.problems.append("server.max_body_bytes: must be between 1 KiB and 256 MiB")
    metrics = r.listener("metrics", "listen", "127.0.0.1:9464")
    validator = r.get("validation", "juminhyo_validator", str, "digits-only")
    tls = _tls_config(data.get("tls"), r.problems)

    if r.problems:
        raise ConfigError(r.problems)
    assert listen is not None and metrics is not None and clients is not None  # for the type checker
    return Config(
        municipality_code=code,
        environment=env,
        sender_id=sender,
        database_url=url,
        keystore=keystore,
        intake=IntakeConfig(
            listen=listen,
            cert_file=Path(files["cert_file"]),
            key_file=Path(files["key_file"]),
            client_ca_file=Path(files["client_ca_file"]),
            allowed_clients=tuple(clients),
        ),
        workers=workers,
        max_body_bytes=max_body,
        metrics_listen=metrics,
        juminhyo_validator=validator,
        tls=tls,
        source=source,
        raw=data,
    )


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"]) from None
    except PermissionError:
        raise ConfigError([f"{p}: permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from None
    return parse_config(data, source=p)


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names (existence, readability); for `config check`."""
    problems = []
    for name in ("cert_file", "key_file", "client_ca_file"):
        path: Path = getattr(config.intake, name)
        if not path.is_file():
            problems.append(f"intake.{name}: {path} does not exist")
    return problems
