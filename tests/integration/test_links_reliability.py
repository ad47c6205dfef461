"""Reliability of the relay, end to end with real processes and real mutual TLS on loopback
(jukics.sim.local_network): gunicorn intake, the delivery worker, the prefecture and national sims.

- kill -9 of gunicorn workers and of the delivery worker at random points during a 100,000-update run
  (at least 20 kill points): 0 lost, 0 duplicated at the prefecture sim, order preserved per resident;
- the prefecture down for the middle of a run: the outbox grows, nothing is lost, it drains in order;
- the prefecture presenting a certificate from the wrong CA: nothing is delivered, the attempts are
  counted, and delivery resumes once it presents the right one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from jukics.links.worker import wait_for
from jukics.sim.local_network import LocalNetwork, batches_of_whole_residents
from jukics.sim.residents import generate_residents, resident_intake_items

pytestmark = pytest.mark.slow
TODAY = dt.date(2026, 11, 1)


def resident_batches(n_residents: int, seed: int) -> list[list[dict[str, Any]]]:
    people = generate_residents(n_residents, seed=seed, municipality_code="142140", today=TODAY)
    return batches_of_whole_residents(resident_intake_items(p) for p in people)


def expected_per_resident(batches: list[list[dict[str, Any]]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for batch in batches:
        for item in batch:
            out[str(item["juminhyo_code"])].append((str(item["change_reason"]), str(item["changed_on"])))
    return out


def check_delivered_exactly_once_in_order(net: LocalNetwork, batches: list[list[dict[str, Any]]]) -> int:
    expected = expected_per_resident(batches)
    total = sum(len(v) for v in expected.values())
    for link in ("prefecture", "fuhyo"):
        got = net.received("prefecture", link)
        seqs = [m["seq"] for m in got]
        assert len(seqs) == len(set(seqs)), f"{link}: duplicated at the prefecture sim"
        assert sorted(seqs) == list(range(1, total + 1)), f"{link}: lost (got {len(seqs)} of {total})"
        assert seqs == sorted(seqs), f"{link}: stored out of order"
        per_resident: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for m in got:
            per_resident[str(m["juminhyo_code"])].append((str(m["change_reason"]), str(m["changed_on"])))
        assert per_resident == expected, f"{link}: order per resident differs"
    return total


def drain(net: LocalNetwork, timeout: float = 300) -> None:
    assert wait_for(lambda: net.pending() == 0, timeout, 0.5), (
        f"the outbox did not drain: {net.link_status()}\n{net.log_tail('links')}")


def test_kill_9_of_gunicorn_workers_and_the_delivery_worker_loses_and_duplicates_nothing(tmp_path):
    batches = resident_batches(76_000, seed=51)
    n_items = sum(map(len, batches))
    assert n_items >= 100_000
    rng = random.Random(20261206)
    kills = {"gunicorn": 0, "links": 0}
    posting_done = threading.Event()
    stop = threading.Event()
    with LocalNetwork(tmp_path / "net") as net:

        def killer() -> None:
            while not stop.wait(rng.uniform(0.6, 1.6)):
                if rng.random() < 0.5 and not posting_done.is_set():
                    workers = net.gunicorn_workers()
                    if workers:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        kills["gunicorn"] += 1
                else:
                    net.stop("links", kill=True)
                    kills["links"] += 1
                    time.sleep(rng.uniform(0.0, 0.3))
                    net.start_links()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        applied = duplicate = 0
        for batch in batches:
            result = net.post(batch)
            assert result["status"] == 200, result
            assert result["refused"] == 0, [r for r in result["results"] if r["status"] == "refused"][:3]
            applied += result["applied"]
            duplicate += result["duplicate"]
        posting_done.set()
        # keep killing the delivery worker while it drains, until at least 20 kill points in all
        assert wait_for(lambda: sum(kills.values()) >= 20, 120, 0.2)
        stop.set()
        thread.join(30)
        if net.procs.get("links") is None or net.procs["links"].poll() is not None:
            net.start_links()
        drain(net)
        # A batch whose worker died after the commit was retried: its items came back "duplicate" and
        # nothing was applied twice.
        assert applied + duplicate == n_items
        assert json.loads(net.cs("stats").stdout)["versions"] == n_items
        total = check_delivered_exactly_once_in_order(net, batches)
        assert total == n_items
        print(f"\n{n_items} updates, kills {kills}, intake retries saw {duplicate} duplicates")
        assert kills["gunicorn"] >= 5 and kills["links"] >= 5
        assert net.cs("audit", "verify").returncode == 0


def test_prefecture_down_for_the_middle_of_a_run_then_drains_in_order(tmp_path):
    batches = resident_batches(6_000, seed=52)
    third = len(batches) // 3
    with LocalNetwork(tmp_path / "net") as net:
        for batch in batches[:third]:
            assert net.post(batch)["status"] == 200
        drain(net, 120)
        before = len(net.received("prefecture", "prefecture"))

        net.stop("prefecture")  # down: connection refused
        for batch in batches[third:2 * third]:
            assert net.post(batch)["status"] == 200  # intake never blocks on a peer
        queued = sum(map(len, batches[third:2 * third]))
        assert wait_for(lambda: net.link_status()["prefecture"]["pending"] == queued, 30, 0.2)
        status = net.link_status()["prefecture"]
        assert status["consecutive_failures"] > 0 and "refused" in (status["last_error"] or "")
        assert status["auth_failures_total"] == 0

        net.start_sim("prefecture")
        for batch in batches[2 * third:]:
            assert net.post(batch)["status"] == 200
        drain(net, 120)
        assert len(net.received("prefecture", "prefecture")) > before
        check_delivered_exactly_once_in_order(net, batches)


def test_prefecture_with_a_wrong_certificate_gets_nothing_until_it_is_right(tmp_path):
    batches = resident_batches(500, seed=53)
    with LocalNetwork(tmp_path / "net") as net:
        net.sim("prefecture", "faults", "--wrong-cert")
        for batch in batches:
            assert net.post(batch)["status"] == 200
        assert wait_for(lambda: net.link_status()["prefecture"]["auth_failures_total"] >= 2, 30, 0.2)
        assert net.received("prefecture", "prefecture") == []
        assert net.link_status()["prefecture"]["acked_seq"] == 0
        net.sim("prefecture", "faults", "--right-cert")
        drain(net, 60)
        check_delivered_exactly_once_in_order(net, batches)
