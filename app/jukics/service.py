"""Composition root: builds the service's parts from the configuration.

The HTTP app, the CLI commands and the tests get their dependencies from here (or build them
themselves), so no module reaches for globals.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import falcon
from sqlalchemy import Engine, text

from jukics.api.app import AppDeps, create_app
from jukics.api.identity import IdentitySource, identity_from_gunicorn
from jukics.audit.chain import AuditLog, verify
from jukics.auth.operators import OperatorStore
from jukics.config import LINK_MESSAGE_TYPES, Config
from jukics.domain.business_days import BusinessCalendar
from jukics.domain.places import prefecture_of_code
from jukics.domain.validate import Validators
from jukics.intake import Intake
from jukics.keystore import KeyStore, open_keystore
from jukics.links.card import LINKS as CARD_LINKS
from jukics.links.card import CardRelay
from jukics.links.consistency import ConsistencyCheck
from jukics.links.queries import PeerQueries
from jukics.links.routing import QueryRouter
from jukics.links.tokurei import LINK as TOKUREI_LINK
from jukics.links.tokurei import REASON as TOKUREI_REASON
from jukics.links.tokurei import TokureiInbox
from jukics.links.worker import LinkWorker
from jukics.store import db
from jukics.store.clock import Clock, utc_now
from jukics.store.link_state import LinkState
from jukics.store.repository import ResidentStore
from jukics.store.retention import purge

log = logging.getLogger("jukics")

#: 住基 dates (異動年月日, 生年月日) are Japanese calendar days.
JST = ZoneInfo("Asia/Tokyo")


@dataclass
class Service:
    """The parts of a running CS, built lazily from the config."""

    config: Config
    clock: Clock = utc_now

    @cached_property
    def engine(self) -> Engine:
        db.ensure_sqlite_parent(self.config.database_url)
        return db.make_engine(self.config.database_url)

    @cached_property
    def keystore(self) -> KeyStore:
        return open_keystore(self.config.keystore, production=self.config.is_production)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog.from_keystore(self.engine, self.keystore, self.clock)

    @cached_property
    def store(self) -> ResidentStore:
        store = ResidentStore.from_keystore(self.engine, self.keystore, self.clock)
        # F6: a 特例転入 claims its 転出証明書情報 and queues the 転入通知情報 in the intake transaction
        store.special_reasons = frozenset({TOKUREI_REASON})
        store.on_special = lambda conn, items, now: self.tokurei.on_applied(conn, items, now)
        return store

    @cached_property
    def tokurei(self) -> TokureiInbox:
        return TokureiInbox(self.engine, self.store.cipher, self.audit, municipality_code=self.config.municipality_code,
                            code_hash=self.store.code_hash, is_valid_code=self.intake.validators.juminhyo.is_valid,
                            unclaimed_days=self.config.tokurei_unclaimed_days, clock=self.clock)

    @cached_property
    def operators(self) -> OperatorStore:
        return OperatorStore(self.engine, self.store.cipher, self.audit,
                             issuer=f"jukics {self.config.municipality_code}", clock=self.clock)

    @cached_property
    def exports(self) -> Any:
        from jukics.auth.rbac import load_duties
        from jukics.exports import ExportService

        return ExportService(self.engine, self.operators, self.config.duties or load_duties(None), self.audit,
                             recipients=self.config.export_recipients, residents=self._export_residents,
                             clock=self.clock)

    def _export_residents(self, codes: Any) -> Any:
        from jukics.domain.fields import RECORD_ITEMS

        if codes is None:
            return self.store.iter_current(RECORD_ITEMS)
        return self.store.get_current_many(codes).values()

    def today(self) -> dt.date:
        return self.clock().astimezone(JST).date()

    @cached_property
    def intake(self) -> Intake:
        validators = Validators.from_names(
            self.config.juminhyo_validator, frozenset({self.config.municipality_code})
        )
        return Intake(self.store, self.audit, validators, self.today)

    @cached_property
    def card(self) -> CardRelay:
        return CardRelay(self.engine, self.store.cipher, self.audit, BusinessCalendar(self.config.extra_closed_days),
                         is_valid_code=self.intake.validators.juminhyo.is_valid, clock=self.clock)

    @cached_property
    def link_state(self) -> LinkState:
        state = LinkState(self.engine, self.audit, self.clock)
        for link in CARD_LINKS:
            state.settle_hooks[link] = self.card.on_settled
        state.settle_hooks[TOKUREI_LINK] = self.tokurei.on_settled
        return state

    def link_source(self, link: str) -> Any:
        """Where a link's messages come from: resident versions, card messages, or 転入通知情報."""
        if link in CARD_LINKS:
            return self.card
        return self.tokurei if link == TOKUREI_LINK else self.store

    def link_workers(self) -> list[LinkWorker]:
        """One delivery worker per configured peer link (jukics.links.worker)."""
        from jukics.links.transport import PeerTransport

        links = self.config.links
        workers = []
        for link, peer in links.peers.items():
            mtype = LINK_MESSAGE_TYPES[link]
            workers.append(LinkWorker(
                link, source=self.link_source(link), state=self.link_state,
                transport=PeerTransport(peer, timeout=links.timeout_seconds),
                sender=self.config.sender_id, message_type=mtype,
                legal_basis=links.legal_basis.get((link, mtype)), batch_size=links.batch_size,
            ))
        return workers

    def prefecture_queries(self) -> PeerQueries:
        """A query client on the prefecture link (F4, F5, F7/F8); LookupError when there is none."""
        peer = self.config.links.peers.get("prefecture")
        if peer is None:
            raise LookupError("no prefecture link is configured ([links.peers.prefecture])")
        return PeerQueries(peer, self.config.sender_id, timeout=self.config.links.timeout_seconds)

    @cached_property
    def query_router(self) -> QueryRouter:
        has_peer = "prefecture" in self.config.links.peers
        return QueryRouter(self.store, self.audit, prefecture=prefecture_of_code(self.config.municipality_code),
                           peers=self.prefecture_queries if has_peer else None,
                           is_valid_code=self.intake.validators.juminhyo.is_valid)

    @cached_property
    def consistency(self) -> ConsistencyCheck:
        return ConsistencyCheck(self.engine, self.store, self.audit, self.store.cipher, self.clock)

    def health(self) -> Mapping[str, Any]:
        status = database_status_of(self.engine)
        return {"status": "ok" if status == "ok" else "down", "database": status}


