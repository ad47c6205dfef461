#!/usr/bin/python3
"""Packet helpers for the firewall scenario: TCP listeners, and probes that say how a port behaves.

  fwlab.py listen PORT...            accept on every port, answer "fwlab <port>", close
  fwlab.py probe TARGET:EXPECT...    TARGET is HOST:PORT (TCP) or icmp:HOST; EXPECT is open|dropped

"dropped" means no answer at all within the timeout (a DROP rule), which is what the firewall does;
a refused connection (RST) or an unreachable host are reported as such and do not count as dropped.
"open" means the TCP handshake completed (or the ping was answered).
Probes run in parallel and the exit status is 0 only when every probe behaved as expected. The
result is printed as JSON for the verify playbook.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

# Seconds without an answer that count as "dropped" (FWLAB_TIMEOUT overrides; the netns tests use 1).
TIMEOUT = float(os.environ.get("FWLAB_TIMEOUT", "2"))


def listen(ports: list[int]) -> None:
    def serve(port: int) -> None:
        srv = socket.create_server(("0.0.0.0", port), reuse_port=True)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(f"fwlab {port}\n".encode())

    threads = [threading.Thread(target=serve, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def tcp(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            return "open"
    except TimeoutError:
        return "dropped"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def icmp(host: str) -> str:
    proc = subprocess.run(
        ["ping", "-n", "-c", "1", "-W", str(max(1, round(TIMEOUT))), host], capture_output=True, check=False
    )
    return "open" if proc.returncode == 0 else "dropped"


def probe(spec: str) -> dict[str, str]:
    target, expect = spec.rsplit(":", 1)
    if target.startswith("icmp:"):
        got = icmp(target.split(":", 1)[1])
    else:
        host, port = target.rsplit(":", 1)
        got = tcp(host, int(port))
    return {"target": target, "expect": expect, "got": got, "ok": str(got == expect).lower()}


def main() -> int:
    if sys.argv[1] == "listen":
        listen([int(p) for p in sys.argv[2:]])
        return 0
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(probe, sys.argv[2:]))
    print(json.dumps(results))
    return 0 if all(r["ok"] == "true" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
