"""Service configuration: one TOML file, validated at start with clear errors.

Every problem is reported at once (not the first only), each as `<section>.<key>: <what is wrong>`,
under the stable code E_CONFIG. `jukics config check` prints them and exits 2; the service refuses to
start with the same text.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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
class PeerListenerConfig:
    """The peer-facing listener (住基ネット side, F6 転出証明書情報 from the prefecture): its own port
    and server certificate, a trust bundle of the peers' CA, never the intake's."""

    listen: Listener
    cert_file: Path
    key_file: Path
    client_ca_file: Path
    workers: int


@dataclass(frozen=True)
class TerminalListenerConfig:
    """The counter-terminal listener (統合端末): its own port and server certificate (key in the TPM),
    the terminal CA, the terminals allowed (certificate SANs), sessions, result cap, search rule and
    the purpose codes every search must give."""

    listen: Listener
    cert_file: Path
    key_file: Path
    client_ca_file: Path
    workers: int
    allowed_terminals: tuple[str, ...]
    session_idle_minutes: int = 15
    session_absolute_minutes: int = 480
    result_cap: int = 50
    search_rule: str = "name_plus"  # or "two_of_four"
    purposes: Mapping[str, str] = field(default_factory=dict)


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


#: The message type each outbox link carries (jukics.links.protocol).
LINK_MESSAGE_TYPES: Final = {"prefecture": "update_notice", "fuhyo": "fuhyo_notice",
                              # F9 送付先情報 and F10 card events, to the 個人番号カード管理システム
                              "sofusaki": "sofusaki", "card": "card_event",
                              # F6 転入通知情報 back to the 転出地 CS, through the prefecture
                              "tokurei": "tennyu_notice"}


@dataclass(frozen=True)
class PeerConfig:
    """One peer link: where it is, our client certificate, the peer's trust bundle and pinned names."""

    link: str
    url: str
    cert_file: Path
    key_file: Path
    trust_file: Path
    peer_names: tuple[str, ...]
    crl_file: Path | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.removeprefix("https://").split("/", 1)[0]
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class LinksConfig:
    peers: Mapping[str, PeerConfig]
    legal_basis: Mapping[tuple[str, str], str]
    batch_size: int = 500
    poll_interval_seconds: float = 0.02
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 10.0
    metrics_file: Path | None = None


