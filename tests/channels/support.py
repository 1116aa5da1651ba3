"""Factories for delivery tests: contacts, outbox rows as the engine writes them, and a
dispatcher wired to loopback receivers. Fixtures here are imported by tests/engine too."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from cadenza.channels import (
    ChannelDeps,
    ChannelRegistry,
    Interceptor,
    SmtpOptions,
    TemplateService,
    WebhookOptions,
)
from cadenza.clock import Clock
from cadenza.engine.crash import CrashPoints
from cadenza.engine.dispatch import Dispatcher, DispatchReport
from cadenza.engine.retry import RetryPolicy
from cadenza.store import Store, schema
from tests.channels.servers import HttpReceiver, SmtpSink, http_receiver, smtp_sink

LOOPBACK = ("127.0.0.0/8",)
"""The receivers listen on loopback, which the SSRF guard refuses unless allow-listed."""
FAST = RetryPolicy(max_attempts=3, initial_ms=1000, multiplier=2, max_ms=60_000, jitter=0.5)


def add_contact(store: Store, at: int, *, email: str | None = None, phone: str | None = None,
                user_id: str | None = None, attributes: Mapping[str, Any] | None = None) -> int:
    """A contact row; its id."""
    c = schema.contacts
    with store.begin() as conn:
        return int(conn.execute(sa.insert(c).values(
            email=email, phone=phone, user_id=user_id, attributes=dict(attributes or {}),
            created_at=at, updated_at=at).returning(c.c.id)).scalar_one())


def add_outbox(store: Store, at: int, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Outbox rows as the engine writes them (pending, payload {params, entry, journey,
    step}); each mapping gives contact_id and channel, optionally key, template, params,
    entry, shadow, step."""
    o = schema.outbox
    ids = []
    with store.begin() as conn:
        for n, row in enumerate(rows):
            step = row.get("step", "send")
            ids.append(int(conn.execute(sa.insert(o).values(
                idempotency_key=row.get("key", f"test:{row['contact_id']}:{step}:{n}:{at}"),
                contact_id=row["contact_id"], enrollment_id=None, journey_id=None,
                version_id=None, node=step, part=0, shadow=bool(row.get("shadow", False)),
                channel=row["channel"], template=row.get("template"),
                payload={"params": dict(row.get("params", {})),
                         "entry": dict(row.get("entry", {})), "journey": "test-journey",
                         "step": step},
                status="pending", attempts=0, next_attempt_at=row.get("due", at),
                created_at=at).returning(o.c.id)).scalar_one()))
    return ids


def outbox_rows(store: Store) -> dict[int, dict[str, Any]]:
    """Every outbox row by id."""
    o = schema.outbox
    with store.read() as conn:
        return {row["id"]: dict(row) for row in conn.execute(sa.select(o)).mappings()}


def dispatch(dispatcher: Dispatcher, limit: int = 100) -> DispatchReport:
    """One batch, in its own event loop (channels are closed after it)."""

    async def go() -> DispatchReport:
        try:
            return await dispatcher.run_once(limit)
        finally:
            await dispatcher.close()

    return asyncio.run(go())


def make_dispatcher(store: Store, clock: Clock, *, smtp_port: int | None = None,
                    policy: RetryPolicy = FAST, seed: int = 7,
                    interceptors: Sequence[Interceptor] | None = None,
                    crash: CrashPoints | None = None, lease_ms: int = 60_000,
                    webhook_timeout_s: float = 5.0, smtp_pool_size: int = 1) -> Dispatcher:
    """A dispatcher with every channel, SMTP pointed at `smtp_port` on loopback (one pooled
    connection unless `smtp_pool_size` says otherwise)."""
    deps = ChannelDeps(store, clock,
                       smtp=SmtpOptions(host="127.0.0.1", port=smtp_port or 25, timeout_s=5,
                                        pool_size=smtp_pool_size),
                       webhook=WebhookOptions(timeout_s=webhook_timeout_s,
                                              allow_networks=LOOPBACK))
    return Dispatcher(store, clock, ChannelRegistry.build(deps), TemplateService(store, clock),
                      policy, random.Random(seed), lease_ms, interceptors=interceptors,
                      crash=crash or CrashPoints())


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """A real HTTP endpoint on loopback."""
    with http_receiver() as running:
        yield running


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback."""
    with smtp_sink() as running:
        yield running
