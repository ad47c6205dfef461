"""A 既存住基 client that posts update batches to the CS intake API over mutual TLS.

Standard library only, so the lab can copy this one file into the 既存住基 container and run it
there with the container's python3 (the lab hosts have no PyPI). Reads JSON lines of update items
on stdin, posts them in batches, prints one JSON summary line per batch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=ca)  # the CS's own trust bundle, never the system store
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def request(ctx: ssl.SSLContext, host: str, port: int, method: str, path: str, body: Any = None,
            timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def post_batch(ctx: ssl.SSLContext, host: str, port: int, items: list[Any], path: str = "/v1/intake/updates",
               timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    return request(ctx, host, port, "POST", path, {"items": items}, timeout)


def fetch_notices(ctx: ssl.SSLContext, host: str, port: int) -> list[dict[str, Any]]:
    """What the CS holds for 既存住基 (F10 突合結果): fetch everything, then acknowledge it."""
    notices: list[dict[str, Any]] = []
    while True:
        after = notices[-1]["id"] if notices else 0
        status, answer = request(ctx, host, port, "GET", f"/v1/kizon/notices?after={after}")
        if status != 200:
            raise RuntimeError(f"GET /v1/kizon/notices: HTTP {status} {answer}")
        if not answer["notices"]:
            break
        notices += answer["notices"]
    if notices:
        request(ctx, host, port, "POST", "/v1/kizon/notices/ack", {"through": notices[-1]["id"]})
    return notices


def batched(lines: Iterable[str], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for line in lines:
        if line.strip():
            batch.append(json.loads(line))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--path", default="/v1/intake/updates",
                    help="/v1/intake/updates (F1) or /v1/intake/card (F9 送付先情報, F10 card events)")
    ap.add_argument("--notices", action="store_true",
                    help="fetch and acknowledge what the CS holds for 既存住基 (F10 突合結果); print it as JSON lines")
    args = ap.parse_args(argv)
    ctx = client_context(args.cert, args.key, args.ca)  # checks the CS certificate's name (SAN) too
    if args.notices:
        for notice in fetch_notices(ctx, args.host, args.port):
            print(json.dumps(notice, ensure_ascii=False), flush=True)
        return 0
    totals = {"applied": 0, "duplicate": 0, "refused": 0}
    start = time.monotonic()
    for batch in batched(sys.stdin, args.batch):
        status, result = post_batch(ctx, args.host, args.port, batch, args.path)
        for k in totals:
            totals[k] += int(result.get(k, 0))
        codes: dict[str, int] = {}
        for r in result.get("results", []):
            if r.get("status") == "refused":
                codes[r.get("code", "?")] = codes.get(r.get("code", "?"), 0) + 1
        print(json.dumps({"status": status, "items": len(batch), **{k: result.get(k) for k in totals},
                          "refusal_codes": codes, "error": result.get("error")}), flush=True)
    print(json.dumps({"total": totals, "seconds": round(time.monotonic() - start, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
