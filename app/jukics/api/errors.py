"""Errors the HTTP APIs return: always JSON, always a stable code, never personal data.

Body: {"error": {"code": "E_...", "message": "..."}}. Codes are listed in the OpenAPI files.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

log = logging.getLogger("jukics.api")

# code -> (HTTP status, description); the OpenAPI files document the same table.
API_ERRORS: dict[str, tuple[str, str]] = {
    "E_JSON_MALFORMED": (falcon.HTTP_400, "the body is not valid UTF-8 JSON"),
    "E_BODY_SHAPE": (falcon.HTTP_400, "the body does not have the documented shape"),
    "E_BODY_TOO_LARGE": (falcon.HTTP_413, "the body is larger than server.max_body_bytes"),
    "E_BATCH_TOO_LARGE": (falcon.HTTP_413, "the batch has more items than the documented maximum"),
    "E_BATCH_EMPTY": (falcon.HTTP_400, "the batch has no items"),
    "E_CONTENT_TYPE": (falcon.HTTP_415, "the body must be application/json"),
    "E_CLIENT_NOT_ALLOWED": (falcon.HTTP_403, "the client certificate is not an allowed identity for this API"),
    "E_NOT_FOUND": (falcon.HTTP_404, "no such resource"),
    # terminal API (統合端末): login, session, permission and search rules
    "E_LOGIN_FAILED": (falcon.HTTP_401, "user id, password or one-time code wrong"),
    "E_TOTP_REPLAY": (falcon.HTTP_401, "this one-time code was already used"),
    "E_ACCOUNT_LOCKED": (falcon.HTTP_403, "the account is locked after repeated failures"),
    "E_ACCOUNT_DISABLED": (falcon.HTTP_403, "the account is disabled"),
    "E_ACCOUNT_EXPIRED": (falcon.HTTP_403, "the account has expired"),
    "E_PASSWORD_EXPIRED": (falcon.HTTP_403, "the password has expired; change it before logging in"),
    "E_SESSION_REQUIRED": (falcon.HTTP_401, "no valid session: log in first"),
    "E_SESSION_EXPIRED": (falcon.HTTP_401, "the session expired (idle or absolute timeout)"),
    "E_SESSION_TERMINAL": (falcon.HTTP_403, "the session was opened on another terminal"),
    "E_FORBIDDEN": (falcon.HTTP_403, "the operator's roles do not permit this"),
    "E_PURPOSE_REQUIRED": (falcon.HTTP_400, "a purpose code from the configured table is required"),
    "E_ACCESS_NOT_ACKNOWLEDGED": (falcon.HTTP_400, "acknowledge that access is logged (access_logged_ack: true)"),
    "E_SEARCH_CRITERIA": (falcon.HTTP_400, "the criteria do not satisfy the search rule"),
    "E_CORRECTION_FIELDS": (falcon.HTTP_400, "a correction changes correctable fields only, with a reason"),
    "E_CORRECTION_UNKNOWN": (falcon.HTTP_404, "no such correction request"),
    "E_CORRECTION_STATE": (falcon.HTTP_409, "the request was already decided"),
    "E_SELF_APPROVAL": (falcon.HTTP_403, "a different person must approve (dual control)"),
    "E_UNKNOWN_RESIDENT": (falcon.HTTP_404, "no current resident with this 住民票コード"),
    # exports to media (jukics.exports) through the terminal API
    "E_EXPORT_FORBIDDEN": (falcon.HTTP_403, "the requester may not export (needs the export permission)"),
    "E_EXPORT_NO_WITNESS": (falcon.HTTP_400, "an export needs a second person as witness"),
    "E_EXPORT_WITNESS_SELF": (falcon.HTTP_403, "the witness must be another person than the requester"),
    "E_EXPORT_WITNESS_FAILED": (falcon.HTTP_403, "the witness did not authenticate"),
    "E_EXPORT_WITNESS_FORBIDDEN": (falcon.HTTP_403, "the witness's roles do not permit witnessing an export"),
    "E_EXPORT_DATASET": (falcon.HTTP_400, "unknown data set, or the search data set without codes"),
    "E_EXPORT_RECIPIENT": (falcon.HTTP_400, "no such recipient in [exports] recipients"),
    "E_EXPORT_MEDIA_ID": (falcon.HTTP_400, "a media id is 1-64 of A-Z a-z 0-9 . _ -"),
    "E_EXPORT_TARGET": (falcon.HTTP_409, "the export file exists already or the medium is not mounted"),
    "E_EXPORT_FAILED": (falcon.HTTP_500, "writing the export failed; nothing was left on the medium"),
    "E_METHOD": (falcon.HTTP_405, "method not allowed on this resource"),
    "E_UNAVAILABLE": (falcon.HTTP_503, "the service cannot serve this request now"),
    "E_INTERNAL": (falcon.HTTP_500, "internal error; the request was not applied"),
}


class ApiError(falcon.HTTPError):
    """An HTTP error carrying one of the stable API codes."""

    def __init__(self, code: str, message: str | None = None, **extra: Any) -> None:
        status, description = API_ERRORS[code]
        super().__init__(status, title=code, description=message or description)
        self.code = code  # type: ignore[assignment]  # our stable string code, in place of falcon's number
        self.extra = extra

    def to_dict(self, obj_type: type = dict) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.description}
        body.update(self.extra)
        return {"error": body}


def _http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict) -> None:
    if isinstance(ex, ApiError):
        resp.status = ex.status
        resp.media = ex.to_dict()
        return
    # Falcon's own errors (routing, method) mapped to our codes.
    status = ex.status_code
    code = {404: "E_NOT_FOUND", 405: "E_METHOD", 413: "E_BODY_TOO_LARGE", 415: "E_CONTENT_TYPE"}.get(
        status, "E_BODY_SHAPE" if 400 <= status < 500 else "E_INTERNAL"
    )
    resp.status = ex.status
    resp.media = {"error": {"code": code, "message": API_ERRORS[code][1]}}
    if ex.headers:
        resp.set_headers(ex.headers)


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    if isinstance(ex, falcon.HTTPError):
        _http_error(req, resp, ex, params)
        return
    # The message may hold personal data: log the type and the path only.
    log.error("unhandled %s on %s %s", type(ex).__name__, req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"error": {"code": "E_INTERNAL", "message": API_ERRORS["E_INTERNAL"][1]}}


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
