"""Simulated 都道府県サーバ (prefecture) and 全国サーバ (national), for the lab, the tests and the benchmarks.

NEVER a real peer: it stores what it receives in a local SQLite file and answers the jukics protocol
(:mod:`jukics.links.protocol`) the way the seeds describe a peer (seed 000/003/004, seed 002 §2.3):

- it identifies each CS separately (the client certificate's SAN, mapped to a sender id by config;
  an envelope claiming another sender is refused);
- it refuses items outside its whitelist with a NACK (F2: exactly the 8 items; 附票: never 個人番号);
- it stores every message as received, with history (nothing is overwritten), and dedupes on
  (sender, link, seq): a re-sent or replayed message is answered ``duplicate`` and stored once;
- the prefecture forwards accepted F2 updates to the national sim over mutual TLS from its own
  durable queue (queued while national is down, drained in order when it returns) and answers
  searches and identity checks for its prefecture; the national answers them for everyone, compares
  整合性確認 digests (with seeded mismatches on request) and is the card-management endpoint
  (送付先情報 stored unedited).

Fault injection (admin API on loopback, ``jukics-sim faults``): down, slow, wrong certificate, NACK
storms, dropped acknowledgements (the sender re-sends: duplicates), forwarding every batch twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import random
import sqlite3
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jukics.config import PeerConfig
from jukics.domain.fields import CARD_EVENT_ITEMS, F2_ITEMS, FUHYO_ITEMS, TENNYU_NOTICE_ITEMS
from jukics.domain.reasons import REASONS
from jukics.links import protocol as p
from jukics.links.transport import LinkAuthError, PeerTransport, describe_error
from jukics.sim.server import PlainWsgiServer, TlsWsgiServer, drop_connection, server_context

log = logging.getLogger("jukics.sim")

ROLES = ("prefecture", "national")
#: What each role accepts: link -> (message type, exact payload items).
ORIGIN = "origin_sender"  # the CS a forwarded F2 update came from (prefecture -> national)
ACCEPTS: dict[str, dict[str, tuple[str, frozenset[str] | None]]] = {
    "prefecture": {"prefecture": (p.UPDATE_NOTICE, frozenset(F2_ITEMS)),
                   "fuhyo": (p.FUHYO_NOTICE, frozenset(FUHYO_ITEMS)),
                   # F6 転入通知情報, for the 転出地 CS (stored here; the sim has no other CS to relay to)
                   "tokurei": (p.TENNYU_NOTICE, frozenset(TENNYU_NOTICE_ITEMS))},
    "national": {"national": (p.UPDATE_NOTICE, frozenset((*F2_ITEMS, ORIGIN))),
                 "sofusaki": (p.SOFUSAKI, None),  # 送付先情報: any object, stored unedited
                 "card": (p.CARD_EVENT, frozenset(CARD_EVENT_ITEMS))},  # answered with the 突合結果
}
RESULT_ITEMS = tuple(i for i in F2_ITEMS if i not in ("my_number", "change_reason", "changed_on"))
E_SIM_NACK = "E_SIM_NACK"
E_NOT_FOUND = "E_NOT_FOUND"
E_PURPOSE_REQUIRED = "E_PURPOSE_REQUIRED"


class SimConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid sim configuration:\n" + "\n".join(f"  - {x}" for x in problems))


@dataclass(frozen=True)
class SimConfig:
    role: str
    name: str
    sender_id: str
    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    cert_file: Path
    key_file: Path
    ca_file: Path
    database: Path
    senders: Mapping[str, str]
    prefecture_code: str = "14"
    wrong_cert_file: Path | None = None
    wrong_key_file: Path | None = None
    national_url: str | None = None
    national_peer_name: str | None = None
    #: (prefecture) F6: the CSs of the prefecture, 団体コード -> (url of the peer-facing listener, SAN)
    cs_endpoints: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def _address(text: Any, where: str, problems: list[str]) -> tuple[str, int]:
    try:
        host, _, port = str(text).rpartition(":")
        ipaddress.ip_address(host.strip("[]"))
        if not 0 <= int(port) <= 65535:
            raise ValueError
        return host.strip("[]"), int(port)
    except ValueError:
        problems.append(f"{where}: must be ADDRESS:PORT with an IP address")
        return "127.0.0.1", 0


def parse_sim_config(data: Mapping[str, Any]) -> SimConfig:
    problems: list[str] = []
    sim = data.get("sim")
    if not isinstance(sim, Mapping):
        raise SimConfigError(["sim: the [sim] table is missing"])
    role = sim.get("role")
    if role not in ROLES:
        problems.append(f"sim.role: must be one of {', '.join(ROLES)}")
    for key in ("name", "sender_id", "cert_file", "key_file", "ca_file", "database"):
        if not isinstance(sim.get(key), str) or not sim.get(key):
            problems.append(f"sim.{key}: missing")
    listen = _address(sim.get("listen"), "sim.listen", problems)
    admin = _address(sim.get("admin_listen", "127.0.0.1:9480"), "sim.admin_listen", problems)
    if not ipaddress.ip_address(admin[0]).is_loopback:
        problems.append("sim.admin_listen: must be a loopback address (the admin API has no authentication)")
    senders = sim.get("senders", {})
    if not isinstance(senders, Mapping) or not senders or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in senders.items()):
        problems.append("sim.senders: a table of client certificate SAN = sender id, at least one")
        senders = {}
    wrong = (sim.get("wrong_cert_file"), sim.get("wrong_key_file"))
    if (wrong[0] is None) != (wrong[1] is None):
        problems.append("sim.wrong_cert_file and sim.wrong_key_file go together")
    national = sim.get("national", {})
    if role == "prefecture" and (
            not isinstance(national, Mapping) or not isinstance(national.get("url"), str)
            or not str(national.get("url")).startswith("https://") or not national.get("peer_name")):
        problems.append("sim.national: the prefecture needs url = https://HOST:PORT and peer_name")
        national = {}
    endpoints: dict[str, tuple[str, str]] = {}
    for muni, ep in (sim.get("cs_endpoints", {}) or {}).items():
        if not (isinstance(ep, Mapping) and str(ep.get("url", "")).startswith("https://") and ep.get("peer_name")):
            problems.append(f"sim.cs_endpoints.{muni}: needs url = https://HOST:PORT and peer_name")
            continue
        endpoints[str(muni)] = (str(ep["url"]), str(ep["peer_name"]))
    code = str(sim.get("prefecture_code", "14"))
    if not (len(code) == 2 and code.isdigit() and 1 <= int(code) <= 47):
        problems.append("sim.prefecture_code: a 2-digit 都道府県コード 01-47")
    if problems:
        raise SimConfigError(problems)
    return SimConfig(
        role=str(role), name=sim["name"], sender_id=sim["sender_id"], listen=listen, admin_listen=admin,
        cert_file=Path(sim["cert_file"]), key_file=Path(sim["key_file"]), ca_file=Path(sim["ca_file"]),
        database=Path(sim["database"]), senders=dict(senders), prefecture_code=code,
        wrong_cert_file=Path(wrong[0]) if wrong[0] else None, wrong_key_file=Path(wrong[1]) if wrong[1] else None,
        national_url=national.get("url") if isinstance(national, Mapping) else None,
        national_peer_name=national.get("peer_name") if isinstance(national, Mapping) else None,
        cs_endpoints=endpoints,
    )


def load_sim_config(path: Path) -> SimConfig:
    try:
        return parse_sim_config(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise SimConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SimConfigError([f"{path}: not valid TOML ({exc})"]) from None


@dataclass
class Faults:
    down: bool = False
    slow_seconds: float = 0.0
    wrong_cert: bool = False
    nack_rate: float = 0.0
    drop_ack_rate: float = 0.0
    forward_twice: bool = False
    # fault injection only, deterministic on purpose
    rng: random.Random = field(default_factory=lambda: random.Random(1234), repr=False)  # noqa: S311

    def as_dict(self) -> dict[str, Any]:
        return {"down": self.down, "slow_seconds": self.slow_seconds, "wrong_cert": self.wrong_cert,
                "nack_rate": self.nack_rate, "drop_ack_rate": self.drop_ack_rate, "forward_twice": self.forward_twice}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
  id INTEGER PRIMARY KEY, sender TEXT NOT NULL, link TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
  origin TEXT NOT NULL, juminhyo_code TEXT, payload TEXT NOT NULL, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS received_by_resident ON received (origin, juminhyo_code, id);
CREATE TABLE IF NOT EXISTS seen (
  sender TEXT NOT NULL, link TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, code TEXT,
  PRIMARY KEY (sender, link, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (sender TEXT NOT NULL, link TEXT NOT NULL, last_seq INTEGER NOT NULL,
  gaps INTEGER NOT NULL, PRIMARY KEY (sender, link)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forward_queue (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS forward_head (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL,
  acked_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (origin TEXT NOT NULL, juminhyo_code TEXT NOT NULL, payload TEXT,
  PRIMARY KEY (origin, juminhyo_code)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cards (card_id TEXT PRIMARY KEY, juminhyo_code TEXT NOT NULL, status TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS card_results (sender TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (sender, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS card (id INTEGER PRIMARY KEY, sender TEXT NOT NULL, seq INTEGER NOT NULL,
  payload TEXT NOT NULL, sha256 TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checks (check_id TEXT NOT NULL, juminhyo_code TEXT NOT NULL,
  PRIMARY KEY (check_id, juminhyo_code)) WITHOUT ROWID;
INSERT OR IGNORE INTO forward_head VALUES (1, 0, 0);
"""