def database_status_of(engine: Engine) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = db.current_revision(engine)
    except Exception as exc:  # any driver error means "not usable"; the message may name paths only
        return f"unreachable ({type(exc).__name__})"
    head = db.head_revision()
    if revision != head:
        return f"not migrated (at {revision or 'nothing'}, want {head}; run `jukics db upgrade`)"
    return "ok"


def build_app(config: Config, *, identity: IdentitySource = identity_from_gunicorn,
              service: Service | None = None) -> falcon.App:
    svc = service or Service(config)
    # Open the key store now: a missing or wrong key source stops the worker at start, not mid-request.
    svc.keystore.data_key()
    deps = AppDeps(
        allowed_intake_clients=config.intake.allowed_clients,
        intake=svc.intake,
        health=svc.health,
        identity=identity,
        max_body_bytes=config.max_body_bytes,
        card=svc.card,
    )
    return create_app(deps)


def build_peer_app(config: Config, *, peer_names: Any = None, service: Service | None = None) -> Any:
    """The peer-facing listener's app (jukics.api.peer_app): F6 転出証明書情報 from the prefecture."""
    from jukics.api.peer_app import PeerApp, gunicorn_peer_names

    svc = service or Service(config)
    svc.keystore.data_key()
    return PeerApp(senders=config.peer_senders, receive=svc.tokurei.receive, audit=svc.audit,
                   peer_names=peer_names or gunicorn_peer_names)


def build_terminal_app(config: Config, *, identity: IdentitySource = identity_from_gunicorn,
                       service: Service | None = None) -> falcon.App:
    """The counter-terminal listener's app (jukics.api.terminal_app): login, F5, F7/F8."""
    from jukics.api.terminal_app import TerminalDeps, create_terminal_app
    from jukics.auth.sessions import SessionStore
    from jukics.store.corrections import Corrections

    term = config.terminal_listener
    if term is None:
        raise ValueError("no [terminal_listener] in the configuration")
    svc = service or Service(config)
    svc.keystore.data_key()
    router = svc.query_router
    # the links' rule names: "strict" is the terminal's "name_plus" (氏名 + 住所 / 氏名 + 生年月日)
    router.search_rule = "two_of_four" if term.search_rule == "two_of_four" else "strict"
    sessions = SessionStore(svc.engine, idle=dt.timedelta(minutes=term.session_idle_minutes),
                            absolute=dt.timedelta(minutes=term.session_absolute_minutes), clock=svc.clock)
    return create_terminal_app(TerminalDeps(
        allowed_terminals=term.allowed_terminals, identity=identity, operators=svc.operators, sessions=sessions,
        duties=config.duties, router=router, audit=svc.audit, purposes=term.purposes, result_cap=term.result_cap,
        corrections=Corrections(svc.engine, svc.store, svc.intake, svc.audit, clock=svc.clock),
        exports=svc.exports if config.export_media_dir is not None else None, export_dir=config.export_media_dir,
        max_body_bytes=min(config.max_body_bytes, 64 * 1024)))


def upgrade_database(config: Config) -> str:
    svc = Service(config)
    try:
        before = db.current_revision(svc.engine)
        after = db.upgrade(svc.engine)
    finally:
        svc.engine.dispose()  # no pooled session left behind (a PostgreSQL restore needs the database idle)
    return "db: up to date" if before == after else f"db: upgraded to {after}"


def database_status(config: Config) -> str:
    return database_status_of(Service(config).engine)


def run_purge(config: Config, *, dry_run: bool = False, clock: Callable[[], dt.datetime] = utc_now) -> dict:
    svc = Service(config, clock=clock)
    report = purge(svc.engine, clock, audit=svc.audit, dry_run=dry_run).as_dict()
    # 送付先情報 one business day after it was sent (F9); on the same timer as the retention purge
    report["sofusaki_deleted"] = svc.card.purge_sent(dry_run=dry_run)
    # F6: 転出証明書情報 nobody claimed within [tokurei] unclaimed_days
    report["tenshutsu_unclaimed_deleted"] = svc.tokurei.purge_unclaimed(dry_run=dry_run)
    return report


def verify_audit(config: Config, public_key: bytes | None = None) -> tuple[bool, dict[str, Any]]:
    """Verify the chain; checkpoints must carry valid signatures by the key store's checkpoint key.

    ``public_key`` (DER) verifies against a key given by the auditor instead (one shipped off the box),
    so a verifier need not trust the key the appliance reports now.
    """
    svc = Service(config)
    key = public_key if public_key is not None else svc.keystore.checkpoint_public_key()
    # A store that can sign must have signed: an unsigned checkpoint then means a stripped signature.
    report = verify(svc.engine, public_key=key, require_signatures=key is not None)
    out = report.as_dict()
    out["summary"] = report.summary
    return report.ok, out
