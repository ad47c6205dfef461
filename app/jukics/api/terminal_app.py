"""The counter-terminal listener's falcon app (統合端末 → CS): login, F5 identity check, F7/F8 search.

Every request needs both a terminal certificate listed in ``[terminal_listener] allowed_terminals``
(the TLS layer verified it against the terminal CA) and, except the login itself, an operator
session opened from that same terminal. Permissions come from the duties table (auth/rbac.py), so a
vendor account gets 403 on anything touching resident data. Before any search the client sends a
purpose code from the configured table and ``access_logged_ack: true`` (the notice is at GET
/v1/search-notice). The search rules themselves and the local -> prefecture -> national routing are
the links' QueryRouter (one rule set for the CLI and the terminals). Every call, refused ones
included, is in the audit chain; refusals before the query are ``terminal.refused`` records.
Resources stay thin: the rules live in auth/sessions.py, auth/rbac.py and links/routing.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon

from jukics import metrics
from jukics.api import errors
from jukics.api.errors import ApiError
from jukics.api.identity import IdentitySource
from jukics.audit.chain import AuditEvent, AuditLog
from jukics.auth.operators import OperatorStore
from jukics.auth.rbac import Duties
from jukics.auth.sessions import Session, SessionError, SessionStore
from jukics.domain.fields import RECORD_ITEMS
from jukics.exports import ExportError, ExportService, WitnessCredentials
from jukics.links.routing import QueryAnswer, QueryRefused, QueryRouter
from jukics.store.corrections import CorrectionError, Corrections

DEFAULT_NOTICE = ("この端末からの本人確認情報の検索・照会はすべて記録され、目的外の利用は処罰の対象となります。"
                  " Every search and view from this terminal is logged with your user id and purpose.")
_SEARCH_HTTP = {"E_SEARCH_KEYS": "E_SEARCH_CRITERIA", "E_INVALID_JUMINHYO_CODE": "E_SEARCH_CRITERIA",
                "E_PURPOSE_REQUIRED": "E_PURPOSE_REQUIRED"}


@dataclass(frozen=True)
class TerminalDeps:
    allowed_terminals: tuple[str, ...]
    identity: IdentitySource
    operators: OperatorStore
    sessions: SessionStore
    duties: Duties
    router: QueryRouter
    audit: AuditLog
    purposes: Mapping[str, str]  # code -> description
    corrections: Corrections | None = None
    exports: ExportService | None = None
    export_dir: Path | None = None  # [exports] media_dir: the mounted medium the API writes to
    result_cap: int = 50
    notice: str = DEFAULT_NOTICE
    max_body_bytes: int = 64 * 1024
    refusal_hook: Callable[[str], None] | None = field(default=None)


@dataclass
class _Ctx:
    terminal: str
    session: Session | None = None


class _Base:
    def __init__(self, deps: TerminalDeps) -> None:
        self.deps = deps

    def refuse(self, code: str, *, terminal: str, actor: str | None, action: str, purpose: str = "") -> ApiError:
        self.deps.audit.append(AuditEvent(actor=(actor or "unknown")[:32], terminal=terminal[:128] or "unknown",
                                          action="terminal.refused", purpose=(purpose or "none")[:64],
                                          query={"kind": action}, outcome="refused", code=code))
        return ApiError(code)

    def terminal(self, req: falcon.Request) -> str:
        ident = self.deps.identity(req.env)
        name = ident.matches(self.deps.allowed_terminals) if ident is not None else None
        if name is None:
            who = (ident.dns_names[0] if ident and ident.dns_names else (ident.common_name if ident else None))
            raise self.refuse("E_CLIENT_NOT_ALLOWED", terminal=who or "unknown", actor=None, action=req.path)
        return name

    def body(self, req: falcon.Request) -> dict[str, Any]:
        if req.content_length is None or req.content_length > self.deps.max_body_bytes:
            raise ApiError("E_BODY_TOO_LARGE" if req.content_length else "E_BODY_SHAPE")
        try:
            data = req.get_media()
        except falcon.MediaMalformedError:
            raise ApiError("E_JSON_MALFORMED") from None
        if not isinstance(data, dict):
            raise ApiError("E_BODY_SHAPE")
        return data

    def session(self, req: falcon.Request, terminal: str, permission: str, action: str,
                purpose: str = "") -> Session:
        auth = req.get_header("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
        try:
            s = self.deps.sessions.check(token, terminal=terminal)
        except SessionError as exc:
            raise self.refuse(exc.code, terminal=terminal, actor=exc.user_id, action=action, purpose=purpose) from None
        if not self.deps.duties.allows(s.roles, permission):
            raise self.refuse("E_FORBIDDEN", terminal=terminal, actor=s.user_id, action=action, purpose=purpose)
        return s


class SessionsResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal = self.terminal(req)
        data = self.body(req)
        user, password, totp = data.get("user_id"), data.get("password"), data.get("totp")
        if not all(isinstance(v, str) for v in (user, password, totp)):
            raise ApiError("E_BODY_SHAPE", "user_id, password and totp are strings")
        sessions = self.deps.sessions
        result = self.deps.operators.login(  # audited there; the session is opened in the login's transaction
            user, password, totp, terminal=terminal,
            on_success=lambda conn, ok: sessions.insert(conn, ok.user_id or user, ok.roles, terminal=terminal))
        if not result.ok or result.session is None:
            raise ApiError(result.code or "E_LOGIN_FAILED")
        token = result.session
        resp.status = falcon.HTTP_201
        resp.media = {"token": token, "user_id": result.user_id, "roles": list(result.roles),
                      "idle_timeout_s": int(self.deps.sessions.idle.total_seconds()),
                      "absolute_timeout_s": int(self.deps.sessions.absolute.total_seconds())}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal = self.terminal(req)
        auth = req.get_header("Authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else ""
        try:
            s = self.deps.sessions.check(token, terminal=terminal)
        except SessionError as exc:
            raise self.refuse(exc.code, terminal=terminal, actor=exc.user_id, action="logout") from None
        self.deps.sessions.close(token)
        self.deps.audit.append(AuditEvent(actor=s.user_id, terminal=terminal, action="operator.logout",
                                          purpose="login"))
        resp.status = falcon.HTTP_204


class NoticeResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.terminal(req)
        resp.media = {"notice": self.deps.notice,
                      "purposes": [{"code": k, "description": v} for k, v in sorted(self.deps.purposes.items())],
                      "result_cap": self.deps.result_cap}


class _QueryBase(_Base):
    permission = ""
    kind = ""

    def prepare(self, req: falcon.Request) -> tuple[str, Session, dict[str, Any], str]:
        terminal = self.terminal(req)
        data = self.body(req)
        purpose = data.get("purpose")
        purpose = purpose if isinstance(purpose, str) else ""
        session = self.session(req, terminal, self.permission, self.kind, purpose)
        if purpose not in self.deps.purposes:
            metrics.SEARCHES.labels(kind=self.kind, purpose="invalid", result="E_PURPOSE_REQUIRED").inc()
            raise self.refuse("E_PURPOSE_REQUIRED", terminal=terminal, actor=session.user_id, action=self.kind,
                              purpose=purpose)
        if data.get("access_logged_ack") is not True:
            metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result="E_ACCESS_NOT_ACKNOWLEDGED").inc()
            raise self.refuse("E_ACCESS_NOT_ACKNOWLEDGED", terminal=terminal, actor=session.user_id,
                              action=self.kind, purpose=purpose)
        return terminal, session, data, purpose

    def answer(self, resp: falcon.Response, run: Callable[[], QueryAnswer], purpose: str) -> None:
        try:
            answer = run()  # the router audits the query, refused or not
        except QueryRefused as exc:
            metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result=exc.code).inc()
            raise ApiError(_SEARCH_HTTP.get(exc.code, "E_SEARCH_CRITERIA"), exc.message) from None
        body = answer.as_dict()
        cap = self.deps.result_cap
        body["truncated"] = len(answer.results) > cap
        body["results"] = answer.results[:cap]
        body["found"] = len(body["results"])
        metrics.SEARCHES.labels(kind=self.kind, purpose=purpose,
                                result="found" if answer.results else "none").inc()
        resp.media = body


class IdentityCheckResource(_QueryBase):
    permission = "identity_check"
    kind = "identity_check"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal, session, data, purpose = self.prepare(req)
        code = data.get("juminhyo_code")
        if not isinstance(code, str):
            raise ApiError("E_BODY_SHAPE", "juminhyo_code is a string")
        self.answer(resp, lambda: self.deps.router.identity_check(code, purpose=purpose, actor=session.user_id,
                                                                  terminal=terminal), purpose)


class SearchResource(_QueryBase):
    permission = "search"
    kind = "search"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal, session, data, purpose = self.prepare(req)
        criteria = data.get("criteria")
        if not isinstance(criteria, dict) or not criteria:
            # an empty-criteria query is never run: refused and audited like a bad rule
            metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result="E_SEARCH_CRITERIA").inc()
            raise self.refuse("E_SEARCH_CRITERIA", terminal=terminal, actor=session.user_id, action=self.kind,
                              purpose=purpose)
        if any(isinstance(v, str) and set(v) & set("*%?＊％？") for v in criteria.values()):
            metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result="E_SEARCH_CRITERIA").inc()
            raise self.refuse("E_SEARCH_CRITERIA", terminal=terminal, actor=session.user_id, action=self.kind,
                              purpose=purpose)
        self.answer(resp, lambda: self.deps.router.search(criteria, purpose=purpose, actor=session.user_id,
                                                          terminal=terminal), purpose)


class ResidentResource(_Base):
    """GET /v1/residents/{code}?purpose=...&access_logged_ack=true: the current 本人確認情報 record.

    The same gate as a search (``view`` permission, purpose code, acknowledgement), then the local
    file only (a view is of this municipality's residents). Audited as ``query.view`` with the
    code as a keyed hash (the audit log hashes every value not on its non-personal list).
    """

    kind = "view"

    def on_get(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        terminal = self.terminal(req)
        purpose = req.get_param("purpose") or ""
        session = self.session(req, terminal, "view", self.kind, purpose)
        if purpose not in self.deps.purposes:
            metrics.SEARCHES.labels(kind=self.kind, purpose="invalid", result="E_PURPOSE_REQUIRED").inc()
            raise self.refuse("E_PURPOSE_REQUIRED", terminal=terminal, actor=session.user_id, action=self.kind,
                              purpose=purpose)
        if req.get_param("access_logged_ack") != "true":
            metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result="E_ACCESS_NOT_ACKNOWLEDGED").inc()
            raise self.refuse("E_ACCESS_NOT_ACKNOWLEDGED", terminal=terminal, actor=session.user_id,
                              action=self.kind, purpose=purpose)
        query = {"juminhyo_code": code, "source": "local"}
        code = code.strip()
        record, err = None, None
        if not self.deps.router.is_valid_code(code):
            err = "E_SEARCH_CRITERIA"
        else:
            record = self.deps.router.store.get_current(code)
            if record is None or record.get("record_status") != "current":
                err = "E_UNKNOWN_RESIDENT"  # a 消除者 is not viewed here
        self.deps.audit.append(AuditEvent(actor=session.user_id, terminal=terminal, action="query.view",
                                          purpose=purpose[:64], query=query, targets=[] if err else [code],
                                          result_count=0 if err else 1, outcome="refused" if err else "ok",
                                          code=err))
        metrics.SEARCHES.labels(kind=self.kind, purpose=purpose, result=err or "found").inc()
        if err is not None:
            raise ApiError(err, "not a valid 住民票コード (11 digits, check digit)" if err == "E_SEARCH_CRITERIA"
                           else None)
        assert record is not None
        resp.media = {"source": "local", "record": {k: record.get(k) for k in RECORD_ITEMS}}


class CorrectionsResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal = self.terminal(req)
        data = self.body(req)
        s = self.session(req, terminal, "correction_request", "correction.request")
        code, changes = data.get("juminhyo_code"), data.get("changes", {})
        if not isinstance(code, str) or not isinstance(changes, dict):
            raise ApiError("E_BODY_SHAPE", "juminhyo_code is a string, changes an object")
        assert self.deps.corrections is not None
        try:
            rid = self.deps.corrections.request(kind=str(data.get("kind", "correction")), juminhyo_code=code,
                                                changes=changes, reason=data.get("reason", ""),
                                                requester=s.user_id, terminal=terminal)  # audited there
        except CorrectionError as exc:
            raise ApiError(exc.code, exc.message) from None
        resp.status = falcon.HTTP_201
        resp.media = {"id": rid, "status": "pending"}


class CorrectionResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, rid: str) -> None:
        terminal = self.terminal(req)
        s = self.session(req, terminal, "correction_approve", "correction.view")
        assert self.deps.corrections is not None
        found = self.deps.corrections.get(rid)
        if found is None:
            raise self.refuse("E_CORRECTION_UNKNOWN", terminal=terminal, actor=s.user_id, action="correction.view")
        self.deps.audit.append(AuditEvent(actor=s.user_id, terminal=terminal, action="correction.view",
                                          purpose="correction", query={"request_id": rid},
                                          targets=[found["juminhyo_code"]], result_count=1))
        resp.media = found


class CorrectionDecisionResource(_Base):
    def __init__(self, deps: TerminalDeps, approve: bool) -> None:
        super().__init__(deps)
        self.approve = approve

    def on_post(self, req: falcon.Request, resp: falcon.Response, rid: str) -> None:
        terminal = self.terminal(req)
        s = self.session(req, terminal, "correction_approve", "correction.approve" if self.approve
                         else "correction.reject")
        assert self.deps.corrections is not None
        try:
            d = self.deps.corrections.decide(rid, approver=s.user_id, approve=self.approve, terminal=terminal)
        except CorrectionError as exc:
            raise ApiError(exc.code, exc.message) from None
        resp.media = {"id": d.id, "status": d.status, "result_code": d.result_code}


class ExportsResource(_Base):
    """POST /v1/exports: an age-encrypted data set onto the medium, witnessed; GET: the register.

    The requester is the session's operator (``export`` permission, held only by a management
    role); the witness logs in within the same request (user id, password, TOTP) inside
    ExportService, which checks, writes, records and audits everything (refusals included). The
    answer names the data set, row count, sha256 and media id, never the data.
    """

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal = self.terminal(req)
        s = self.session(req, terminal, "export", "export.list")
        assert self.deps.exports is not None
        rows = self.deps.exports.list()
        self.deps.audit.append(AuditEvent(actor=s.user_id, terminal=terminal, action="export.list", purpose="export",
                                          result_count=len(rows)))
        resp.media = {"exports": [{k: r[k] for k in _EXPORT_FIELDS if k in r} for r in rows]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        terminal = self.terminal(req)
        data = self.body(req)
        s = self.session(req, terminal, "export", "export.create")
        assert self.deps.exports is not None and self.deps.export_dir is not None
        dataset, recipient, media_id = data.get("dataset"), data.get("recipient"), data.get("media_id")
        codes, w = data.get("codes"), data.get("witness")
        if not all(isinstance(v, str) for v in (dataset, recipient, media_id)) or not (
                codes is None or (isinstance(codes, list) and all(isinstance(c, str) for c in codes))):
            raise ApiError("E_BODY_SHAPE", "dataset, recipient and media_id are strings, codes a list of strings")
        witness = None
        if w is not None:  # absent: ExportService refuses and audits E_EXPORT_NO_WITNESS
            if not (isinstance(w, dict) and all(isinstance(w.get(k), str) for k in ("user_id", "password", "totp"))):
                raise ApiError("E_BODY_SHAPE", "witness is {user_id, password, totp}, all strings")
            witness = WitnessCredentials(w["user_id"], w["password"], w["totp"])
        # the file name is the server's: media id (checked by ExportService), data set and time
        # (a bad media id or data set is refused by ExportService before the path is used)
        stamp = self.deps.exports.clock().strftime("%Y%m%dT%H%M%SZ")
        name = f"{media_id}-{dataset}-{stamp}.age" if _FILE_NAME.match(f"{media_id}-{dataset}") else "refused.age"
        try:
            rec = self.deps.exports.create(s.user_id, witness, dataset=dataset, recipient=recipient,
                                           media_id=media_id, target=self.deps.export_dir / name, codes=codes,
                                           terminal=terminal)
        except ExportError as exc:
            raise ApiError(exc.code, exc.message) from None
        except OSError:  # audited as E_EXPORT_FAILED by ExportService; no partial file is left
            raise ApiError("E_EXPORT_FAILED") from None
        resp.status = falcon.HTTP_201
        out = rec.as_dict()
        resp.media = {k: out[k] for k in _EXPORT_FIELDS} | {"file": Path(rec.path).name}


_EXPORT_FIELDS = ("export_id", "dataset", "rows", "sha256", "media_id", "recipient", "requester", "witness",
                  "started_at", "finished_at")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


def create_terminal_app(deps: TerminalDeps) -> falcon.App:
    app = falcon.App()
    errors.install(app)
    app.add_route("/v1/sessions", SessionsResource(deps))
    app.add_route("/v1/search-notice", NoticeResource(deps))
    app.add_route("/v1/identity-checks", IdentityCheckResource(deps))
    app.add_route("/v1/searches", SearchResource(deps))
    app.add_route("/v1/residents/{code}", ResidentResource(deps))
    if deps.corrections is not None:
        app.add_route("/v1/corrections", CorrectionsResource(deps))
        app.add_route("/v1/corrections/{rid}", CorrectionResource(deps))
        app.add_route("/v1/corrections/{rid}/approve", CorrectionDecisionResource(deps, True))
        app.add_route("/v1/corrections/{rid}/reject", CorrectionDecisionResource(deps, False))
    if deps.exports is not None and deps.export_dir is not None:
        app.add_route("/v1/exports", ExportsResource(deps))
    return app
