"""F5 identity check and F7/F8 search, routed by where the resident lives (SPEC §2).

Tiers, in order: this CS's own file (``local``), the 都道府県サーバ (``prefecture``), the 全国サーバ
through the prefecture (``national``). A query stops at the first tier that finds someone. A search
whose 住所 names another prefecture skips the local and prefecture tiers; one whose 住所 is in this
prefecture skips the national tier. A 住民票コード or 個人番号 says nothing about where the person
lives, so those go through every tier until found.

Search keys (server-side; the terminal API of the operators issue uses this too): 住民票コード
alone, 個人番号 alone, or 氏名 with 生年月日 or 住所 (``strict``, the default); ``two_of_four`` also
admits 生年月日 + 住所, the literal "2 of the 4情報" reading. 性別 never counts and is refused as a
key. 氏名 is ``name_kana`` (ふりがな: the local file's search index, 清音化 applied) and/or
``name_kanji`` (漢字氏名: what the peers hold, F2). A tier that cannot search with the given keys
(the local file needs ふりがな, the peers 漢字) is skipped and said so in the answer. A purpose code is
required before anything is searched, results are capped at :data:`protocol.SEARCH_LIMIT`, and every
query, refused ones included, is one event in the audit chain (the keys only as keyed hashes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.domain.places import prefecture_of_address
from jukics.links import protocol as p
from jukics.links.queries import PeerQueries, PeerQueryError
from jukics.links.transport import LinkAuthError

LOCAL, PREFECTURE, NATIONAL = "local", "prefecture", "national"
TIERS: Final = (LOCAL, PREFECTURE, NATIONAL)
SEARCH_RULES: Final = ("strict", "two_of_four")
NAME_KEYS: Final = frozenset({"name_kana", "name_kanji"})
SEARCH_KEYS: Final = frozenset({"juminhyo_code", "my_number", "birth_date", "address"}) | NAME_KEYS
#: What a result shows: the 4情報 and the 住民票コード; never 個人番号 (SPEC §2 F5).
RESULT_ITEMS: Final = ("juminhyo_code", "name_kanji", "birth_date", "sex", "address")
PURPOSE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")

E_PURPOSE_REQUIRED: Final = "E_PURPOSE_REQUIRED"
E_SEARCH_KEYS: Final = p.E_SEARCH_KEYS
E_INVALID_JUMINHYO_CODE: Final = "E_INVALID_JUMINHYO_CODE"


class QueryRefused(Exception):
    """The query breaks a rule and was not run anywhere; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass
class QueryAnswer:
    """Who answered (``source``: a tier, or None when nobody found anyone) and what."""

    source: str | None
    results: list[dict[str, Any]]
    asked: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # tier -> why it was not asked
    errors: dict[str, str] = field(default_factory=dict)  # tier -> "E_CODE: message"

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "found": len(self.results), "results": self.results,
                "asked": self.asked, "skipped": self.skipped, "errors": self.errors}


def check_search_keys(criteria: Mapping[str, Any], rule: str = "strict") -> dict[str, str]:
    """The criteria with empty values dropped, or :class:`QueryRefused` (E_SEARCH_KEYS)."""
    if rule not in SEARCH_RULES:
        raise ValueError(f"search rule must be one of {SEARCH_RULES}")
    given = {k: v.strip() for k, v in criteria.items() if isinstance(v, str) and v.strip()}
    unknown = set(criteria) - SEARCH_KEYS
    if "sex" in unknown:
        raise QueryRefused(E_SEARCH_KEYS, "性別 (sex) is never a search key")
    if unknown:
        raise QueryRefused(E_SEARCH_KEYS, f"unknown search keys: {', '.join(sorted(unknown))}")
    keys = set(given)
    if keys in ({"juminhyo_code"}, {"my_number"}):
        return given
    if keys & {"juminhyo_code", "my_number"}:
        raise QueryRefused(E_SEARCH_KEYS, "住民票コード and 個人番号 are searched alone")
    has_name = bool(keys & NAME_KEYS)
    others = keys & {"birth_date", "address"}
    if (has_name and others) or (rule == "two_of_four" and others == {"birth_date", "address"}):
        return given
    wanted = "氏名 + 生年月日 or 氏名 + 住所" + (" or 生年月日 + 住所" if rule == "two_of_four" else "")
    raise QueryRefused(E_SEARCH_KEYS, f"search by 住民票コード, 個人番号, or {wanted} (got: "
                                      f"{', '.join(sorted(keys)) or 'nothing'})")