def _number(section: Mapping[str, Any], key: str, default: float, low: float, high: float,
            problems: list[str], where: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        problems.append(f"{where}.{key}: must be a number from {low} to {high}")
        return default
    return float(value)


def _links_config(section: Any, tls: TlsConfig | None, problems: list[str]) -> LinksConfig:
    """``[links]``: the peers of the delivery worker and the legal-basis table (optional section)."""
    if section is None:
        return LinksConfig(peers={}, legal_basis={})
    if not isinstance(section, Mapping):
        problems.append("links: must be a table")
        return LinksConfig(peers={}, legal_basis={})
    known = {"peers", "legal_basis", "batch_size", "poll_interval_seconds", "backoff_initial_seconds",
             "backoff_max_seconds", "timeout_seconds", "metrics_file"}
    for key in sorted(set(section) - known):
        problems.append(f"links.{key}: unknown key (known: {', '.join(sorted(known))})")
    basis: dict[tuple[str, str], str] = {}
    raw_basis = section.get("legal_basis", {})
    if not isinstance(raw_basis, Mapping):
        problems.append('links.legal_basis: must be a table of "destination.type" = "legal basis"')
        raw_basis = {}
    for pair, text in raw_basis.items():
        dest, _, mtype = pair.partition(".")
        if not dest or not mtype or not isinstance(text, str) or not text.strip():
            problems.append(f'links.legal_basis."{pair}": must be "destination.type" = "the legal basis (法令の条項)"')
            continue
        basis[(dest, mtype)] = text.strip()
    peers: dict[str, PeerConfig] = {}
    raw_peers = section.get("peers", {})
    if not isinstance(raw_peers, Mapping):
        problems.append("links.peers: must be a table of peers")
        raw_peers = {}
    for link, peer in raw_peers.items():
        where = f"links.peers.{link}"
        if link not in LINK_MESSAGE_TYPES:
            problems.append(f"{where}: unknown link (known: {', '.join(LINK_MESSAGE_TYPES)})")
            continue
        if not isinstance(peer, Mapping):
            problems.append(f"{where}: must be a table")
            continue
        for key in sorted(set(peer) - {"url", "identity", "cert_file", "key_file", "trust_file", "peer_names",
                                       "crl_file"}):
            problems.append(f"{where}.{key}: unknown key")
        url = peer.get("url")
        if not isinstance(url, str) or not re.fullmatch(r"https://[^/\s]+:\d{1,5}", url):
            problems.append(f"{where}.url: must be https://HOST:PORT (TLS only, no path)")
            continue
        ident_name = peer.get("identity")
        files: dict[str, Any] = {k: peer.get(k) for k in ("cert_file", "key_file", "trust_file")}
        names = peer.get("peer_names")
        if ident_name is not None:
            ident = tls.identities.get(ident_name) if tls else None
            if ident is None or ident.role != "client":
                problems.append(f"{where}.identity: {ident_name!r} is not a client identity of [tls.identities]")
                continue
            assert tls is not None
            base = tls.dir / ident.name
            files = {"cert_file": str(base / "current/cert.pem"), "key_file": str(base / "current/key.pem"),
                     "trust_file": str(base / "trust.pem")}
            names = names if names is not None else list(ident.peer_names)
        bad = [k for k, v in files.items() if not isinstance(v, str) or not v.startswith("/")]
        if bad:
            problems.append(f"{where}: needs identity = a [tls.identities] client, or absolute {', '.join(bad)}")
            continue
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            problems.append(f"{where}.peer_names: the peer's expected names (SAN) must be pinned: a non-empty list")
            continue
        crl = peer.get("crl_file")
        if crl is not None and (not isinstance(crl, str) or not crl.startswith("/")):
            problems.append(f"{where}.crl_file: must be an absolute path")
            crl = None
        mtype = LINK_MESSAGE_TYPES[link]
        if (link, mtype) not in basis:
            problems.append(f'{where}: no legal basis for ({link}, {mtype}); add links.legal_basis."{link}.{mtype}"')
        peers[link] = PeerConfig(link, url, Path(files["cert_file"]), Path(files["key_file"]),
                                 Path(files["trust_file"]), tuple(names), Path(crl) if crl else None)
    metrics = section.get("metrics_file")
    if metrics is not None and (not isinstance(metrics, str) or not metrics.startswith("/")):
        problems.append("links.metrics_file: must be an absolute path")
        metrics = None
    batch = section.get("batch_size", 500)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1000:
        problems.append("links.batch_size: must be an integer from 1 to 1000")
        batch = 500
    return LinksConfig(
        peers=peers, legal_basis=basis, batch_size=batch,
        poll_interval_seconds=_number(section, "poll_interval_seconds", 0.02, 0.001, 10, problems, "links"),
        backoff_initial_seconds=_number(section, "backoff_initial_seconds", 0.5, 0.01, 60, problems, "links"),
        backoff_max_seconds=_number(section, "backoff_max_seconds", 30.0, 0.1, 3600, problems, "links"),
        timeout_seconds=_number(section, "timeout_seconds", 10.0, 0.1, 300, problems, "links"),
        metrics_file=Path(metrics) if metrics else None,
    )


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
    links: LinksConfig = field(default_factory=lambda: LinksConfig(peers={}, legal_basis={}))
    extra_closed_days: tuple[dt.date, ...] = ()
    tokurei_unclaimed_days: int = 30
    #: the peer-facing listener: client certificate SAN -> sender id of the peers that may deliver here
    peer_senders: Mapping[str, str] = field(default_factory=dict)
    peer_listener: PeerListenerConfig | None = None
    terminal_listener: TerminalListenerConfig | None = None
    duties: Any = None  # jukics.auth.rbac.Duties (the [roles] table, or the default)
    #: [exports] recipients: name -> age X25519 public keys an export is encrypted to (jukics.exports)
    export_recipients: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: [exports] media_dir: where the terminal API writes exports (the mounted medium); None: no API exports
    export_media_dir: Path | None = None
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
    known = {"cs", "database", "keystore", "intake", "server", "metrics", "validation", "links", "audit", "tls",
             "calendar", "tokurei", "peer_listener", "roles",
             "terminal_listener", "exports", "backup"}
    for name in data:
        if name not in known:
            r.problems.append(f"{name}: unknown section (known: {', '.join(sorted(known))})")

    if "backup" in data:
        # [backup] is read by jukics.backup.archive.BackupSettings; validated here so `config check` sees it
        from jukics.backup.archive import BackupError, BackupSettings

        try:
            BackupSettings.from_config(data)
        except BackupError as exc:
            r.problems.append(exc.message)

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
    links = _links_config(data.get("links"), tls, r.problems)
    closed: list[dt.date] = []
    for day in r.get("calendar", "extra_closed_days", list, []) or []:
        try:
            closed.append(dt.date.fromisoformat(day) if isinstance(day, str) else day)
            if not isinstance(closed[-1], dt.date):
                raise TypeError
        except (TypeError, ValueError):
            r.problems.append(f"calendar.extra_closed_days: {day!r} is not a date (YYYY-MM-DD)")

    unclaimed = r.get("tokurei", "unclaimed_days", int, 30)
    if unclaimed is not None and not 1 <= unclaimed <= 365:
        r.problems.append("tokurei.unclaimed_days: must be from 1 to 365 (days an unclaimed 転出証明書情報 is kept)")
    senders = r.get("peer_listener", "allowed_peers", dict, {}) or {}
    if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in senders.items()):
        r.problems.append('peer_listener.allowed_peers: a table of "certificate SAN" = "sender id"')
    peer_listener = None
    if "listen" in r.section("peer_listener"):
        p_listen = r.listener("peer_listener", "listen")
        p_files = {k: r.get("peer_listener", k, str) for k in ("cert_file", "key_file", "client_ca_file")}
        p_workers = r.get("peer_listener", "workers", int, 1)
        if p_workers is not None and not 1 <= p_workers <= 16:
            r.problems.append("peer_listener.workers: must be between 1 and 16")
        if not senders:
            r.problems.append("peer_listener.allowed_peers: required with peer_listener.listen (who may deliver)")
        if listen is not None and p_listen is not None and p_listen.port == listen.port:
            r.problems.append("peer_listener.listen: must be another port than intake.listen")
        if p_listen is not None and None not in p_files.values() and p_workers is not None:
            peer_listener = PeerListenerConfig(p_listen, Path(p_files["cert_file"]), Path(p_files["key_file"]),
                                               Path(p_files["client_ca_file"]), p_workers)
    elif set(r.section("peer_listener")) - {"allowed_peers"}:
        r.problems.append("peer_listener: the listener's settings need peer_listener.listen")
    unknown_keys = set(r.section("peer_listener")) - {"listen", "cert_file", "key_file", "client_ca_file", "workers",
                                                      "allowed_peers"}
    if unknown_keys:
        r.problems.append(f"peer_listener: unknown keys: {', '.join(sorted(unknown_keys))}")

    terminal_listener = _terminal_listener(r, {listen.port if listen else None,
                                              peer_listener.listen.port if peer_listener else None})

    from jukics.auth.rbac import DutiesError, load_duties

    duties = None
    try:
        duties = load_duties(data.get("roles"))  # the duties table (対応表); the default when absent
    except DutiesError as exc:
        r.problems.extend(exc.problems)

    from jukics.exports import parse_recipients

    recipients = parse_recipients(r.section("exports").get("recipients"), r.problems)
    if set(r.section("exports")) - {"recipients", "media_dir"}:
        r.problems.append("exports: unknown keys (known: recipients, media_dir)")
    media_dir = r.section("exports").get("media_dir")
    if media_dir is not None and not (isinstance(media_dir, str) and media_dir.startswith("/")):
        r.problems.append("exports.media_dir: must be an absolute path (the mount point of the export medium)")

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
        links=links,
        extra_closed_days=tuple(closed),
        tokurei_unclaimed_days=unclaimed or 30,
        peer_senders=dict(senders),
        peer_listener=peer_listener,
        terminal_listener=terminal_listener,
        duties=duties,
        export_recipients=recipients,
        export_media_dir=Path(media_dir) if isinstance(media_dir, str) and media_dir.startswith("/") else None,
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


