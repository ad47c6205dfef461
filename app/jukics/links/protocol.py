"""The jukics wire protocol between a CS and its peers (SPEC §2): JSON over HTTPS with mutual TLS.

The real 住基ネット protocol is J-LIS proprietary and not public; this is ours, kept in this one
module so a real adapter can replace it. Documented in ``docs/links.md`` and ``api/links.yaml``.

Delivery (CS → peer, and peer → peer in the simulation): ``POST /v1/links/{link}/messages`` with
``{"messages": [envelope, ...]}`` (at most :data:`MAX_BATCH`, ascending ``seq``). An envelope::

    {"sender": "cs-142140", "link": "prefecture", "seq": 17, "message_id": "prefecture-17",
     "type": "update_notice", "legal_basis": "住基法第30条の6", "sent_at": "2026-12-06T09:00:00Z",
     "payload": {...}}

The peer handles the messages in order and answers ``200 {"results": [result, ...]}``, one result per
message it handled, in order; it may stop early (a shorter list) and the sender re-sends the rest. A
result is ``{"seq": 17, "status": "ack" | "duplicate" | "nack", "code": "E_...", "detail": "...",
"data": {...}}`` (``data`` optional: the card system's 突合結果 of an F10 event):

- ``ack``: stored (and, at a prefecture, queued for forwarding);
- ``duplicate``: (sender, link, seq) was handled before; the earlier outcome stands (a re-send after a
  lost answer, or a replay) and nothing is stored twice;
- ``nack``: refused for good (``code`` says why, e.g. :data:`E_FIELD_NOT_ALLOWED`); the sender moves
  the message to its dead-letter store and goes on with the next one.

Any other HTTP status means "not handled, try again later" (503 while the peer cannot store, 4xx for
a refused batch: the body is ``{"code": "E_...", "message": "..."}``). The sender is the TLS client
certificate's identity; an envelope whose ``sender`` differs from it is refused (E_SENDER_MISMATCH).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

PROTOCOL_VERSION: Final = "v1"
MAX_BATCH: Final = 1000
CONTENT_TYPE: Final = "application/json"

#: Message types per link, and what each carries (SPEC §2).
UPDATE_NOTICE: Final = "update_notice"  # F2: exactly the 8 items (fields.F2_ITEMS)
FUHYO_NOTICE: Final = "fuhyo_notice"  # 附票本人確認情報: like F2, never 個人番号 (seed 004)
SOFUSAKI: Final = "sofusaki"  # F9 送付先情報: the 既存住基's object, unedited
CARD_EVENT: Final = "card_event"  # F10 card lifecycle event; the ack's ``data`` is the 突合結果
TENSHUTSU_CERT: Final = "tenshutsu_cert"  # F6 転出証明書情報, prefecture -> the 転入地 CS's peer listener
TENNYU_NOTICE: Final = "tennyu_notice"  # F6 転入通知情報, the 転入地 CS -> prefecture -> the 転出地 CS

STATUS_ACK: Final = "ack"
STATUS_DUPLICATE: Final = "duplicate"
STATUS_NACK: Final = "nack"
STATUSES: Final = (STATUS_ACK, STATUS_DUPLICATE, STATUS_NACK)

# Stable codes of the protocol layer (peers NACK or refuse with these).
E_PROTOCOL: Final = "E_PROTOCOL"  # the body is not a valid batch
E_SENDER_MISMATCH: Final = "E_SENDER_MISMATCH"  # envelope sender is not the TLS client identity
E_UNKNOWN_SENDER: Final = "E_UNKNOWN_SENDER"  # the client identity is not a known CS
E_FIELD_NOT_ALLOWED: Final = "E_FIELD_NOT_ALLOWED"  # a payload item outside the peer's whitelist
E_FIELD_MISSING: Final = "E_FIELD_MISSING"
E_UNKNOWN_TYPE: Final = "E_UNKNOWN_TYPE"
E_LEGAL_BASIS: Final = "E_LEGAL_BASIS"  # (destination, type) not allowed by the legal-basis table
E_UNAVAILABLE: Final = "E_UNAVAILABLE"


class ProtocolError(Exception):
    """A batch or answer that does not follow this protocol; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def messages_path(link: str) -> str:
    return f"/{PROTOCOL_VERSION}/links/{link}/messages"


def utc_stamp(when: dt.datetime | None = None) -> str:
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Envelope:
    sender: str
    link: str
    seq: int
    message_id: str
    type: str
    legal_basis: str
    sent_at: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "link": self.link,
            "seq": self.seq,
            "message_id": self.message_id,
            "type": self.type,
            "legal_basis": self.legal_basis,
            "sent_at": self.sent_at,
            "payload": dict(self.payload),
        }


@dataclass(frozen=True)
class Result:
    seq: int
    status: str
    code: str | None = None
    detail: str | None = None
    data: Mapping[str, Any] | None = None  # what the peer answers besides the status (F10: 突合結果)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "status": self.status}
        if self.code:
            out["code"] = self.code
        if self.detail:
            out["detail"] = self.detail
        if self.data is not None:
            out["data"] = dict(self.data)
        return out


_ENVELOPE_KEYS: Final = frozenset({"sender", "link", "seq", "message_id", "type", "legal_basis", "sent_at", "payload"})


