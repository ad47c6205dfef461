"""The end-to-end demo that `make lab` runs on the controller against the podman lab.

It drives the lab hosts with `podman exec` (the controller is not on the MAC allowlist for the
intake port; 既存住基 is): the 既存住基 host kizon1 sends SYNTHETIC residents and their changes to
cs1 over mutual TLS, a device that is not on the MAC allowlist tries the same, and the appliance
shows what it stored and that its audit chain verifies. The links worker delivers F2 and 附票 to the
simulated 都道府県サーバ (pref1), which forwards F2 to the simulated 全国サーバ (nat1); queries, 整合性確認,
the card flows and F6 特例転入 (pref1 relays a 転出証明書情報 to cs1's peer-facing listener); then the prefecture
goes down, the CS keeps taking updates (its outbox grows), and once the prefecture is back the queue
drains with nothing lost, duplicated or out of order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jukics.sim import kizon_client
from jukics.sim.residents import generate_residents, generate_updates, make_invalid_variants, resident_intake_items

CS = "jukics-cs1"
KIZON = "jukics-kizon1"
STRANGER = "jukics-stranger1"
PREF = "jukics-pref1"
NAT = "jukics-nat1"
MON = "jukics-mon1"
SIM = "/opt/jukics-sim/venv/bin/jukics-sim"
SENDER = "cs-142140"
CS_INTERNAL_IP = "10.233.10.10"
MUNICIPALITY = "142140"
PREFECTURE_LINKS = ("prefecture", "fuhyo", "tokurei")  # the links that go to pref1 (sofusaki/card: nat1)


def sh(*argv: str, check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess:
    # argv is built here from constants (podman, container names): no shell, no outside input
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input_, timeout=600)  # noqa: S603


def on_cs(*argv: str) -> str:
    # As root: the TPM (tpm2-abrmd) admits root and tss, and the service user is in tss only in its units.
    return sh("podman", "exec", CS, "/opt/jukics/venv/bin/jukics", "--config", "/etc/jukics/jukics.toml", *argv).stdout


def on_cs_json(*argv: str) -> tuple[int, Any]:
    """A jukics command whose exit code carries an answer (3: none found / differences): code and JSON."""
    out = sh("podman", "exec", CS, "/opt/jukics/venv/bin/jukics", "--config", "/etc/jukics/jukics.toml", *argv,
             check=False)
    if out.returncode not in (0, 3):
        raise RuntimeError(f"jukics {' '.join(argv[:2])} failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    return out.returncode, json.loads(out.stdout)


def compact(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False)


def tokurei_newcomer(today: dt.date) -> dict:
    """A synthetic resident new to the municipality: the first intake item of a 転入, as a 特例転入."""
    for person in generate_residents(200, seed=6006, municipality_code=MUNICIPALITY, today=today):
        items = resident_intake_items(person)
        if items[0]["change_reason"] == "tennyu":
            return {**items[0], "change_reason": "tokurei_tennyu"}
    raise RuntimeError("no 転入 among the synthetic residents")


def tenshutsu_certificate(item: dict) -> dict:
    """The 転出証明書情報 the 転出地 (千代田区, synthetic) issued for that resident."""
    return {"cert_id": f"T-{item['juminhyo_code'][-6:]}", "juminhyo_code": item["juminhyo_code"],
            "name_kanji": item["name_kanji"], "name_kana": item["name_kana"], "birth_date": item["birth_date"],
            "sex": item["sex"], "my_number": item["my_number"], "address": item["previous_address"],
            "destination_address": item["address"], "planned_move_on": item["changed_on"],
            "from_municipality_code": "131016", "to_municipality_code": MUNICIPALITY}


def title(text: str) -> None:
    print(f"\n== {text}", flush=True)


def send_from(host: str, lines: list[dict], pki_dir: str, *, batch: int = 1000, timeout: int = 600,
              path: str = "/v1/intake/updates", notices: bool = False) -> list[dict]:
    data = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in lines)
    out = sh(
        "podman", "exec", "-i", host, "python3", "/opt/demo/kizon_client.py",
        "--host", CS_INTERNAL_IP, "--port", "8443", "--batch", str(batch), "--path", path,
        *(["--notices"] if notices else []),
        "--cert", f"{pki_dir}/kizon.crt", "--key", f"{pki_dir}/kizon.key", "--ca", f"{pki_dir}/ca.crt",
        input_=data, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"kizon client failed: {out.stderr.strip()[-600:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def sim(host: str, *argv: str) -> Any:
    return json.loads(sh("podman", "exec", host, SIM, *argv).stdout)


def links_status() -> dict[str, dict[str, Any]]:
    out = sh("podman", "exec", CS, "/opt/jukics/venv/bin/jukics", "--config", "/etc/jukics/jukics.toml",
             "links", "status", check=False)  # exit 1 while a link is failing: still its status
    return {r["link"]: r for r in json.loads(out.stdout or "[]")}


def wait_drained(timeout: float = 300) -> tuple[dict[str, dict[str, Any]], float]:
    t0 = time.monotonic()
    while True:
        status = links_status()
        if status and all(r["pending"] == 0 for r in status.values()):
            return status, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"the links did not drain in {timeout:.0f} s: {status}")
        time.sleep(1)


def show_links(status: dict[str, dict[str, Any]]) -> None:
    for link, r in sorted(status.items()):
        print(f"  {link:<10} last seq {r['last_seq']:>6}  acked {r['acked_seq']:>6}  pending {r['pending']:>5}  "
              f"dead letters {r['dead_letters']}  failures in a row {r.get('consecutive_failures', 0)}")


def show_sims() -> tuple[dict[str, Any], dict[str, Any]]:
    pref, nat = sim(PREF, "state"), sim(NAT, "state")
    print(f"  pref1 (都道府県サーバ sim) received {pref['received']}, duplicates {pref['duplicates']}, "
          f"gaps {pref['gaps']}, NACKs {pref['nacks']}, forward queue {pref['forward_queue']}")
    print(f"  nat1  (全国サーバ sim)     received {nat['received']}, gaps {nat['gaps']}")
    return pref, nat


def prom_query(expr: str) -> list[dict[str, Any]]:
    """An instant query to the lab's Prometheus on mon1 (it listens on mon1's loopback only)."""
    code = ("import json, sys, urllib.parse, urllib.request\n"
            "q = urllib.parse.urlencode({'query': sys.argv[1]})\n"
            "print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/query?' + q, timeout=5).read().decode())")
    out = sh("podman", "exec", MON, "python3", "-c", code, expr, check=False)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout)["data"]["result"]


def firing(alert: str) -> list[str]:
    rows = prom_query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}')
    return sorted(r["metric"].get("link", r["metric"].get("instance", "")) for r in rows)


def wait_alert(alert: str, want: bool, timeout: float = 420) -> float | None:
    """Seconds until `alert` fires (want) or has cleared (not want); None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if bool(firing(alert)) == want:
            return time.monotonic() - t0
        time.sleep(2)
    return None


