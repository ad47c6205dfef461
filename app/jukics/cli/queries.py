"""`jukics query ...` (F5, F7/F8) and `jukics consistency ...` (F4): operator commands over the links.

  query identity CODE        F5 identity check by 住民票コード: local, then prefecture, then national
  query search KEYS...       F7/F8 search (住民票コード | 個人番号 | 氏名 + 生年月日 | 氏名 + 住所)
  consistency run            F4 整合性確認 of the whole file against the prefecture; report stored
  consistency report [--id]  the newest (or a given) report with its difference lists (audited)
  consistency list           the last reports, counts only

Exit codes: 0 found / no differences, 3 nothing found / differences found (a report was stored),
1 a peer could not be asked (or the check failed), 2 refused (search keys, purpose) or usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jukics.config import Config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NONE = 0, 1, 2, 3


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str))
        return
    for key, value in obj.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{key}:")
            for row in value:
                print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
        else:
            print(f"{key}: {value}")


def _service(config: Config) -> Any:
    from jukics.service import Service

    if config.keystore.get("backend") == "tpm" and config.links.peers:
        # The link client key is a TSS2 key: the tpm2 provider must be loaded before any TLS context.
        from jukics.keystore.provider import ensure_tpm2_provider

        ensure_tpm2_provider(str(config.keystore.get("tcti")))
    return Service(config)


def _answer(answer: Any, as_json: bool) -> int:
    _print(answer.as_dict(), as_json)
    if answer.results:
        return EXIT_OK
    return EXIT_FAILED if answer.errors else EXIT_NONE


def cmd_identity(config: Config, args: argparse.Namespace) -> int:
    from jukics.links.routing import QueryRefused

    try:
        answer = _service(config).query_router.identity_check(args.juminhyo_code, purpose=args.purpose,
                                                              actor=args.operator, terminal="cli")
    except QueryRefused as exc:
        print(f"query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _answer(answer, args.json)


def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from jukics.links.routing import QueryRefused

    criteria = {k: getattr(args, k) for k in ("juminhyo_code", "my_number", "name_kana", "name_kanji",
                                              "birth_date", "address") if getattr(args, k)}
    if args.sex:
        criteria["sex"] = args.sex  # refused by the rule, and the refusal audited
    try:
        answer = _service(config).query_router.search(criteria, purpose=args.purpose, actor=args.operator,
                                                      terminal="cli")
    except QueryRefused as exc:
        print(f"query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _answer(answer, args.json)


def cmd_consistency_run(config: Config, args: argparse.Namespace) -> int:
    svc = _service(config)
    try:
        queries = svc.prefecture_queries()
    except LookupError as exc:
        print(f"consistency: {exc}", file=sys.stderr)
        return EXIT_USAGE
    svc.keystore.data_key()  # stops here, with the reason, when the key store cannot open
    report = svc.consistency.run(args.link, queries, actor=args.operator)
    _print(report.as_dict() if args.json else {k: v for k, v in report.as_dict().items() if k != "detail"},
           args.json)
    if report.status == "failed":
        return EXIT_FAILED
    return EXIT_NONE if report.status == "differs" else EXIT_OK


def cmd_consistency_report(config: Config, args: argparse.Namespace) -> int:
    try:
        report = _service(config).consistency.report(args.id, actor=args.operator)
    except LookupError as exc:
        print(f"consistency: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print(report.as_dict(), args.json)
    return EXIT_FAILED if report.status == "failed" else EXIT_OK


def cmd_consistency_list(config: Config, args: argparse.Namespace) -> int:
    rows = [r.as_dict() for r in _service(config).consistency.reports(args.limit)]
    print(json.dumps(rows, ensure_ascii=False, indent=2))
    return EXIT_OK


def register(sub: Any) -> None:
    query = sub.add_parser("query", help="F5 identity check and F7/F8 search, routed local / prefecture / national",
                           description="F5 identity check and F7/F8 search, routed local / prefecture / national")
    query_sub = query.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--purpose", required=True, help="purpose code (recorded in the audit log)")
        p.add_argument("--operator", required=True, help="who asks (recorded in the audit log)")
        p.add_argument("--json", action="store_true", help="print the answer as JSON")

    p = query_sub.add_parser("identity", help="F5: identity check by 住民票コード", description="F5: identity "
                             "check by 住民票コード (exit 0 found, 3 not found, 1 a peer could not be asked)")
    p.set_defaults(func=cmd_identity)
    p.add_argument("juminhyo_code", metavar="CODE")
    common(p)
    p = query_sub.add_parser("search", help="F7/F8: search by 住民票コード, 個人番号, 氏名 + 生年月日 or 氏名 + 住所",
                             description="F7/F8 search (exit 0 found, 3 none, 1 a peer could not be asked, "
                                         "2 refused keys)")
    p.set_defaults(func=cmd_search)
    for flag in ("juminhyo-code", "my-number", "name-kana", "name-kanji", "birth-date", "address", "sex"):
        p.add_argument(f"--{flag}")
    common(p)

    cons = sub.add_parser("consistency", help="F4 整合性確認 against the prefecture",
                          description="F4 整合性確認 against the prefecture")
    cons_sub = cons.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = cons_sub.add_parser("run", help="check the whole file (exit 0 no differences, 3 differences, 1 failed)",
                            description="check the whole file against the peer's copy and store the report "
                                        "(exit 0 no differences, 3 differences, 1 failed)")
    p.set_defaults(func=cmd_consistency_run)
    p.add_argument("--link", default="prefecture", choices=["prefecture"])
    p.add_argument("--operator", required=True, help="who runs it (recorded in the audit log)")
    p.add_argument("--json", action="store_true", help="print the report (with its lists) as JSON")
    p = cons_sub.add_parser("report", help="a report with its difference lists (reading it is audited)",
                            description="a report with its difference lists (reading it is audited)")
    p.set_defaults(func=cmd_consistency_report)
    p.add_argument("--id", type=int, help="report id (default: the newest)")
    p.add_argument("--operator", required=True, help="who reads it (recorded in the audit log)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = cons_sub.add_parser("list", help="the last reports, counts only", description="the last reports, counts only")
    p.set_defaults(func=cmd_consistency_list)
    p.add_argument("--limit", type=int, default=20)
