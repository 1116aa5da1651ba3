"""The emergency stop: nothing is claimed or sent while it holds; everything goes after."""

from __future__ import annotations

import asyncio

import pytest

from cadenza.channels import Message, Outcome, Recipient, resume_sends, sends_stopped, stop_sends
from cadenza.channels.stop import RECHECK_MS, EmergencyStopInterceptor
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store
from tests.channels.support import add_contact, add_outbox, dispatch, make_dispatcher, outbox_rows


def test_stopped_sends_are_not_claimed_and_go_out_after_resume(
        store: Store, clock: FakeClock) -> None:
    now = clock.now_ms()
    contact = add_contact(store, now, email="kim@example.com")
    ids = add_outbox(store, now, [{"contact_id": contact, "channel": "log"} for _ in range(3)])
    with store.begin() as conn:
        stop_sends(conn, "user:ann", "wrong price in the spring campaign", now)
    assert dispatch(make_dispatcher(store, clock)).claimed == 0
    rows = outbox_rows(store)
    assert {rows[i]["status"] for i in ids} == {"pending"}
    assert {rows[i]["attempts"] for i in ids} == {0}
    with store.begin() as conn:
        lifted = resume_sends(conn)
    assert lifted is not None
    assert lifted.by == "user:ann"
    assert dispatch(make_dispatcher(store, clock)).sent == 3


def test_a_batch_in_flight_when_sends_stop_is_deferred_not_failed(
        store: Store, clock: FakeClock) -> None:
    interceptor = EmergencyStopInterceptor(store, clock)
    message = Message(outbox_id=1, key="k", channel="log", contact=Recipient(1), params={},
                      content={}, at_ms=clock.now_ms(), journey_id=None, journey="j",
                      step="s")
    delivered: list[int] = []

    async def proceed(messages: list[Message]) -> dict[int, Outcome]:
        delivered.extend(m.outbox_id for m in messages)
        return {m.outbox_id: Outcome.sent("x") for m in messages}

    assert asyncio.run(interceptor.intercept([message], proceed))[1].kind.value == "sent"
    with store.begin() as conn:
        stop_sends(conn, "system", "incident 42", clock.now_ms())
    held = asyncio.run(interceptor.intercept([message], proceed))[1]
    assert held.kind.value == "deferred"
    assert held.not_before == clock.now_ms() + RECHECK_MS
    assert "incident 42" in held.reason
    assert delivered == [1]


def test_a_second_stop_keeps_the_first_and_a_reason_is_required(
        store: Store, clock: FakeClock) -> None:
    with store.begin() as conn:
        first = stop_sends(conn, "user:ann", "first", 1)
        again = stop_sends(conn, "user:bob", "second", 2)
        assert again == first
        assert sends_stopped(conn) == first
        with pytest.raises(ValidationFailed) as caught:
            stop_sends(conn, "user:ann", "  ", 3)
        assert caught.value.field == "reason"
        resume_sends(conn)
        assert sends_stopped(conn) is None
        assert resume_sends(conn) is None