def encode_batch(envelopes: Iterable[Envelope]) -> bytes:
    return json.dumps({"messages": [e.as_dict() for e in envelopes]}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def decode_batch(body: bytes, *, link: str | None = None) -> list[Envelope]:
    """Parse and check a delivery batch: known keys only, types, one link, ascending seq."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(E_PROTOCOL, f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or set(data) != {"messages"} or not isinstance(data["messages"], list):
        raise ProtocolError(E_PROTOCOL, 'the body must be {"messages": [...]}')
    raw = data["messages"]
    if not 1 <= len(raw) <= MAX_BATCH:
        raise ProtocolError(E_PROTOCOL, f"a batch holds 1 to {MAX_BATCH} messages, got {len(raw)}")
    out: list[Envelope] = []
    last = 0
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or set(m) != _ENVELOPE_KEYS:
            raise ProtocolError(E_PROTOCOL, f"{where}: an envelope has exactly the keys {sorted(_ENVELOPE_KEYS)}")
        seq = m["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ProtocolError(E_PROTOCOL, f"{where}.seq: must be a positive integer")
        if seq <= last:
            raise ProtocolError(E_PROTOCOL, f"{where}.seq: sequence numbers must ascend within a batch")
        last = seq
        for key in ("sender", "link", "message_id", "type", "legal_basis", "sent_at"):
            if not isinstance(m[key], str) or not m[key] or len(m[key]) > 200:
                raise ProtocolError(E_PROTOCOL, f"{where}.{key}: must be a non-empty string")
        if link is not None and m["link"] != link:
            raise ProtocolError(E_PROTOCOL, f"{where}.link: {m['link']!r} sent to the {link!r} endpoint")
        if not isinstance(m["payload"], dict):
            raise ProtocolError(E_PROTOCOL, f"{where}.payload: must be an object")
        out.append(Envelope(**m))
    if len({e.sender for e in out}) != 1:
        raise ProtocolError(E_PROTOCOL, "a batch comes from one sender")
    return out


def encode_results(results: Sequence[Result]) -> bytes:
    return json.dumps({"results": [r.as_dict() for r in results]}, ensure_ascii=False).encode()


def decode_results(body: bytes, sent: Sequence[Envelope]) -> list[Result]:
    """Parse a peer's answer and check it answers a prefix of ``sent``, in order."""
    try:
        data = json.loads(body)
        raw = data["results"]
        if not isinstance(raw, list):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ProtocolError(E_PROTOCOL, 'the answer must be {"results": [...]}') from None
    if len(raw) > len(sent):
        raise ProtocolError(E_PROTOCOL, f"{len(raw)} results for {len(sent)} messages")
    out = []
    for r, e in zip(raw, sent, strict=False):
        if not isinstance(r, dict) or r.get("seq") != e.seq or r.get("status") not in STATUSES:
            raise ProtocolError(E_PROTOCOL, f"result for seq {e.seq} is malformed or out of order: {r!r}"[:300])
        code, detail, data = r.get("code"), r.get("detail"), r.get("data")
        if data is not None and not isinstance(data, dict):
            raise ProtocolError(E_PROTOCOL, f"the data of seq {e.seq} is not an object")
        if r["status"] == STATUS_NACK and not isinstance(code, str):
            raise ProtocolError(E_PROTOCOL, f"the NACK of seq {e.seq} carries no code")
        out.append(Result(e.seq, r["status"], code if isinstance(code, str) else None,
                          str(detail)[:500] if detail is not None else None, data))
    return out


# ---- queries (synchronous request / answer; no outbox) ----------------------------------------
#
# POST /v1/identity/check   F5:  {"sender", "purpose", "scope"?, "juminhyo_code"}
#                                -> {"found": bool, "record": {F2 items except 個人番号} | null}
# POST /v1/search           F7/F8: {"sender", "purpose", "scope"?, "criteria": {...}} where criteria is one of
#                                {"juminhyo_code"}, {"my_number"}, or >= 2 of name_kanji / birth_date /
#                                address (性別 never counts) -> {"results": [record, ...]} (at most 50)
# POST /v1/consistency/{link}  F4: {"sender", "as_of", "records": [{"juminhyo_code", "digest"}, ...]}
#                                -> {"checked": n, "missing_at_peer": [code...], "unknown_to_sender":
#                                    [code...], "mismatched": [code...]}
# ``scope`` (F5, F7/F8): "prefecture" (the default: the residents this 都道府県サーバ holds) or
# "national" (the prefecture relays the query to the 全国サーバ as itself and returns its answer).
# A refusal is an HTTP 4xx with {"code": "E_...", "message": "..."}; 502/503 when the prefecture could
# not reach the 全国サーバ.

IDENTITY_CHECK_PATH: Final = f"/{PROTOCOL_VERSION}/identity/check"
SEARCH_PATH: Final = f"/{PROTOCOL_VERSION}/search"
SEARCH_LIMIT: Final = 50
SCOPE_PREFECTURE: Final = "prefecture"
SCOPE_NATIONAL: Final = "national"
SCOPES: Final = (SCOPE_PREFECTURE, SCOPE_NATIONAL)
E_SEARCH_KEYS: Final = "E_SEARCH_KEYS"  # the criteria do not satisfy the search-key rule


def consistency_path(link: str) -> str:
    return f"/{PROTOCOL_VERSION}/consistency/{link}"


def record_digest(record: Mapping[str, Any], items: Sequence[str]) -> str:
    """整合性確認 digest of one record: SHA-256 of the canonical JSON of exactly ``items`` (hex).

    Both sides compute it over the same items (F2: the 8 items; 附票: without 個人番号), so a
    difference in any item shows as a mismatch without the file being sent item by item.
    """
    canonical = json.dumps({k: record.get(k) for k in items}, ensure_ascii=False, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
