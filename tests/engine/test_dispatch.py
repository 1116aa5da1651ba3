"""The dispatcher end to end: claim, render, interceptors, send to real receivers, record,
retry with backoff, dead letters and replay. Outbox rows are inserted as the engine writes
them."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from cadenza.channels import ChannelError, Outcome, TemplateService
from cadenza.channels.email import message_id
from cadenza.clock import FakeClock
from cadenza.contacts import SuppressionReason, suppress
from cadenza.engine.dispatch import DispatchReport
from cadenza.engine.retry import RetryPolicy
from cadenza.store import Store, schema
from tests.channels.servers import HttpReceiver, SmtpSink
from tests.channels.support import (
    add_contact,
    add_outbox,
    dispatch,
    make_dispatcher,
    outbox_rows,
    receiver,
    smtp,
)

__all__ = ["receiver", "smtp"]




def webhook_row(contact: int, url: str, **extra: object) -> dict[str, object]:
    return {"contact_id": contact, "channel": "webhook",
            "params": {"url": url, "body": "hi {{ contact.email }}"}, **extra}


def test_a_503_is_retried_with_backoff_then_sent(store: Store, clock: FakeClock,
                                                 receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms(), email="ada@example.com")
    (row,) = add_outbox(store, clock.now_ms(), [webhook_row(contact, receiver.url,
                                                            key="key-503")])
    receiver.plan["key-503"] = [503]
    d = make_dispatcher(store, clock)
    assert dispatch(d) == DispatchReport(claimed=1, retried=1)
    state = outbox_rows(store)[row]
    assert state["status"] == "pending"
    assert state["attempts"] == 1
    assert "HTTP 503" in state["last_error"]
    delay = state["next_attempt_at"] - clock.now_ms()
    assert 500 <= delay <= 1000  # initial 1000 ms with 50% jitter
    assert dispatch(d).claimed == 0  # not due yet
    clock.advance(delay)
    assert dispatch(d) == DispatchReport(claimed=1, sent=1)
    state = outbox_rows(store)[row]
    assert state["status"] == "sent"
    assert state["attempts"] == 2
    assert state["sent_at"] == clock.now_ms()
    assert state["provider_ref"] == "http:200"
    assert state["rendered"]["body"] == "hi ada@example.com"
    assert [r.key for r in receiver.requests] == ["key-503", "key-503"]
    assert receiver.effects == {"key-503": 1}


def test_a_400_is_dead_at_once(store: Store, clock: FakeClock, receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms())
    (row,) = add_outbox(store, clock.now_ms(), [webhook_row(contact, receiver.url)])
    receiver.always = 400
    assert dispatch(make_dispatcher(store, clock)) == DispatchReport(claimed=1, dead=1)
    state = outbox_rows(store)[row]
    assert state["status"] == "dead"
    assert state["attempts"] == 1
    assert "HTTP 400" in state["last_error"]
    assert len(receiver.requests) == 1


def test_dead_after_max_attempts_then_replayed(store: Store, clock: FakeClock,
                                               receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms())
    (row,) = add_outbox(store, clock.now_ms(), [webhook_row(contact, receiver.url,
                                                            key="k-flaky")])
    receiver.always = 503
    d = make_dispatcher(store, clock)
    reports = []
    for _ in range(3):
        reports.append(dispatch(d))
        clock.advance(60_000)
    assert [r.retried for r in reports] == [1, 1, 0]
    assert reports[-1].dead == 1
    state = d.inspect(row)
    assert state["status"] == "dead"
    assert state["attempts"] == 3
    assert "gave up after 3 attempts" in state["last_error"]
    assert [item["id"] for item in d.dead_letters().items] == [row]

    receiver.always = None
    replay = d.replay([row, row + 99])
    assert replay.replayed == [row]
    assert replay.missing == [row + 99]
    assert d.inspect(row)["attempts"] == 0
    again = d.replay([row])
    assert again.replayed == []
    assert again.unchanged == {row: "pending"}
    assert dispatch(d).sent == 1
    assert d.replay([row]).unchanged == {row: "sent"}
    assert dispatch(d).claimed == 0
    assert receiver.effects == {"k-flaky": 1}
    assert d.dead_letters().items == []


def test_shadow_rows_are_rendered_and_never_sent(store: Store, clock: FakeClock,
                                                 receiver: HttpReceiver, smtp: SmtpSink) -> None:
    contact = add_contact(store, clock.now_ms(), email="sam@example.com")
    TemplateService(store, clock).save("hello", "email", "Hi", "Hello {{ contact.email }}")
    rows = add_outbox(store, clock.now_ms(), [
        webhook_row(contact, receiver.url, shadow=True),
        {"contact_id": contact, "channel": "email", "template": "hello", "shadow": True},
        {"contact_id": contact, "channel": "task", "params": {"title": "Call"},
         "shadow": True},
    ])
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=3, shadowed=3)
    state = outbox_rows(store)
    assert {state[r]["status"] for r in rows} == {"shadowed"}
    assert state[rows[1]]["rendered"] == {"to": "sam@example.com", "subject": "Hi",
                                          "body": "Hello sam@example.com", "html": False}
    assert receiver.requests == []
    assert smtp.mails == []
    assert smtp.connections == 0
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.tasks)).scalar() == 0


def test_suppressed_addresses_are_cancelled_at_send_time(store: Store, clock: FakeClock,
                                                         smtp: SmtpSink) -> None:
    now = clock.now_ms()
    blocked = add_contact(store, now, email="blocked@example.com")
    fine = add_contact(store, now, email="fine@example.com")
    no_email = add_contact(store, now, user_id="u-no-email")
    rows = add_outbox(store, now, [
        {"contact_id": c, "channel": "email", "params": {"subject": "S", "body": "B"}}
        for c in (blocked, fine, no_email)])
    with store.begin() as conn:  # suppressed after the step ran, before the send
        suppress(conn, "email", "Blocked@Example.com", SuppressionReason.COMPLAINT, now)
    report = dispatch(make_dispatcher(store, clock, smtp_port=smtp.port))
    assert report == DispatchReport(claimed=3, sent=1, cancelled=2)
    state = outbox_rows(store)
    assert state[rows[0]]["status"] == "cancelled"
    assert "suppress" in state[rows[0]]["last_error"]
    assert state[rows[2]]["status"] == "cancelled"
    assert "no email address" in state[rows[2]]["last_error"]
    assert [m.rcpt for m in smtp.mails] == ["fine@example.com"]


def test_email_batch_uses_one_connection_and_stable_message_ids(
        store: Store, clock: FakeClock, smtp: SmtpSink) -> None:
    now = clock.now_ms()
    TemplateService(store, clock).save(
        "welcome", "email", "Welcome, {{ contact.attributes.name }}",
        "<p>Hi {{ contact.attributes.name }} & {{ entry.ref }}</p>")
    contacts = [add_contact(store, now, email=f"p{i}@example.com",
                            attributes={"name": f"<P{i}>"}) for i in range(4)]
    rows = add_outbox(store, now, [
        {"contact_id": c, "channel": "email", "template": "welcome", "key": f"mail-{c}",
         "entry": {"ref": "a<b"}} for c in contacts])
    smtp.data_replies["p1@example.com"] = ["451 4.7.1 greylisted"]
    d = make_dispatcher(store, clock, smtp_port=smtp.port)
    assert dispatch(d) == DispatchReport(claimed=4, sent=3, retried=1)
    assert smtp.connections == 1
    clock.advance(60_000)
    assert dispatch(d) == DispatchReport(claimed=1, sent=1)
    ids = {m.rcpt: m.message_id for m in smtp.mails}
    assert ids == {f"p{i}@example.com": message_id(f"mail-{c}")
                   for i, c in enumerate(contacts)}
    mail = next(m for m in smtp.mails if m.rcpt == "p0@example.com")
    assert mail.subject == "Welcome, <P0>"
    html = mail.mime.get_body(("html",))  # the HTML part (a text part may sit beside it)
    assert html is not None
    assert html.get_content().strip() == "<p>Hi &lt;P0&gt; & a&lt;b</p>"
    assert outbox_rows(store)[rows[1]]["provider_ref"] == message_id(f"mail-{contacts[1]}")


def test_render_failures_and_unknown_channels_are_dead_letters(
        store: Store, clock: FakeClock, receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms())
    rows = add_outbox(store, clock.now_ms(), [
        {"contact_id": contact, "channel": "email", "template": "missing"},
        webhook_row(contact, receiver.url, params={"url": receiver.url,
                                                   "body": "{{ contact.attributes.plan }}"}),
        {"contact_id": contact, "channel": "carrier-pigeon"},
    ])
    report = dispatch(make_dispatcher(store, clock))
    assert report == DispatchReport(claimed=3, dead=3)
    state = outbox_rows(store)
    assert "'missing'" in state[rows[0]]["last_error"]
    assert "plan" in state[rows[1]]["last_error"]
    assert "carrier-pigeon" in state[rows[2]]["last_error"]
    assert receiver.requests == []


def test_merged_contacts_are_followed_to_the_survivor(store: Store, clock: FakeClock,
                                                      receiver: HttpReceiver) -> None:
    now = clock.now_ms()
    winner = add_contact(store, now, email="win@example.com")
    loser = add_contact(store, now, email=None)
    with store.begin() as conn:
        conn.execute(sa.update(schema.contacts).where(schema.contacts.c.id == loser)
                     .values(merged_into=winner))
    add_outbox(store, now, [webhook_row(loser, receiver.url)])
    assert dispatch(make_dispatcher(store, clock)).sent == 1
    assert receiver.requests[0].body["contact"]["email"] == "win@example.com"


def test_the_log_channel_logs_and_succeeds(store: Store, clock: FakeClock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    contact = add_contact(store, clock.now_ms(), email="l@example.com")
    add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "log",
                                        "key": "log-1", "params": {"subject": "Hey"}}])
    with caplog.at_level("INFO", logger="cadenza.channels.log"):
        assert dispatch(make_dispatcher(store, clock)).sent == 1
    assert "log-1" in caplog.text
    assert "Hey" in caplog.text


def test_an_expired_claim_is_taken_over_and_the_late_record_is_fenced_off(
        store: Store, clock: FakeClock, receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms())
    (row,) = add_outbox(store, clock.now_ms(), [webhook_row(contact, receiver.url)])
    slow = make_dispatcher(store, clock, lease_ms=10_000)
    claimed = slow._claim(clock.now_ms(), 10)  # claims, then stalls past its lease
    assert [c.id for c in claimed] == [row]
    clock.advance(5_000)
    fast = make_dispatcher(store, clock)
    assert dispatch(fast).claimed == 0  # the claim still holds
    clock.advance(5_001)
    assert dispatch(fast) == DispatchReport(claimed=1, sent=1)
    stalled = Outcome.failed(ChannelError("webhook", "stalled", retryable=True))
    late = slow._record(claimed, {row: stalled}, {})
    assert late.lost == 1
    state = outbox_rows(store)[row]
    assert state["status"] == "sent"
    assert state["attempts"] == 2


def test_concurrent_claims_never_overlap(store: Store, clock: FakeClock) -> None:
    contact = add_contact(store, clock.now_ms())
    add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "log"}] * 300)
    dispatchers = [make_dispatcher(store, clock) for _ in range(3)]
    claimed: list[list[int]] = [[] for _ in dispatchers]
    start = threading.Barrier(len(dispatchers))

    def claim(n: int) -> None:
        start.wait()
        for _ in range(10):
            claimed[n].extend(r.id for r in dispatchers[n]._claim(clock.now_ms(), 40))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(dispatchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for part in claimed for i in part]
    assert len(every) == len(set(every)) == 300


def test_run_forever_wakes_on_new_rows_and_does_not_poll(store: Store, clock: FakeClock,
                                                         receiver: HttpReceiver) -> None:
    contact = add_contact(store, clock.now_ms())
    d = make_dispatcher(store, clock)
    calls = 0
    original = d.run_once

    async def counting(limit: int = 100) -> DispatchReport:
        nonlocal calls
        calls += 1
        return await original(limit)

    d.run_once = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        stop, wake = asyncio.Event(), asyncio.Event()
        loop = asyncio.create_task(d.run_forever(stop, wake, idle_ms=60_000))
        await asyncio.sleep(0.3)
        assert calls == 1  # idle: one pass, then asleep
        await asyncio.to_thread(add_outbox, store, clock.now_ms(),
                                [webhook_row(contact, receiver.url, key="woken")])
        wake.set()
        for _ in range(200):
            if receiver.effects:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(loop, 5)

    asyncio.run(scenario())
    assert receiver.effects == {"woken": 1}
    assert calls == 2
    assert outbox_rows(store)[1]["status"] == "sent"


def test_policy_and_dispatcher_options_are_checked(store: Store, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="lease_ms"):
        make_dispatcher(store, clock, lease_ms=10)
    with pytest.raises(ValueError, match="limit"):
        asyncio.run(make_dispatcher(store, clock).run_once(0))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
