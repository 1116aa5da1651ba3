"""The task channel: one task per outbox key, whatever happens twice."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from cadenza.channels import Message, Recipient
from cadenza.channels.task import TaskChannel
from cadenza.clock import FakeClock
from cadenza.store import Store, schema
from tests.channels.support import add_contact


def test_sending_twice_creates_one_task(store: Store, clock: FakeClock) -> None:
    contact = add_contact(store, clock.now_ms())
    message = Message(outbox_id=9, key="task-key", channel="task", contact=Recipient(contact),
                      params={"title": "ignored", "queue": "sales",
                              "due_at": clock.now_ms() + 3_600_000,
                              "details": {"score": 88}},
                      content={"title": "Call Ada about Pro"}, at_ms=clock.now_ms(),
                      journey_id=None, journey="nurture", step="handoff")
    channel = TaskChannel(store, clock)
    first = asyncio.run(channel.send(message))
    clock.advance(1000)
    second = asyncio.run(channel.send(message))
    assert first == second
    with store.read() as conn:
        rows = conn.execute(sa.select(schema.tasks)).mappings().all()
    assert len(rows) == 1
    task = rows[0]
    assert first.provider_ref == f"task:{task['id']}"
    assert task["title"] == "Call Ada about Pro"
    assert task["queue"] == "sales"
    assert task["status"] == "open"
    assert task["idempotency_key"] == "task-key"
    assert task["due_at"] == clock.now_ms() - 1000 + 3_600_000
    assert task["details"] == {"score": 88, "journey": "nurture", "step": "handoff",
                               "outbox_id": 9}


def test_due_ms_counts_from_creation(store: Store, clock: FakeClock) -> None:
    contact = add_contact(store, clock.now_ms())
    message = Message(outbox_id=1, key="k", channel="task", contact=Recipient(contact),
                      params={"title": "T", "due_ms": 60_000}, content={"title": "T"},
                      at_ms=0)
    asyncio.run(TaskChannel(store, clock).send(message))
    with store.read() as conn:
        assert conn.execute(sa.select(schema.tasks.c.due_at)).scalar() == (
            clock.now_ms() + 60_000)
