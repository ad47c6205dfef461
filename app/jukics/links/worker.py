"""The delivery worker: the transactional outbox to each peer, in order, over mutual TLS.

One thread per link (`jukics links run`, its own systemd unit, so a slow or dead peer never blocks
intake: the intake only writes the outbox). Per step it reads the next messages after the
acknowledged sequence, wraps them in envelopes (:mod:`jukics.links.protocol`), sends them as one
batch and *settles* what the peer answered (:mod:`jukics.store.link_state`): ack and duplicate move
the acknowledged sequence on; a NACK moves that message to the dead-letter store and the link goes on
with the next one. Anything else (peer down, slow, 5xx, a malformed answer) changes nothing and is
retried with capped exponential backoff, so the order per link is the outbox order, always.

Kill -9 at any point loses nothing: messages leave the outbox only in the settle transaction, after
the peer's answer; a batch re-sent after a crash is answered "duplicate" (peer dedupe on sender and
sequence). A (destination, type) pair without a legal basis in the config is never sent: the pending
messages become dead letters with E_LEGAL_BASIS, logged in the audit chain.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from jukics.links.protocol import (
    STATUS_ACK,
    STATUS_DUPLICATE,
    STATUS_NACK,
    Envelope,
    ProtocolError,
    decode_results,
    encode_batch,
    messages_path,
    utc_stamp,
)
from jukics.links.transport import LinkAuthError, Response, describe_error
from jukics.store.link_state import DeadLetter, LinkState
from jukics.store.repository import OutboxMessage

log = logging.getLogger("jukics.links")

IDLE, DELIVERED, FAILED = "idle", "delivered", "failed"


class MessageSource(Protocol):
    def outbox_pending(self, link: str, *, limit: int = 100) -> list[OutboxMessage]: ...


class Transport(Protocol):
    @property
    def name(self) -> str: ...

    def post(self, path: str, body: bytes) -> Response: ...

    def close(self) -> None: ...


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: initial, 2x, 4x, ... up to ``maximum``."""

    initial: float = 0.5
    maximum: float = 30.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.failures += 1
        base = min(self.maximum, self.initial * 2 ** (self.failures - 1))
        return base * (0.8 + 0.4 * self.rng.random())  # +-20 %: CSs do not retry in lockstep

    def reset(self) -> None:
        self.failures = 0


@dataclass
class StepResult:
    outcome: str
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    nacked: int = 0
    error: str | None = None


class LinkWorker:
    def __init__(self, link: str, *, source: MessageSource, state: LinkState, transport: Transport,
                 sender: str, message_type: str, legal_basis: str | None, batch_size: int = 500) -> None:
        self.link = link
        self.source = source
        self.state = state
        self.transport = transport
        self.sender = sender
        self.message_type = message_type
        self.legal_basis = legal_basis
        self.batch_size = batch_size
        self.path = messages_path(link)

    def step(self) -> StepResult:
        messages = self.source.outbox_pending(self.link, limit=self.batch_size)
        if not messages:
            return StepResult(IDLE)
        if self.legal_basis is None:
            self.state.refuse_unlawful(self.link, self.message_type, [m.seq for m in messages], self.transport.name)
            log.error("%s: %d message(s) refused: no legal basis for (%s, %s)", self.link, len(messages),
                      self.link, self.message_type)
            return StepResult(DELIVERED, nacked=len(messages))
        sent_at = utc_stamp()
        envelopes = [Envelope(self.sender, self.link, m.seq, m.message_id, self.message_type, self.legal_basis,
                              sent_at, m.payload) for m in messages]
        try:
            response = self.transport.post(self.path, encode_batch(envelopes))
        except LinkAuthError as exc:
            self.state.failed(self.link, exc.reason, auth=True, peer=self.transport.name, code=exc.code)
            log.error("%s: peer failed authentication, nothing sent: %s", self.link, exc)
            return StepResult(FAILED, error=exc.code)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            return self._failed(describe_error(exc))
        if response.status != 200:
            return self._failed(f"HTTP {response.status}: {response.body[:120].decode(errors='replace')}")
        try:
            results = decode_results(response.body, envelopes)
        except ProtocolError as exc:
            return self._failed(exc.message)
        if not results:
            return self._failed("the peer handled none of the batch")
        dead = [DeadLetter(r.seq, r.code or "E_NACK", r.detail or "") for r in results if r.status == STATUS_NACK]
        acked = sum(1 for r in results if r.status == STATUS_ACK)
        dups = sum(1 for r in results if r.status == STATUS_DUPLICATE)
        replies = {r.seq: r.data for r in results if r.data is not None and r.status != STATUS_NACK}
        self.state.settle(self.link, results[-1].seq, delivered=acked, duplicates=dups, dead=dead,
                          peer=self.transport.name, replies=replies)
        if dead:
            log.warning("%s: %d message(s) NACKed, moved to dead letters (first: seq %d %s)", self.link, len(dead),
                        dead[0].seq, dead[0].code)
        return StepResult(DELIVERED, sent=len(envelopes), acked=acked, duplicates=dups, nacked=len(dead))

    def _failed(self, error: str) -> StepResult:
        self.state.failed(self.link, error)
        log.warning("%s: delivery failed, will retry: %s", self.link, error)
        return StepResult(FAILED, error=error)

    def run(self, stop: threading.Event, *, poll_interval: float = 0.02, backoff: Backoff | None = None,
            on_step: Callable[[StepResult], None] | None = None) -> None:
        """Deliver until ``stop`` is set. A failing peer is retried with backoff; an idle link polls."""
        backoff = backoff or Backoff()
        while not stop.is_set():
            try:
                result = self.step()
            except Exception as exc:  # the database briefly unavailable, a bug: keep the thread alive
                log.exception("%s: delivery step failed", self.link)
                result = StepResult(FAILED, error=describe_error(exc))
            if on_step is not None:
                on_step(result)
            if result.outcome == FAILED:
                stop.wait(backoff.next_delay())
            else:
                backoff.reset()
                if result.outcome == IDLE:
                    stop.wait(poll_interval)
        self.transport.close()


def run_links(workers: list[LinkWorker], stop: threading.Event, *, poll_interval: float, backoff_initial: float,
              backoff_max: float, on_tick: Callable[[], None] | None = None, tick_seconds: float = 5.0) -> None:
    """Run every link in its own thread until ``stop``; ``on_tick`` (metrics) every ``tick_seconds``."""
    threads = [
        threading.Thread(target=w.run, args=(stop,), name=f"link-{w.link}", daemon=True,
                         kwargs={"poll_interval": poll_interval, "backoff": Backoff(backoff_initial, backoff_max)})
        for w in workers
    ]
    for t in threads:
        t.start()
    while not stop.wait(tick_seconds):
        if on_tick is not None:
            try:
                on_tick()
            except Exception:
                log.exception("links: metrics tick failed")
    for t in threads:
        t.join(30)
    if on_tick is not None:
        on_tick()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; for tests, the demo and benchmarks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
