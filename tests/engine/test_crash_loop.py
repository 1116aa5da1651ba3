"""The crash loop (issue 4, "Reliability"): `cadenza worker` SIGKILLed at random moments.

A journey over many contacts (email, wait, branch, webhook, wait, email) runs in real worker
processes against a real SMTP server and a real HTTP receiver on loopback; the worker is killed
at seeded random moments and restarted until every enrollment has completed. Afterwards: every
expected outbox row exists once and is sent, no idempotency key appears twice, the receiver
applied each key's effect once, every message arrived, and every repeated delivery carries its
key (the same Idempotency-Key, the same Message-ID) and is paid for by a claim that a kill left
unrecorded; a kill loses at most one dispatch batch of claims. See `crashloop.py`.

The CI variant runs 2,000 contacts and 5 kills; `CADENZA_LONG=1` adds the issue's long
variant (20,000 contacts, 20 kills), also runnable as `bench/crash_loop.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.store import Store, schema
from tests.channels.servers import HttpReceiver, SmtpSink, smtp_sink
from tests.channels.support import add_contact, add_outbox, make_dispatcher
from tests.engine.crashloop import (
    DISPATCH_BATCH,
    Outcome,
    OversizedClaim,
    Scenario,
    assert_books,
    assert_claims_within_batch,
    busy_http_receiver,
    run_crash_loop,
)

LONG = os.environ.get("CADENZA_LONG", "") == "1"

CI = Scenario(contacts=2_000, kills=5, seed=4, life_s=(0.2, 1.5), timeout_s=100)
LONG_RUN = Scenario(contacts=20_000, kills=20, seed=20, life_s=(0.5, 4.0), waves=20,
                    wave_every_s=5.0, timeout_s=1_500)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """An SMTP server on loopback."""
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """An HTTP receiver on loopback that honours Idempotency-Key."""
    with busy_http_receiver() as server:
        yield server


def crash_loop(store: Store, store_url: str, smtp: SmtpSink, receiver: HttpReceiver,
               scenario: Scenario, tmp_path: Path) -> Outcome:
    workdir = tmp_path / "workers"
    workdir.mkdir()
    outcome = run_crash_loop(store, store_url, smtp, receiver, scenario, workdir,
                             progress=print)
    print("crash loop:", outcome.figures())  # shown with -s
    return outcome


def check_claims(outcome: Outcome, dialect: str) -> None:
    """A kill loses at most one dispatch batch of claims (on PostgreSQL too: the claim runs
    its pick once, see the next test)."""
    assert_claims_within_batch(outcome)


def test_killed_workers_lose_nothing_and_double_nothing(
        store: Store, store_url: str, smtp: SmtpSink, receiver: HttpReceiver,
        tmp_path: Path, dialect: str) -> None:
    outcome = crash_loop(store, store_url, smtp, receiver, CI, tmp_path)

    assert len(outcome.kills) == CI.kills, "every kill must land while work remains"
    assert_books(outcome)
    check_claims(outcome, dialect)


@pytest.mark.skipif(not LONG, reason="the long crash loop runs with CADENZA_LONG=1")
@pytest.mark.timeout(LONG_RUN.timeout_s + 300)
def test_long_crash_loop(store: Store, store_url: str, smtp: SmtpSink,
                         receiver: HttpReceiver, tmp_path: Path, dialect: str) -> None:
    outcome = crash_loop(store, store_url, smtp, receiver, LONG_RUN, tmp_path)

    assert len(outcome.kills) == LONG_RUN.kills, "every kill must land while work remains"
    assert_books(outcome)
    check_claims(outcome, dialect)


def test_one_dispatch_batch_claims_at_most_its_limit(
        store: Store, clock: FakeClock) -> None:
    # What the crash loop found, pinned on its own (it belongs beside the dispatcher's tests).
    # On a fresh table the planner's estimates are tiny, so it picks the rescanning plan.
    now = clock.now_ms()
    contact = add_contact(store, now, email="one@crash.test")
    add_outbox(store, now, [{"contact_id": contact, "channel": "log", "key": f"k-{i}"}
                            for i in range(5 * DISPATCH_BATCH)])
    dispatcher = make_dispatcher(store, clock)

    async def one_batch() -> int:
        try:
            return (await dispatcher.run_once(DISPATCH_BATCH)).claimed
        finally:
            await dispatcher.close()

    claimed = asyncio.run(one_batch())
    with store.read() as conn:
        sent = conn.execute(sa.select(sa.func.count()).select_from(schema.outbox)
                            .where(schema.outbox.c.status == "sent")).scalar_one()
    if claimed > DISPATCH_BATCH or sent > DISPATCH_BATCH:
        raise OversizedClaim(f"one batch claimed {claimed} rows and sent {sent}; "
                             f"its limit was {DISPATCH_BATCH}")
    assert claimed == sent == DISPATCH_BATCH