_TERMINAL_KEYS = frozenset({"listen", "cert_file", "key_file", "client_ca_file", "workers", "allowed_terminals",
                            "session_idle_minutes", "session_absolute_minutes", "result_cap", "search_rule",
                            "purposes"})


def _terminal_listener(r: Any, taken: set[int | None]) -> TerminalListenerConfig | None:
    section = r.section("terminal_listener")
    if not section:
        return None
    unknown = set(section) - _TERMINAL_KEYS
    if unknown:
        r.problems.append(f"terminal_listener: unknown keys: {', '.join(sorted(unknown))}")
    if "listen" not in section:
        r.problems.append("terminal_listener: the listener's settings need terminal_listener.listen")
        return None
    before = len(r.problems)
    listen = r.listener("terminal_listener", "listen")
    files = {k: r.get("terminal_listener", k, str) for k in ("cert_file", "key_file", "client_ca_file")}
    workers = r.get("terminal_listener", "workers", int, 1)
    terminals = r.get("terminal_listener", "allowed_terminals", list, []) or []
    idle = r.get("terminal_listener", "session_idle_minutes", int, 15)
    absolute = r.get("terminal_listener", "session_absolute_minutes", int, 480)
    cap = r.get("terminal_listener", "result_cap", int, 50)
    rule = r.get("terminal_listener", "search_rule", str, "name_plus")
    purposes = r.get("terminal_listener", "purposes", dict, {}) or {}
    if workers is not None and not 1 <= workers <= 16:
        r.problems.append("terminal_listener.workers: must be between 1 and 16")
    if not terminals or not all(isinstance(t, str) and t for t in terminals):
        r.problems.append("terminal_listener.allowed_terminals: required, a list of terminal certificate SANs")
    if idle is not None and absolute is not None and not 1 <= idle <= absolute <= 24 * 60:
        r.problems.append("terminal_listener: session_idle_minutes <= session_absolute_minutes <= 1440, both >= 1")
    if cap is not None and not 1 <= cap <= 100:
        r.problems.append("terminal_listener.result_cap: must be from 1 to 100")
    if rule not in ("name_plus", "two_of_four"):
        r.problems.append('terminal_listener.search_rule: "name_plus" or "two_of_four"')
    if not purposes or not all(isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", k)
                               and isinstance(v, str) and v for k, v in purposes.items()):
        r.problems.append('terminal_listener.purposes: required, a table of "CODE" = "description" '
                          "(codes 1-32 of A-Z a-z 0-9 _ . -)")
    if listen is not None and listen.port in taken:
        r.problems.append("terminal_listener.listen: must be another port than the intake and peer listeners")
    if len(r.problems) > before or listen is None or None in files.values():
        return None
    return TerminalListenerConfig(listen, Path(files["cert_file"]), Path(files["key_file"]),
                                  Path(files["client_ca_file"]), workers, tuple(terminals), idle, absolute, cap,
                                  rule, dict(purposes))


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names (existence, readability); for `config check`."""
    problems = []
    for name in ("cert_file", "key_file", "client_ca_file"):
        path: Path = getattr(config.intake, name)
        if not path.is_file():
            problems.append(f"intake.{name}: {path} does not exist")
        if config.terminal_listener is not None and not getattr(config.terminal_listener, name).is_file():
            problems.append(f"terminal_listener.{name}: {getattr(config.terminal_listener, name)} does not exist")
        if config.peer_listener is not None and not getattr(config.peer_listener, name).is_file():
            problems.append(f"peer_listener.{name}: {getattr(config.peer_listener, name)} does not exist")
    return problems