def install_client(host: str, pki: Path) -> None:
    sh("podman", "exec", host, "mkdir", "-p", "/opt/demo/pki")
    sh("podman", "cp", kizon_client.__file__, f"{host}:/opt/demo/kizon_client.py")
    for name in ("kizon.crt", "kizon.key", "ca.crt"):
        sh("podman", "cp", str(pki / name), f"{host}:/opt/demo/pki/{name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state", required=True, type=Path, help="the lab state folder (.lab)")
    ap.add_argument("--residents", type=int, default=3000)
    ap.add_argument("--updates", type=int, default=600)
    args = ap.parse_args(argv)
    pki = args.state / "pki"
    today = dt.date.today()
    started = time.monotonic()

    title(f"synthetic data: {args.residents} residents of {MUNICIPALITY} and {args.updates} changes (never real data)")
    people = list(generate_residents(args.residents, seed=2026, municipality_code=MUNICIPALITY, today=today))
    history = [item for p in people for item in resident_intake_items(p)]
    updates = list(generate_updates(people, args.updates, seed=2027, today=today))
    reasons: dict[str, int] = {}
    for item in updates:
        reasons[str(item["change_reason"])] = reasons.get(str(item["change_reason"]), 0) + 1
    print(f"  {len(history)} intake items build them; the changes: {json.dumps(reasons, ensure_ascii=False)}")

    install_client(KIZON, pki)
    install_client(STRANGER, pki)

    title("既存住基 (kizon1) → CS (cs1): F1 intake over mutual TLS, batches of 1,000")
    summary = send_from(KIZON, history, "/opt/demo/pki")
    total = summary[-1]
    print(f"  load: {total['total']} in {total['seconds']} s")
    held_back = updates[-150:]  # sent while the prefecture is down, below
    updates = updates[:-150]
    summary = send_from(KIZON, updates, "/opt/demo/pki")
    print(f"  changes: {summary[-1]['total']} in {summary[-1]['seconds']} s")

    title("the same batch sent again (a retry): nothing is applied twice")
    summary = send_from(KIZON, updates[:200], "/opt/demo/pki")
    print(f"  retry: {summary[-1]['total']}")

    title("bad input: each item refused with a stable code, nothing half-written")
    bad = [v.item for item in updates[:5] for v in make_invalid_variants(item)][:40]
    summary = send_from(KIZON, bad, "/opt/demo/pki")
    print(f"  {len(bad)} invalid items: HTTP {summary[0]['status']}, refusal codes {summary[0]['refusal_codes']}")

    title("a device that is not on the MAC allowlist (stranger1) tries the intake port")
    probe_code = (
        "import socket\ntry:\n"
        f" socket.create_connection(('{CS_INTERNAL_IP}', 8443), timeout=3); print('CONNECTED')\n"
        "except OSError as e: print('no connection:', type(e).__name__)"
    )
    probe = sh("podman", "exec", STRANGER, "python3", "-c", probe_code, check=False)
    print(f"  stranger1 → cs1:8443: {probe.stdout.strip() or probe.stderr.strip()}")
    counters = sh("podman", "exec", CS, "sh", "-c",
                  "cat /var/lib/prometheus/node-exporter/jukics_nft.prom 2>/dev/null | grep -v '^#' | head -8",
                  check=False).stdout.strip()
    if counters:
        print("  firewall counters (textfile for node_exporter):")
        for line in counters.splitlines():
            print(f"    {line}")

    title("what the appliance holds now (aggregate counts only)")
    stats = json.loads(on_cs("stats"))
    print(f"  residents {stats['residents']}, 消除者 {stats['deleted']}, record versions {stats['versions']} "
          "(history is never overwritten)")

    title("links: F2 and 附票 to the prefecture over mutual TLS (client key in the TPM), F2 on to the national")
    status, took = wait_drained()
    print(f"  drained in {took:.0f} s after the last intake")
    show_links(status)
    show_sims()

    title("F5 identity check and F7/F8 search, routed local → prefecture → national (every query audited)")
    changed = {str(u["juminhyo_code"]) for u in [*updates, *held_back]}
    own = next(p for p in people if p["record_status"] == "current" and p["juminhyo_code"] not in changed)
    _, a = on_cs_json("query", "identity", str(own["juminhyo_code"]), "--purpose", "F5-counter",
                      "--operator", "op0001", "--json")
    print(f"  identity check of a resident of {MUNICIPALITY}: answered by {a['source']} (asked {a['asked']}), "
          f"items {sorted(a['results'][0]) if a['results'] else []} (never 個人番号)")
    _, a = on_cs_json("query", "identity", "99999999999", "--purpose", "F5-counter", "--operator", "op0001", "--json")
    print(f"  a 住民票コード nobody holds: asked {a['asked']}, found {a['found']}")
    _, a = on_cs_json("query", "search", "--name-kana", str(own["name_kana"]),
                      "--birth-date", str(own["birth_date"]), "--purpose", "F7-counter", "--operator", "op0001",
                      "--json")
    print(f"  ふりがな氏名 + 生年月日: {a['found']} found by {a['source']}")
    _, a = on_cs_json("query", "search", "--name-kanji", "東京　花子", "--address", "東京都千代田区千代田1番",
                      "--purpose", "F8-counter", "--operator", "op0001", "--json")
    print(f"  漢字氏名 + 住所 in 東京都: asked {a['asked']} only (skipped {sorted(a['skipped'])}), found {a['found']}")
    refused = sh("podman", "exec", CS, "/opt/jukics/venv/bin/jukics", "--config", "/etc/jukics/jukics.toml",
                 "query", "search", "--name-kanji", str(own["name_kanji"]), "--sex", str(own["sex"]),
                 "--purpose", "F7-counter", "--operator", "op0001", check=False)
    print(f"  氏名 + 性別: refused, exit {refused.returncode}: {refused.stderr.strip()[:110]}")

    title("F4 整合性確認: the whole file as per-record digests against the prefecture's copy")
    _, r = on_cs_json("consistency", "run", "--operator", "op0001", "--json")
    print(f"  {r['checked']} residents checked: {r['status']} (missing at the prefecture {r['missing_at_peer']}, "
          f"unknown to the CS {r['unknown_to_cs']}, mismatched {r['mismatched']})")
    seeded = sim(PREF, "seed-mismatches", "--alter", "3", "--drop", "2")
    _, r = on_cs_json("consistency", "run", "--operator", "op0001", "--json")
    print(f"  the prefecture sim spoils {seeded['altered']} records and loses {seeded['dropped']}: {r['status']}, "
          f"mismatched {r['mismatched']}, missing at the prefecture {r['missing_at_peer']} "
          f"(report {r['id']}: `jukics consistency report --id {r['id']}`; the lists are stored encrypted)")

    title("F9 送付先情報 and F10 card events: 既存住基 → CS → カード管理システム (nat1), 突合結果 back")
    newcomers = [p for p in people if p["record_status"] == "current"][:20]
    sofusaki = [{"request_id": f"sofu-{p['juminhyo_code']}", "type": "sofusaki", "payload": {
        "送付先氏名": p["name_kanji"], "送付先住所": p["address"], "送付先郵便番号": p["postal_code"],
        "交付申請書ID": f"APP{i:09d}", "備考": None}} for i, p in enumerate(newcomers)]
    events = [{"request_id": f"card-kofu-{i}", "type": "card_event", "payload": {
        "juminhyo_code": p["juminhyo_code"], "kind": "kofu", "event_on": today.isoformat(), "card_id": f"C{i:011d}"}}
        for i, p in enumerate(newcomers)]
    events += [{"request_id": f"card-haishi-{i}", "type": "card_event", "payload": {
        **events[i]["payload"], "kind": "haishi"}} for i in range(2)]
    events.append({"request_id": "card-henkan-unknown", "type": "card_event", "payload": {
        **events[2]["payload"], "kind": "henkan", "card_id": "C99999999999"}})
    summary = send_from(KIZON, [*sofusaki, *events], "/opt/demo/pki", path="/v1/intake/card")
    print(f"  {len(sofusaki)} 送付先情報 and {len(events)} card events: {summary[-1]['total']}")
    wait_drained()
    card = [json.loads(line) for line in sh("podman", "exec", NAT, SIM, "card").stdout.splitlines() if line.strip()]
    sent = {json.dumps(s["payload"], ensure_ascii=False, sort_keys=True) for s in sofusaki}
    unedited = sum(json.dumps(c["payload"], ensure_ascii=False, sort_keys=True) in sent for c in card)
    print(f"  nat1 received {len(card)} 送付先情報, {unedited} of them exactly as 既存住基 sent them (unedited)")
    notices = send_from(KIZON, [], "/opt/demo/pki", notices=True)
    matched = sum(1 for n in notices if n["payload"]["result"]["matched"])
    reasons = sorted({str(n["payload"]["result"]["reason"]) for n in notices if n["payload"]["result"]["reason"]})
    print(f"  既存住基 fetched {len(notices)} 突合結果: {matched} matched, {len(notices) - matched} not "
          f"({', '.join(reasons)})")
    print(f"  on the CS: {json.loads(on_cs('card', 'status'))} (送付先 erased one business day after sending)")

    title("F6 特例転入: 転出証明書情報 relayed by the prefecture to cs1's peer-facing listener (8444)")
    item = tokurei_newcomer(today)
    cert = tenshutsu_certificate(item)
    relayed = json.loads(sh("podman", "exec", "-i", PREF, SIM, "tenshutsu", "--file", "-",
                            input_=json.dumps(cert, ensure_ascii=False) + "\n").stdout)
    print(f"  pref1 relays 転出証明書情報 {cert['cert_id']} (転出地 {cert['from_municipality_code']}) to cs1: "
          f"{relayed[0]['status']}; on the CS: {compact(on_cs('tokurei', 'status'))}")
    notices = send_from(KIZON, [], "/opt/demo/pki", notices=True)
    print(f"  既存住基 fetches it: {[(n['kind'], n['ref']) for n in notices]}")
    summary = send_from(KIZON, [item], "/opt/demo/pki")
    wait_drained()
    pref_state = sim(PREF, "state")
    print(f"  既存住基 registers the 特例転入: {summary[-1]['total']}; the 転入通知情報 and the F2 update go out "
          f"together: pref1 holds {pref_state['received'].get(f'{SENDER}/tokurei', 0)} 転入通知情報; "
          f"on the CS: {compact(on_cs('tokurei', 'status'))} (the certificate erased once the notice was acked)")

    title("the prefecture goes down: intake goes on, the CS outbox holds what it cannot send yet")
    sim(PREF, "faults", "--down")
    summary = send_from(KIZON, held_back, "/opt/demo/pki")
    print(f"  while down, 既存住基 sent {len(held_back)} more changes: {summary[-1]['total']}")
    time.sleep(3)
    show_links(links_status())
    # mon1's Prometheus reads the links worker's textfile through cs1's node_exporter.
    targets = prom_query("up")
    print("  monitoring (mon1 Prometheus) targets: "
          + ", ".join(f"{r['metric'].get('job')} {r['metric'].get('instance')} up={r['value'][1]}" for r in targets))
    fired = wait_alert("JukicsLinkDown", True)
    if fired is None:
        print("  JukicsLinkDown did not fire within 7 minutes "
              "(see mon1: podman exec jukics-mon1 journalctl -u prometheus)")
    else:
        print(f"  JukicsLinkDown firing after {fired:.0f} s for links {firing('JukicsLinkDown')} "
              "(10 failed attempts in a row with messages waiting; lab `for:` capped at 30 s)")
    sim(PREF, "faults", "--up")
    status, took = wait_drained()
    if fired is not None:
        cleared = wait_alert("JukicsLinkDown", False, timeout=300)
        print(f"  JukicsLinkDown cleared {cleared:.0f} s after the prefecture came back" if cleared is not None
              else "  JukicsLinkDown still firing 5 minutes after the prefecture came back")
    print(f"  prefecture back: drained in {took:.0f} s (capped exponential backoff)")
    show_links(status)
    pref, nat = show_sims()
    lost = {link: r["last_seq"] - pref["received"].get(f"{SENDER}/{link}", 0) for link, r in status.items()
            if link in PREFECTURE_LINKS}
    print(f"  missing at the prefecture per link: {lost}; gaps {pref['gaps']} (in order, nothing lost); "
          f"forwarded to national {nat['received'].get('pref-14/national', 0)} of "
          f"{pref['received'].get(f'{SENDER}/prefecture', 0)}")

    title("audit chain")
    print("  " + on_cs("audit", "verify", "--public-key", "/var/lib/jukics/keystore/checkpoint.pub.pem").strip())
    print("  " + on_cs("health").strip())

    elapsed = time.monotonic() - started
    print(f"\nDemo finished in {elapsed:.0f} s. Where to look next:")
    print("  podman exec -it jukics-cs1 bash                 # the appliance (journalctl -u jukics, nft list ruleset)")
    print("  podman exec --user jukics jukics-cs1 /opt/jukics/venv/bin/jukics --help")
    print("  podman exec jukics-pref1 /opt/jukics-sim/venv/bin/jukics-sim --help   # the prefecture sim, its faults")
    print(f"  {args.state}/site.log                         # the full ansible-playbook output")
    print("  docs/architecture.md, docs/operations.md       # how it fits together, how to run it")
    print("  make lab-down                                   # remove the lab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
