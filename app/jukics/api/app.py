"""The Falcon application factory. Resources are thin; the work happens in plain modules.

`create_app` receives every dependency (falcon `examples/look` style), so tests build the same app
with an in-memory store and a fake identity source, and gunicorn builds it from the config.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import falcon

from jukics.api import errors
from jukics.api.errors import ApiError
from jukics.api.identity import IdentitySource, PeerIdentity

MAX_BATCH_ITEMS = 5000
MAX_CARD_ITEMS = 1000
MAX_BATCH_ID = 64  # characters (intake.yaml: batch_id maxLength)


class IntakeService(Protocol):
    def submit(self, items: list[Any], *, client: str) -> dict[str, Any]:
        """Apply a batch; returns {"results": [...], "applied": n, "duplicate": n, "refused": n}."""
        ...

    def refuse_request(self, *, client: str | None, code: str) -> None:
        """Record a request refused before any item was looked at (audit chain)."""
        ...


class CardService(Protocol):
    def submit(self, items: Sequence[Any], *, client: str) -> dict[str, Any]: ...

    def notices(self, *, after: int = 0, limit: int = 500, client: str) -> list[dict[str, Any]]: ...

    def ack_notices(self, through: int, *, client: str) -> int: ...


@dataclass
class AppDeps:
    allowed_intake_clients: tuple[str, ...]
    intake: IntakeService
    health: Callable[[], Mapping[str, Any]]
    identity: IdentitySource
    max_body_bytes: int = 8 * 1024 * 1024
    card: CardService | None = None  # F9/F10 and what 既存住基 fetches (jukics.links.card)


def _read_json(req: falcon.Request, max_bytes: int) -> Any:
    if req.content_type is None or not req.content_type.split(";")[0].strip() == "application/json":
        raise ApiError("E_CONTENT_TYPE")
    length = req.content_length
    if length is not None and length > max_bytes:
        raise ApiError("E_BODY_TOO_LARGE")
    # Read one byte past the limit so a chunked body cannot slip through.
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError("E_BODY_TOO_LARGE")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ApiError("E_JSON_MALFORMED") from None


def _is_batch_id(value: object) -> bool:
    # It is echoed in the response, so it must be text that can be written back (no lone surrogate).
    if not isinstance(value, str) or len(value) > MAX_BATCH_ID:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class HealthResource:
    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        report = dict(self.deps.health())
        resp.media = report
        resp.status = falcon.HTTP_200 if report.get("status") == "ok" else falcon.HTTP_503


class IntakeUpdatesResource:
    """POST /v1/intake/updates: F1, 既存住基 → CS. Only the configured 既存住基 identity may call."""

    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = req.context.client
        if client is None:
            self.deps.intake.refuse_request(client=req.context.peer_name, code="E_CLIENT_NOT_ALLOWED")
            raise ApiError("E_CLIENT_NOT_ALLOWED")
        try:
            body = _read_json(req, self.deps.max_body_bytes)
            shape_ok = isinstance(body, dict) and not set(body) - {"items", "batch_id"}
            if not shape_ok or not isinstance(body.get("items"), list):
                raise ApiError("E_BODY_SHAPE", 'expected {"items": [...]} (and optionally "batch_id")')
            if "batch_id" in body and not _is_batch_id(body["batch_id"]):
                raise ApiError("E_BODY_SHAPE", "batch_id must be a string of at most 64 characters")
            items = body["items"]
            if not items:
                raise ApiError("E_BATCH_EMPTY")
            if len(items) > MAX_BATCH_ITEMS:
                raise ApiError("E_BATCH_TOO_LARGE", f"at most {MAX_BATCH_ITEMS} items per batch")
        except ApiError as exc:
            self.deps.intake.refuse_request(client=client, code=str(exc.code))
            raise
        outcome = self.deps.intake.submit(items, client=client)
        if isinstance(body.get("batch_id"), str):
            outcome = {"batch_id": body["batch_id"], **outcome}
        resp.media = outcome
        # Every item has its own result; the status sums them up: 503 when the store rolled the
        # batch back (retry it), 422 when an item was refused, else 200.
        if outcome.get("error", 0):
            resp.status = falcon.HTTP_503
        elif outcome.get("refused", 0):
            resp.status = falcon.HTTP_422
        else:
            resp.status = falcon.HTTP_200


def _kizon_client(req: falcon.Request, deps: AppDeps) -> str:
    client = req.context.client
    if client is None:
        deps.intake.refuse_request(client=req.context.peer_name, code="E_CLIENT_NOT_ALLOWED")
        raise ApiError("E_CLIENT_NOT_ALLOWED")
    return str(client)


class CardIntakeResource:
    """POST /v1/intake/card: F9 送付先情報 and F10 card events, 既存住基 → CS (→ カード管理システム)."""

    def __init__(self, deps: AppDeps, card: CardService) -> None:
        self.deps = deps
        self.card = card

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = _kizon_client(req, self.deps)
        try:
            body = _read_json(req, self.deps.max_body_bytes)
            if not isinstance(body, dict) or set(body) != {"items"} or not isinstance(body["items"], list):
                raise ApiError("E_BODY_SHAPE", 'expected {"items": [...]}')
            if not body["items"]:
                raise ApiError("E_BATCH_EMPTY")
            if len(body["items"]) > MAX_CARD_ITEMS:
                raise ApiError("E_BATCH_TOO_LARGE", f"at most {MAX_CARD_ITEMS} items per batch")
        except ApiError as exc:
            self.deps.intake.refuse_request(client=client, code=str(exc.code))
            raise
        outcome = self.card.submit(body["items"], client=client)
        resp.media = outcome
        resp.status = falcon.HTTP_422 if outcome["refused"] else falcon.HTTP_200


class KizonNoticesResource:
    """GET /v1/kizon/notices?after=ID: what the CS holds for 既存住基 (F10 突合結果), oldest first."""

    def __init__(self, deps: AppDeps, card: CardService) -> None:
        self.deps = deps
        self.card = card

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = _kizon_client(req, self.deps)
        after = req.get_param_as_int("after", min_value=0, default=0)
        limit = req.get_param_as_int("limit", min_value=1, max_value=1000, default=500)
        resp.media = {"notices": self.card.notices(after=after, limit=limit, client=client)}


class KizonNoticesAckResource:
    """POST /v1/kizon/notices/ack {"through": ID}: 既存住基 stored them; the CS deletes them."""

    def __init__(self, deps: AppDeps, card: CardService) -> None:
        self.deps = deps
        self.card = card

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = _kizon_client(req, self.deps)
        body = _read_json(req, 4096)
        through = body.get("through") if isinstance(body, dict) else None
        if not isinstance(through, int) or isinstance(through, bool) or through < 0:
            raise ApiError("E_BODY_SHAPE", 'expected {"through": ID}')
        resp.media = {"deleted": self.card.ack_notices(through, client=client)}


class ClientIdentityMiddleware:
    """Resolves the calling client's certificate to an allowed identity (or None) on every request."""

    def __init__(self, identity: IdentitySource, allowed: tuple[str, ...]) -> None:
        self.identity = identity
        self.allowed = allowed

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        peer: PeerIdentity | None = self.identity(req.env)
        req.context.peer_name = (peer.dns_names[0] if peer.dns_names else peer.common_name) if peer else None
        req.context.client = peer.matches(self.allowed) if peer else None


def create_app(deps: AppDeps) -> falcon.App:
    app = falcon.App(middleware=[ClientIdentityMiddleware(deps.identity, deps.allowed_intake_clients)])
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    app.add_route("/v1/health", HealthResource(deps))
    app.add_route("/v1/intake/updates", IntakeUpdatesResource(deps))
    if deps.card is not None:
        app.add_route("/v1/intake/card", CardIntakeResource(deps, deps.card))
        app.add_route("/v1/kizon/notices", KizonNoticesResource(deps, deps.card))
        app.add_route("/v1/kizon/notices/ack", KizonNoticesAckResource(deps, deps.card))
    return app