def canonical(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class PeerStore:
    """The sim's SQLite file (WAL). One connection, one lock: a batch is one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def bump(self, name: str, by: int = 1) -> None:
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                        (name, by, by))

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters").fetchall())

    def received(self, sender: str, link: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT seq, juminhyo_code, payload, received_at FROM received WHERE sender = ? AND "
                               "link = ? ORDER BY id", (sender, link)).fetchall()
        out = []
        for seq, code, payload, at in rows:
            item = json.loads(payload)
            out.append({"seq": seq, "juminhyo_code": code, "change_reason": item.get("change_reason"),
                        "changed_on": item.get("changed_on"), "received_at": at})
        return out

    def current(self, origin: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(origin, code, latest F2 record) per resident, seeded overrides applied (national)."""
        where, args = ("AND origin = ?", (origin,)) if origin else ("", ())
        rows = self.db.execute(
            "SELECT origin, juminhyo_code, payload FROM received r WHERE link IN ('prefecture', 'national') "  # noqa: S608
            f"{where} AND id = (SELECT MAX(id) FROM received x WHERE x.origin = r.origin AND "
            "x.juminhyo_code = r.juminhyo_code AND x.link = r.link)", args).fetchall()
        overrides = {(o, c): v for o, c, v in self.db.execute("SELECT origin, juminhyo_code, payload FROM overrides")}
        for org, code, payload in rows:
            if (org, code) in overrides:
                if overrides[(org, code)] is None:
                    continue  # seeded: dropped
                payload = overrides[(org, code)]
            yield org, code, json.loads(payload)


class Peer:
    """The WSGI app of one simulated peer, its store, faults and (prefecture) forwarder."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.store = PeerStore(config.database)
        self.faults = Faults()
        self.accepts = ACCEPTS[config.role]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._relay_lock = threading.Lock()
        self._relay: PeerTransport | None = None

    # ---- delivery --------------------------------------------------------------------------
    def deliver(self, link: str, sender: str, envelopes: list[p.Envelope]) -> list[p.Result]:
        mtype, items = self.accepts[link]
        results: list[p.Result] = []
        s, db, now = self.store, self.store.db, time.time()
        with s.lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                head = db.execute("SELECT last_seq, gaps FROM heads WHERE sender = ? AND link = ?",
                                  (sender, link)).fetchone() or (0, 0)
                last, gaps = head
                for e in envelopes:
                    old = db.execute("SELECT status, code FROM seen WHERE sender = ? AND link = ? AND seq = ?",
                                     (sender, link, e.seq)).fetchone()
                    if old is not None:
                        s.bump("duplicates")
                        earlier = db.execute("SELECT data FROM card_results WHERE sender = ? AND seq = ?",
                                             (sender, e.seq)).fetchone() if link == "card" else None
                        results.append(p.Result(e.seq, p.STATUS_DUPLICATE, old[1],
                                                data=json.loads(earlier[0]) if earlier else None))
                        continue
                    code, detail = self._check(e, mtype, items)
                    if code is None and self.faults.nack_rate and self.faults.rng.random() < self.faults.nack_rate:
                        code, detail = E_SIM_NACK, "fault injection: NACK storm"
                    if e.seq > last + 1:
                        gaps += 1
                    last = max(last, e.seq)
                    if code is not None:
                        s.bump("nacks")
                        db.execute("INSERT INTO seen VALUES (?, ?, ?, 'nack', ?)", (sender, link, e.seq, code))
                        results.append(p.Result(e.seq, p.STATUS_NACK, code, detail))
                        continue
                    data = self._store(link, sender, e, now)
                    db.execute("INSERT INTO seen VALUES (?, ?, ?, 'ack', NULL)", (sender, link, e.seq))
                    results.append(p.Result(e.seq, p.STATUS_ACK, data=data))
                db.execute("INSERT INTO heads VALUES (?, ?, ?, ?) ON CONFLICT(sender, link) DO UPDATE SET "
                           "last_seq = excluded.last_seq, gaps = excluded.gaps", (sender, link, last, gaps))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if self.config.role == "prefecture" and link == "prefecture":
            self._wake.set()
        return results

    def _check(self, e: p.Envelope, mtype: str, items: frozenset[str] | None) -> tuple[str | None, str | None]:
        if e.type != mtype:
            return p.E_UNKNOWN_TYPE, f"{e.type!r} on {e.link!r} (expected {mtype!r})"
        if items is None:
            return None, None
        extra, missing = set(e.payload) - items, items - set(e.payload)
        if extra:
            return p.E_FIELD_NOT_ALLOWED, f"not allowed: {', '.join(sorted(extra))}"
        if missing:
            return p.E_FIELD_MISSING, f"missing: {', '.join(sorted(missing))}"
        return None, None

    def _store(self, link: str, sender: str, e: p.Envelope, now: float) -> dict[str, Any] | None:
        db = self.store.db
        if link == "sofusaki":
            text = canonical(e.payload)
            db.execute("INSERT INTO card (sender, seq, payload, sha256, received_at) VALUES (?, ?, ?, ?, ?)",
                       (sender, e.seq, json.dumps(e.payload, ensure_ascii=False),
                        hashlib.sha256(text.encode()).hexdigest(), now))
            return None
        if link == "card":
            data = self._match_card_event(e.payload)
            db.execute("INSERT INTO card_results VALUES (?, ?, ?)", (sender, e.seq, json.dumps(data)))
            return data
        origin = str(e.payload.get(ORIGIN, sender))
        db.execute("INSERT INTO received (sender, link, seq, type, origin, juminhyo_code, payload, received_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (sender, link, e.seq, e.type, origin, e.payload.get("juminhyo_code"),
                    json.dumps(dict(e.payload), ensure_ascii=False), now))
        if self.config.role == "prefecture" and link == "prefecture":
            (last,) = db.execute("SELECT last_seq FROM forward_head").fetchone()
            db.execute("INSERT INTO forward_queue VALUES (?, ?)",
                       (last + 1, json.dumps({**e.payload, ORIGIN: sender}, ensure_ascii=False)))
            db.execute("UPDATE forward_head SET last_seq = ?", (last + 1,))

        return None

    def _match_card_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """突合: check the event against the cards this sim knows, apply it when it fits."""
        db, card_id, code, kind = self.store.db, str(event["card_id"]), str(event["juminhyo_code"]), event["kind"]
        row = db.execute("SELECT juminhyo_code, status FROM cards WHERE card_id = ?", (card_id,)).fetchone()
        after = {"kofu": "active", "teishi_kaijo": "active", "haishi": "revoked", "kaishu": "collected",
                 "henkan": "returned"}.get(str(kind))
        reason = None
        if after is None:
            reason = "unknown event kind"
        elif kind == "kofu":
            reason = "the card was already issued" if row is not None else None
        elif row is None:
            reason = "no such card"
        elif row[0] != code:
            reason = "the card belongs to another resident"
        elif row[1] != "active":
            reason = f"the card is {row[1]}"
        if reason is None:
            db.execute("INSERT INTO cards VALUES (?, ?, ?) ON CONFLICT(card_id) DO UPDATE SET status = excluded.status",
                       (card_id, code, after))
            return {"matched": True, "card_status": after, "reason": None}
        return {"matched": False, "card_status": row[1] if row else None, "reason": reason}

    # ---- forwarding to the national sim (prefecture) ----------------------------------------
    def forward_loop(self) -> None:
        assert self.config.national_url and self.config.national_peer_name
        transport = PeerTransport(PeerConfig("national", self.config.national_url, self.config.cert_file,
                                             self.config.key_file, self.config.ca_file,
                                             (self.config.national_peer_name,)), timeout=10)
        delay = 0.1
        while not self._stop.is_set():
            with self.store.lock:
                acked = self.store.db.execute("SELECT acked_seq FROM forward_head").fetchone()[0]
                rows = self.store.db.execute("SELECT seq, payload FROM forward_queue WHERE seq > ? ORDER BY seq "
                                             "LIMIT 500", (acked,)).fetchall()
            if not rows:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            envs = [p.Envelope(self.config.sender_id, "national", seq, f"national-{seq}", p.UPDATE_NOTICE,
                               "住民基本台帳法第30条の7", p.utc_stamp(), json.loads(payload)) for seq, payload in rows]
            try:
                for _ in range(2 if self.faults.forward_twice else 1):
                    resp = transport.post(p.messages_path("national"), p.encode_batch(envs))
                    if resp.status != 200:
                        raise OSError(f"HTTP {resp.status}")
                    results = p.decode_results(resp.body, envs)
                if not results:
                    raise OSError("national handled nothing")
            except (OSError, LinkAuthError, p.ProtocolError) as exc:
                log.warning("forward to national failed (will retry): %s", describe_error(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            with self.store.lock:
                self.store.db.execute("BEGIN IMMEDIATE")
                self.store.db.execute("UPDATE forward_head SET acked_seq = ?", (results[-1].seq,))
                self.store.db.execute("DELETE FROM forward_queue WHERE seq <= ?", (results[-1].seq,))
                self.store.db.execute("COMMIT")
        transport.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._relay_lock:
            if self._relay is not None:
                self._relay.close()

    # ---- queries ---------------------------------------------------------------------------
    def search(self, criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
        keys = {k for k, v in criteria.items() if v}
        four = keys & {"name_kanji", "birth_date", "address"}
        if not (keys == {"juminhyo_code"} or keys == {"my_number"} or (len(four) >= 2 and keys <= four)):
            raise ValueError(p.E_SEARCH_KEYS)
        out = []
        with self.store.lock:
            for _origin, _code, rec in self.store.current():
                reason = REASONS.get(str(rec.get("change_reason")))
                if reason is not None and reason.kind == "delete":
                    continue  # a 消除者 is not found by a search
                if all(rec.get(k) == criteria[k] for k in keys):
                    out.append({k: rec.get(k) for k in RESULT_ITEMS})
                    if len(out) >= p.SEARCH_LIMIT:
                        break
        return out

    def consistency(self, sender: str, body: Mapping[str, Any]) -> dict[str, Any]:
        records = body.get("records")
        if not isinstance(records, list):
            raise ValueError(p.E_PROTOCOL)
        check_id, last = str(body.get("check_id") or ""), bool(body.get("last", True))
        with self.store.lock:
            mine = {code: p.record_digest(rec, F2_ITEMS) for _o, code, rec in self.store.current(sender)}
            theirs = {}
            for r in records:
                if not isinstance(r, dict) or not isinstance(r.get("juminhyo_code"), str):
                    raise ValueError(p.E_PROTOCOL)
                theirs[r["juminhyo_code"]] = r.get("digest")
            if check_id:
                self.store.db.executemany("INSERT OR IGNORE INTO checks VALUES (?, ?)",
                                          [(check_id, c) for c in theirs])
            missing = sorted(c for c in theirs if c not in mine)
            mismatched = sorted(c for c, d in theirs.items() if c in mine and mine[c] != d)
            unknown: list[str] = []
            if last:
                seen = ({c for (c,) in self.store.db.execute("SELECT juminhyo_code FROM checks WHERE check_id = ?",
                                                             (check_id,))} if check_id else set(theirs))
                unknown = sorted(set(mine) - seen)
                if check_id:
                    self.store.db.execute("DELETE FROM checks WHERE check_id = ?", (check_id,))
        return {"checked": len(theirs), "missing_at_peer": missing, "unknown_to_sender": unknown,
                "mismatched": mismatched}

    def _relay_to_national(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """A query for residents of other prefectures goes on to the 全国サーバ, as this prefecture."""
        assert self.config.national_url and self.config.national_peer_name
        with self._relay_lock:
            if self._relay is None:
                self._relay = PeerTransport(PeerConfig("national", self.config.national_url, self.config.cert_file,
                                                       self.config.key_file, self.config.ca_file,
                                                       (self.config.national_peer_name,)), timeout=10)
            relayed = {**body, "sender": self.config.sender_id, "scope": p.SCOPE_NATIONAL}
            try:
                resp = self._relay.post(path, json.dumps(relayed, ensure_ascii=False).encode())
            except LinkAuthError as exc:
                return 502, {"code": exc.code, "message": f"全国サーバ: {exc.reason}"}
            except OSError as exc:
                return 503, {"code": p.E_UNAVAILABLE, "message": f"全国サーバ: {describe_error(exc)}"}
        try:
            return resp.status, json.loads(resp.body)
        except json.JSONDecodeError:
            return 502, {"code": p.E_PROTOCOL, "message": "全国サーバ: the answer is not JSON"}

    def relay_tenshutsu(self, certs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """F6: 転出証明書情報 from a 転出地 goes on to the 転入地 CS (its peer-facing listener), as
        this prefecture, with a sequence of its own per destination. Synchronous: the lab drives it."""
        out = []
        for cert in certs:
            muni = str(cert.get("to_municipality_code", ""))
            endpoint = self.config.cs_endpoints.get(muni)
            if endpoint is None:
                out.append({"cert_id": cert.get("cert_id"), "status": "refused", "code": "E_NO_SUCH_CS"})
                continue
            with self.store.lock:
                self.store.bump(f"tokurei_seq/{muni}")
                seq = self.store.counters()[f"tokurei_seq/{muni}"]
            env = p.Envelope(self.config.sender_id, "tokurei", seq, f"tenshutsu-{muni}-{seq}", p.TENSHUTSU_CERT,
                             "住民基本台帳法第24条の2", p.utc_stamp(), dict(cert))
            transport = PeerTransport(PeerConfig("tokurei", endpoint[0], self.config.cert_file, self.config.key_file,
                                                 self.config.ca_file, (endpoint[1],)), timeout=10)
            try:
                resp = transport.post(p.messages_path("tokurei"), p.encode_batch([env]))
                answer = json.loads(resp.body)
                result = answer["results"][0] if resp.status == 200 else {"status": "refused", **answer}
            except LinkAuthError as exc:
                result = {"status": "refused", "code": exc.code, "message": exc.reason}
            except (OSError, ValueError, KeyError) as exc:
                result = {"status": "refused", "code": p.E_UNAVAILABLE, "message": describe_error(exc)}
            if result.get("status") in ("ack", "duplicate"):
                with self.store.lock:
                    self.store.bump("tenshutsu_relayed")
            out.append({"cert_id": cert.get("cert_id"), "seq": seq, **result})
        return out

    def seed_mismatches(self, alter: int, drop: int) -> dict[str, int]:
        with self.store.lock:
            current = list(self.store.current())
            rng = random.Random(77)  # noqa: S311 - which records to spoil, reproducibly
            rng.shuffle(current)
            for origin, code, rec in current[:alter]:
                changed = {**rec, "address": str(rec.get("address")) + "（不一致）"}
                self.store.db.execute("INSERT OR REPLACE INTO overrides VALUES (?, ?, ?)",
                                      (origin, code, json.dumps(changed, ensure_ascii=False)))
            for origin, code, _rec in current[alter:alter + drop]:
                self.store.db.execute("INSERT OR REPLACE INTO overrides VALUES (?, ?, NULL)", (origin, code))
        return {"altered": min(alter, len(current)), "dropped": max(0, min(drop, len(current) - alter))}

    def state(self) -> dict[str, Any]:
        with self.store.lock:
            db = self.store.db
            heads = [{"sender": s, "link": link, "last_seq": last, "gaps": g}
                     for s, link, last, g in db.execute("SELECT sender, link, last_seq, gaps FROM heads ORDER BY 1, 2")]
            counts = {f"{s}/{link}": n for s, link, n in
                      db.execute("SELECT sender, link, COUNT(*) FROM received GROUP BY 1, 2")}
            last, acked = db.execute("SELECT last_seq, acked_seq FROM forward_head").fetchone()
            card = db.execute("SELECT COUNT(*) FROM card").fetchone()[0]
            counters = self.store.counters()
        return {"role": self.config.role, "name": self.config.name, "heads": heads, "received": counts,
                "duplicates": counters.get("duplicates", 0), "nacks": counters.get("nacks", 0),
                "gaps": sum(h["gaps"] for h in heads), "forward_queue": last - acked, "card_messages": card,
                "tenshutsu_relayed": counters.get("tenshutsu_relayed", 0), "faults": self.faults.as_dict()}

    def card_messages(self) -> list[dict[str, Any]]:
        with self.store.lock:
            rows = self.store.db.execute("SELECT sender, seq, payload, sha256 FROM card ORDER BY id").fetchall()
        return [{"sender": s, "seq": q, "payload": json.loads(t), "sha256": h} for s, q, t, h in rows]

    # ---- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, body = self._handle(environ)
        if status == 0:  # drop: no answer at all
            drop_connection(environ)
            status, body = 500, {}
        data = json.dumps(body, ensure_ascii=False).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Refused'}",
                       [("Content-Type", p.CONTENT_TYPE), ("Content-Length", str(len(data)))])
        return [data]

    def _handle(self, environ: dict[str, Any]) -> tuple[int, Any]:
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        names = environ.get("jukics.peer_names", [])
        sender = next((self.config.senders[n] for n in names if n in self.config.senders), None)
        if sender is None:
            return 403, {"code": p.E_UNKNOWN_SENDER, "message": f"no sender is known for {names}"}
        if environ.get("REQUEST_METHOD") != "POST":
            return 405, {"code": p.E_PROTOCOL, "message": "POST only"}
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > 64 * 1024 * 1024:
            return 413, {"code": p.E_PROTOCOL, "message": "too large"}
        raw = environ["wsgi.input"].read(length)
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v1", "links"] and parts[3] == "messages":
            link = parts[2]
            if link not in self.accepts:
                return 404, {"code": p.E_PROTOCOL, "message": f"no link {link!r} here"}
            try:
                envelopes = p.decode_batch(raw, link=link)
            except p.ProtocolError as exc:
                return 400, {"code": exc.code, "message": exc.message}
            if envelopes[0].sender != sender:
                return 403, {"code": p.E_SENDER_MISMATCH,
                             "message": f"the envelope says {envelopes[0].sender!r}, the certificate {sender!r}"}
            results = self.deliver(link, sender, envelopes)
            if self.faults.drop_ack_rate and self.faults.rng.random() < self.faults.drop_ack_rate:
                return 0, None
            return 200, {"results": [r.as_dict() for r in results]}
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return 400, {"code": p.E_PROTOCOL, "message": "not JSON"}
        if not isinstance(body, dict):
            return 400, {"code": p.E_PROTOCOL, "message": "an object is expected"}
        if body.get("sender") != sender:
            return 403, {"code": p.E_SENDER_MISMATCH, "message": "sender differs from the certificate"}
        try:
            if path in (p.SEARCH_PATH, p.IDENTITY_CHECK_PATH):
                if not body.get("purpose"):
                    return 400, {"code": E_PURPOSE_REQUIRED, "message": "a purpose code is required"}
                self.store.bump("queries")
                scope = body.get("scope", p.SCOPE_PREFECTURE)
                if scope not in p.SCOPES:
                    return 400, {"code": p.E_PROTOCOL, "message": f"scope must be one of {list(p.SCOPES)}"}
                if scope == p.SCOPE_NATIONAL and self.config.role == "prefecture":
                    return self._relay_to_national(path, body)
                if path == p.IDENTITY_CHECK_PATH:
                    found = self.search({"juminhyo_code": body.get("juminhyo_code")})
                    return 200, {"found": bool(found), "record": found[0] if found else None}
                criteria = body.get("criteria")
                if not isinstance(criteria, dict):
                    return 400, {"code": p.E_SEARCH_KEYS, "message": "criteria must be an object"}
                return 200, {"results": self.search(criteria)}
            if path == p.consistency_path("prefecture"):
                return 200, self.consistency(sender, body)
        except ValueError as exc:
            return 400, {"code": str(exc), "message": "refused"}
        return 404, {"code": E_NOT_FOUND, "message": f"nothing at {path}"}


class AdminApp:
    """Plain-HTTP admin API on loopback: state, received messages, faults, seeded mismatches."""

    def __init__(self, running: RunningPeer) -> None:
        self.running = running

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        peer, path = self.running.peer, environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        status, out = 200, {}
        if path == "/state":
            out = peer.state()
        elif path == "/received":
            out = peer.store.received(query.get("sender", ""), query.get("link", ""))
        elif path == "/card":
            out = peer.card_messages()
        elif path == "/faults" and environ["REQUEST_METHOD"] == "POST":
            try:
                out = self.running.set_faults(body)
            except ValueError as exc:
                status, out = 400, {"code": "E_FAULT", "message": str(exc)}
        elif path == "/tenshutsu" and environ["REQUEST_METHOD"] == "POST" and peer.config.role == "prefecture":
            out = peer.relay_tenshutsu(list(body.get("certs", [])))
        elif path == "/seed-mismatches" and environ["REQUEST_METHOD"] == "POST":
            out = peer.seed_mismatches(int(body.get("alter", 0)), int(body.get("drop", 0)))
        else:
            status, out = 404, {"code": E_NOT_FOUND}
        data = json.dumps(out, ensure_ascii=False).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Refused'}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


class RunningPeer:
    """A started peer: TLS listener, admin listener, forwarder thread (prefecture)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.peer = Peer(config)
        self._right = server_context(config.cert_file, config.key_file, config.ca_file)
        self.tls = TlsWsgiServer(self.peer, config.listen[0], config.listen[1], self._right)
        self.admin = PlainWsgiServer(AdminApp(self), config.admin_listen[0], config.admin_listen[1])
        self._forwarder: threading.Thread | None = None

    @property
    def faults(self) -> Faults:
        return self.peer.faults

    @property
    def url(self) -> str:
        return f"https://{self.config.listen[0]}:{self.tls.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.admin_listen[0]}:{self.admin.port}"

    def start(self) -> RunningPeer:
        self.tls.start()
        self.admin.start()
        if self.config.role == "prefecture":
            self._forwarder = threading.Thread(target=self.peer.forward_loop, name="forward", daemon=True)
            self._forwarder.start()
        return self

    def set_faults(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        f = self.peer.faults
        if changes.get("clear"):  # everything off first, then what else this call sets
            changes = {"down": False, "slow_seconds": 0.0, "wrong_cert": False, "nack_rate": 0.0,
                       "drop_ack_rate": 0.0, "forward_twice": False,
                       **{k: v for k, v in changes.items() if k != "clear"}}
        for key in ("slow_seconds", "nack_rate", "drop_ack_rate"):
            if key in changes:
                value = float(changes[key])
                if not 0 <= value <= (60 if key == "slow_seconds" else 1):
                    raise ValueError(f"{key} out of range")
                setattr(f, key, value)
        if "forward_twice" in changes:
            f.forward_twice = bool(changes["forward_twice"])
        if "wrong_cert" in changes:
            f.wrong_cert = bool(changes["wrong_cert"])
            if f.wrong_cert:
                if not (self.config.wrong_cert_file and self.config.wrong_key_file):
                    raise ValueError("no wrong_cert_file configured")
                self.tls.set_context(server_context(self.config.wrong_cert_file, self.config.wrong_key_file,
                                                    self.config.ca_file))
            else:
                self.tls.set_context(self._right)
        if "down" in changes:
            f.down = bool(changes["down"])
            self.tls.stop() if f.down else self.tls.start()
        return f.as_dict()

    def stop(self) -> None:
        self.peer.stop()
        self.tls.stop()
        self.admin.stop()
        if self._forwarder is not None:
            self._forwarder.join(15)
        self.peer.store.db.close()


def start_peer(config: SimConfig) -> RunningPeer:
    """Start a peer in this process (tests); ``listen``/``admin_listen`` port 0 picks free ports."""
    return RunningPeer(config).start()