def _project(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in RESULT_ITEMS}


def _peer_criteria(criteria: Mapping[str, str]) -> dict[str, str] | None:
    """The criteria as a peer takes them (漢字氏名, no ふりがな), None when a peer cannot search them."""
    out = {k: v for k, v in criteria.items() if k != "name_kana"}
    if "name_kana" in criteria and "name_kanji" not in criteria and len(out) < 2:
        return None  # 氏名 was given only as ふりがな, which the peers do not hold
    return out


class QueryRouter:
    """Runs F5 and F7/F8 queries across the tiers and audits each one."""

    def __init__(self, store: Any, audit: AuditLog, *, prefecture: str | None,
                 peers: Callable[[], PeerQueries] | None, is_valid_code: Callable[[str], bool],
                 search_rule: str = "strict") -> None:
        self.store = store
        self.audit = audit
        self.prefecture = prefecture  # this CS's 都道府県 name
        self.peers = peers  # opens the prefecture link's query client; None: no prefecture link
        self.is_valid_code = is_valid_code
        self.search_rule = search_rule

    # ---- F5 --------------------------------------------------------------------------------
    def identity_check(self, juminhyo_code: str, *, purpose: str, actor: str, terminal: str) -> QueryAnswer:
        def run() -> QueryAnswer:
            code = juminhyo_code.strip()
            if not self.is_valid_code(code):
                raise QueryRefused(E_INVALID_JUMINHYO_CODE, "not a valid 住民票コード (11 digits, check digit)")
            answer = QueryAnswer(None, [])
            record = self.store.get_current(code)
            answer.asked.append(LOCAL)
            if record is not None and record.get("record_status") == "current":
                answer.source, answer.results = LOCAL, [_project(record)]
                return answer
            for tier in (PREFECTURE, NATIONAL):
                found = self._ask(answer, tier, lambda q, t: q.identity_check(code, purpose=purpose, scope=t))
                if found:
                    answer.source, answer.results = tier, [_project(found)]
                    return answer
            return answer

        return self._audited("query.identity_check", {"juminhyo_code": juminhyo_code}, purpose, actor,
                             terminal, run)

    # ---- F7/F8 -----------------------------------------------------------------------------
    def search(self, criteria: Mapping[str, Any], *, purpose: str, actor: str, terminal: str) -> QueryAnswer:
        def run() -> QueryAnswer:
            given = check_search_keys(criteria, self.search_rule)
            answer = QueryAnswer(None, [])
            tiers = list(TIERS)
            where = prefecture_of_address(given["address"]) if "address" in given else None
            if where is not None and where != self.prefecture:
                for tier in (LOCAL, PREFECTURE):
                    answer.skipped[tier] = f"the address is in {where}"
                tiers = [NATIONAL]
            elif where is not None:
                answer.skipped[NATIONAL] = f"the address is in {where}, this prefecture"
                tiers = [LOCAL, PREFECTURE]
            for tier in tiers:
                if tier == LOCAL:
                    found = self._search_local(given, answer)
                else:
                    peer_criteria = _peer_criteria(given)
                    if peer_criteria is None:
                        answer.skipped[tier] = "peers search 漢字氏名: ふりがな alone is not enough"
                        continue
                    found = self._ask(answer, tier, lambda q, t, c=peer_criteria: q.search(c, purpose=purpose,
                                                                                          scope=t)) or []
                if found:
                    answer.source, answer.results = tier, [_project(r) for r in found[: p.SEARCH_LIMIT]]
                    return answer
            return answer

        return self._audited("query.search", dict(criteria), purpose, actor, terminal, run)

    def _search_local(self, given: Mapping[str, str], answer: QueryAnswer) -> list[dict[str, Any]]:
        if "juminhyo_code" in given:
            record = self.store.get_current(given["juminhyo_code"])
            rows = [record] if record is not None else []
        elif "my_number" in given:
            rows = self.store.find_by_my_number(given["my_number"])
        elif "name_kana" in given and "birth_date" in given:
            rows = self.store.find_by_name_and_birth_date(given["name_kana"], given["birth_date"])
        elif "name_kana" in given and "address" in given:
            rows = self.store.find_by_name_and_address(given["name_kana"], given["address"])
        elif "birth_date" in given and "address" in given and not given.keys() & NAME_KEYS:
            # two_of_four only (check_search_keys refuses the pair otherwise): like the other pairs,
            # through the keyed hashes of the local file
            rows = self.store.find_by_birth_date_and_address(given["birth_date"], given["address"])
        else:
            answer.skipped[LOCAL] = "the local file is searched by ふりがな氏名 (name_kana)"
            return []
        answer.asked.append(LOCAL)
        # Every given key must match (e.g. 漢字氏名 as well as ふりがな); 消除者 are not found.
        return [r for r in rows if r.get("record_status") == "current"
                and all(r.get(k) == v for k, v in given.items() if k != "name_kana")][: p.SEARCH_LIMIT]

    def _ask(self, answer: QueryAnswer, tier: str, call: Callable[[PeerQueries, str], Any]) -> Any:
        if self.peers is None:
            answer.skipped[tier] = "no prefecture link is configured"
            return None
        answer.asked.append(tier)
        queries = self.peers()
        try:
            return call(queries, tier)
        except LinkAuthError as exc:
            answer.errors[tier] = f"{exc.code}: {exc.reason}"
        except PeerQueryError as exc:
            answer.errors[tier] = f"{exc.code}: {exc.message}"
        finally:
            queries.close()
        return None

    def _audited(self, action: str, query: Mapping[str, Any], purpose: str, actor: str, terminal: str,
                 run: Callable[[], QueryAnswer]) -> QueryAnswer:
        if not PURPOSE_RE.fullmatch(purpose or ""):
            self._audit(action, query, purpose, actor, terminal, None, "refused", E_PURPOSE_REQUIRED)
            raise QueryRefused(E_PURPOSE_REQUIRED, "a purpose code (1-32 of A-Z a-z 0-9 _ . -) is required "
                                                   "before any search: every search is logged")
        try:
            answer = run()
        except QueryRefused as exc:
            self._audit(action, query, purpose, actor, terminal, None, "refused", exc.code)
            raise
        outcome, code = "ok", None
        if answer.source is None and answer.errors:
            outcome, code = "error", next(iter(answer.errors.values())).split(":", 1)[0]
        self._audit(action, query, purpose, actor, terminal, answer, outcome, code)
        return answer

    def _audit(self, action: str, query: Mapping[str, Any], purpose: str, actor: str, terminal: str,
               answer: QueryAnswer | None, outcome: str, code: str | None) -> None:
        logged = {**query, "source": answer.source if answer else None,
                  "asked": ",".join(answer.asked) if answer else ""}
        targets = [str(r["juminhyo_code"]) for r in answer.results if r.get("juminhyo_code")] if answer else []
        self.audit.append(AuditEvent(actor=actor, terminal=terminal, action=action, purpose=(purpose or "")[:64],
                                     query=logged, targets=targets,
                                     result_count=len(answer.results) if answer else 0, outcome=outcome, code=code))
