"""Each named crash point of the send path, hit deterministically.

A dispatcher runs in a subprocess with `CADENZA_CRASH_AT=<point>` and dies there with status
137, as if SIGKILLed. A clean dispatcher then finishes the work. Whatever the point, every row
ends sent; the HTTP receiver applied each idempotency key's effect once; every SMTP copy of a
message carries the Message-ID of its key, and copies appear only when the crash came after
the server accepted; the task channel made one task per key.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from cadenza.channels import TemplateService
from cadenza.channels.email import message_id
from cadenza.clock import FakeClock
from cadenza.engine.crash import DISPATCH_POINTS, EXIT_CODE, CrashPoints
from cadenza.engine.dispatch import Dispatcher
from cadenza.store import Store, schema
from tests.channels.servers import HttpReceiver, SmtpSink
from tests.channels.support import (
    add_contact,
    add_outbox,
    make_dispatcher,
    outbox_rows,
    receiver,
    smtp,
)

__all__ = ["receiver", "smtp"]

ROOT = Path(__file__).resolve().parents[2]
LEASE_MS = 60_000
AFTER_ACCEPTANCE = {"dispatch.after_send", "dispatch.before_commit"}


def worker_main() -> None:
    """Subprocess entry: `python -c '...worker_main()' URL SMTP_PORT NOW_MS`; one batch."""
    url, smtp_port, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store.create(url)
    clock = FakeClock(now)
    dispatcher = make_dispatcher(store, clock, smtp_port=smtp_port, lease_ms=LEASE_MS,
                                 crash=CrashPoints.from_environment())
    asyncio.run(_one_batch(dispatcher))
    store.dispose()


async def _one_batch(dispatcher: Dispatcher) -> None:
    try:
        await dispatcher.run_once(100)
    finally:
        await dispatcher.close()


def run_worker(url: str, smtp_port: int, now: int, point: str) -> subprocess.CompletedProcess[str]:
    code = "from tests.engine.test_dispatch_crash import worker_main; worker_main()"
    return subprocess.run(
        [sys.executable, "-c", code, url, str(smtp_port), str(now)], cwd=ROOT,
        env={**os.environ, "CADENZA_CRASH_AT": point}, capture_output=True, text=True,
        timeout=60, check=False)


def seed(store: Store, clock: FakeClock, receiver: HttpReceiver) -> dict[int, str]:
    """Three webhook, three email and two task rows; their keys by id."""
    now = clock.now_ms()
    TemplateService(store, clock).save("hello", "email", "Hello {{ contact.attributes.name }}",
                                       "Hi {{ contact.attributes.name }}, order "
                                       "{{ entry.order }}")
    contacts = [add_contact(store, now, email=f"c{i}@example.com",
                            attributes={"name": f"C{i}"}) for i in range(3)]
    rows: list[dict[str, object]] = []
    for i, contact in enumerate(contacts):
        rows.append({"contact_id": contact, "channel": "webhook", "key": f"hook-{i}",
                     "params": {"url": receiver.url + "/hook"}})
        rows.append({"contact_id": contact, "channel": "email", "template": "hello",
                     "key": f"mail-{i}", "entry": {"order": f"o-{i}"}})
    rows += [{"contact_id": contacts[0], "channel": "task", "key": f"task-{i}",
              "params": {"title": "Follow up {{ contact.email }}"}} for i in range(2)]
    ids = add_outbox(store, now, rows)
    return {i: str(row["key"]) for i, row in zip(ids, rows, strict=True)}


@pytest.mark.parametrize("point", DISPATCH_POINTS)
def test_crash_point_then_recovery_sends_each_row_once(
        point: str, store: Store, store_url: str, clock: FakeClock, receiver: HttpReceiver,
        smtp: SmtpSink) -> None:
    keys = seed(store, clock, receiver)
    crashed = run_worker(store_url, smtp.port, clock.now_ms(), point)
    assert crashed.returncode == EXIT_CODE, crashed.stderr[-2000:]

    after_crash = outbox_rows(store)
    emails = {i for i, k in keys.items() if k.startswith("mail-")}
    # Email is recorded as each message is accepted (SMTP cannot drop a repeat); the rest of
    # the batch is recorded after its sends, so a crash leaves those claimed.
    accepted = emails if point in AFTER_ACCEPTANCE else set()
    assert {i for i, r in after_crash.items() if r["status"] == "sent"} == accepted
    assert {r["status"] for i, r in after_crash.items() if i not in accepted} == {"sending"}
    assert {r["attempts"] for r in after_crash.values()} == {1}
    if point in AFTER_ACCEPTANCE:
        assert len(receiver.requests) == 3
        assert len(smtp.mails) == 3
    else:
        assert receiver.requests == []
        assert smtp.mails == []

    recovery = make_dispatcher(store, clock, smtp_port=smtp.port)
    asyncio.run(_one_batch(recovery))
    assert all(r["status"] == "sending" for i, r in outbox_rows(store).items()
               if i not in accepted)  # the claims hold until they expire
    clock.advance(LEASE_MS + 1)
    asyncio.run(_one_batch(recovery))

    final = outbox_rows(store)
    assert {r["status"] for r in final.values()} == {"sent"}
    assert {i: r["attempts"] for i, r in final.items()} == {
        i: 1 if i in accepted else 2 for i in final}
    hooks = {k for k in keys.values() if k.startswith("hook-")}
    assert set(receiver.effects) == hooks
    assert set(receiver.effects.values()) == {1}
    assert set(receiver.keys_seen()) == hooks
    mails = {k for k in keys.values() if k.startswith("mail-")}
    by_rcpt = Counter(m.rcpt for m in smtp.mails)
    assert by_rcpt == {f"c{i}@example.com": 1 for i in range(3)}  # a crash repeats no email
    expected_ids = {message_id(k) for k in mails}
    assert {m.message_id for m in smtp.mails} == expected_ids
    for mail in smtp.mails:
        assert mail.message_id == message_id(f"mail-{mail.rcpt[1]}")
    with store.read() as conn:
        tasks = conn.execute(sa.select(schema.tasks.c.idempotency_key)).scalars().all()
    assert sorted(tasks) == ["task-0", "task-1"]


def test_an_unarmed_or_other_point_does_nothing() -> None:
    CrashPoints()("dispatch.after_send")
    CrashPoints("dispatch.after_claim")("dispatch.after_send")
    assert CrashPoints.from_environment({"CADENZA_CRASH_AT": ""}).armed is None
    assert CrashPoints.from_environment({"CADENZA_CRASH_AT": "x"}).armed == "x"


def test_the_process_wide_crash_point_exits_137() -> None:
    code = ("from cadenza.engine.crash import crash_point; crash_point('a'); "
            "print('passed a', flush=True); crash_point('b'); print('never')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "CADENZA_CRASH_AT": "b"},
                            timeout=60, check=False)
    assert result.returncode == EXIT_CODE
    assert result.stdout == "passed a\n"
