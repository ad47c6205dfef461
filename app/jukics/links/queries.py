"""Synchronous queries to the 都道府県サーバ (F4 整合性確認, F5 identity check, F7/F8 search).

Unlike updates these do not go through the outbox: an operator waits for the answer. They use the
prefecture link's transport (its client certificate, trust bundle and pinned names), so a peer that
fails authentication gets no query either (:class:`LinkAuthError`). Residents of other prefectures
are asked with ``scope = "national"``: the prefecture relays the query to the 全国サーバ
(:mod:`jukics.links.protocol`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from jukics.config import PeerConfig
from jukics.links import protocol as p
from jukics.links.transport import LinkAuthError, PeerTransport, describe_error

E_PEER_UNAVAILABLE: Final = "E_PEER_UNAVAILABLE"  # not reachable, timed out, or answered 5xx
E_PEER_REFUSED: Final = "E_PEER_REFUSED"  # answered 4xx without a code of its own
E_PEER_ANSWER: Final = "E_PEER_ANSWER"  # the answer does not follow the protocol


class PeerQueryError(Exception):
    """A query the peer did not answer; ``code`` is stable (the peer's own code for a refusal)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class PeerQueries:
    """Queries over one link (the prefecture). One connection, not shared between threads."""

    def __init__(self, peer: PeerConfig, sender: str, *, timeout: float = 10.0,
                 transport: PeerTransport | None = None) -> None:
        self.sender = sender
        self.transport = transport or PeerTransport(peer, timeout=timeout)

    @property
    def peer_name(self) -> str:
        return self.transport.name

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data = json.dumps({"sender": self.sender, **body}, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            resp = self.transport.post(path, data)
        except LinkAuthError:
            raise
        except OSError as exc:
            raise PeerQueryError(E_PEER_UNAVAILABLE, f"{self.peer_name}: {describe_error(exc)}") from None
        try:
            answer = json.loads(resp.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if resp.status != 200:
            code = answer.get("code") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else None
            if resp.status >= 500:
                raise PeerQueryError(E_PEER_UNAVAILABLE,
                                     f"{self.peer_name} answered {resp.status}: {code or ''} {message or ''}".strip())
            raise PeerQueryError(code if isinstance(code, str) and code.startswith("E_") else E_PEER_REFUSED,
                                 f"{self.peer_name} refused ({resp.status}): {message or 'no reason given'}"[:300])
        if not isinstance(answer, dict):
            raise PeerQueryError(E_PEER_ANSWER, f"{self.peer_name}: the answer is not a JSON object")
        return answer

    def identity_check(self, juminhyo_code: str, *, purpose: str, scope: str) -> dict[str, Any] | None:
        """F5: the peer's record for a 住民票コード (4情報, no 個人番号), None when it has none."""
        answer = self._post(p.IDENTITY_CHECK_PATH, {"purpose": purpose, "scope": scope,
                                                    "juminhyo_code": juminhyo_code})
        record = answer.get("record")
        if not isinstance(answer.get("found"), bool) or (record is not None and not isinstance(record, dict)):
            raise PeerQueryError(E_PEER_ANSWER, f"{self.peer_name}: malformed identity-check answer")
        return record if answer["found"] else None

    def search(self, criteria: Mapping[str, str], *, purpose: str, scope: str) -> list[dict[str, Any]]:
        """F7/F8: the peer's records matching ``criteria`` (at most :data:`protocol.SEARCH_LIMIT`)."""
        answer = self._post(p.SEARCH_PATH, {"purpose": purpose, "scope": scope, "criteria": dict(criteria)})
        results = answer.get("results")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise PeerQueryError(E_PEER_ANSWER, f"{self.peer_name}: malformed search answer")
        return results[: p.SEARCH_LIMIT]

    def consistency(self, link: str, *, check_id: str, as_of: str, records: Sequence[Mapping[str, str]],
                    last: bool) -> dict[str, Any]:
        """F4: one part of a 整合性確認; the peer's differences (``unknown_to_sender`` with the last part)."""
        answer = self._post(p.consistency_path(link), {"check_id": check_id, "as_of": as_of, "last": last,
                                                       "records": list(records)})
        lists = ("missing_at_peer", "unknown_to_sender", "mismatched")
        if not isinstance(answer.get("checked"), int) or not all(
                isinstance(answer.get(k), list) and all(isinstance(c, str) for c in answer[k]) for k in lists):
            raise PeerQueryError(E_PEER_ANSWER, f"{self.peer_name}: malformed 整合性確認 answer")
        return answer

    def close(self) -> None:
        self.transport.close()
