"""The dispatcher: delivers outbox rows through their channels, exactly once in effect.

One batch (`run_once`) goes through these stages; the named crash points sit between them:

    claim      one UPDATE ... RETURNING: due rows become 'sending', attempts + 1, claimed
               until now + lease                                   -> dispatch.after_claim
    render     the batch's contacts and templates in one statement each, rendered in the
               sandbox (a large batch in parts: the point follows the first part, and
               the next parts render while the first are delivered) -> dispatch.after_render
    deliver    the interceptor chain (shadow, suppression, ...) and the channels' sends,
               with bounded concurrency                            -> dispatch.after_send
    record     one transaction: sent, pending again with backoff, dead or cancelled
                                                                  -> dispatch.before_commit

Why a crash anywhere is safe: a claimed row that is never recorded stays 'sending' until its
claim expires, then any dispatcher claims it again and sends it with the same idempotency key
(HTTP `Idempotency-Key`, the same SMTP `Message-ID`, the same task key). The record is
fenced: it only writes rows still 'sending' with the attempt count this dispatcher set, so a
dispatcher that outlived its claim cannot overwrite the work of the one that took over.

Time comes from the injected clock, jitter from the injected random generator.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels import (
    ChannelError,
    ChannelRegistry,
    Interceptor,
    Message,
    OutboxService,
    Outcome,
    OutcomeKind,
    Outcomes,
    Recipient,
    RenderFailed,
    ReplayReport,
    TemplateService,
    Undeliverable,
    build_chain,
    default_interceptors,
    load_templates,
    render_context,
    stopped_clause,
)
from cadenza.channels.links import LinkBuilder, MessageRef, NoLinks
from cadenza.channels.models import TemplateRecord
from cadenza.channels.ratelimit import RateLimited
from cadenza.clock import Clock
from cadenza.engine.crash import CrashPoints
from cadenza.engine.retry import RetryPolicy, next_delay
from cadenza.errors import CadenzaError
from cadenza.store import Page, Store, schema

logger = logging.getLogger("cadenza.engine.dispatch")

MAX_BATCH = 1000
MAX_MERGE_HOPS = 8
DEFAULT_CONCURRENCY = 16
"""Sends in flight at once. Also the most messages a crash can repeat on channels without an
idempotency key (email): each holds its place until its record commits."""
GROUP_WINDOW_S = 0.005
"""How long the first accepted message waits for others to share its record transaction."""
_o = schema.outbox
_c = schema.contacts


@dataclass(frozen=True)
class ClaimedRow:
    """An outbox row this dispatcher holds for one attempt."""

    id: int
    key: str
    contact_id: int
    journey_id: int | None
    node: str | None
    shadow: bool
    channel: str
    template: str | None
    payload: Mapping[str, Any]
    attempts: int
    """The attempt count after the claim: the fencing token of the record."""


_CLAIMED_COLUMNS = (_o.c.id, _o.c.idempotency_key, _o.c.contact_id, _o.c.journey_id, _o.c.node,
                    _o.c.shadow, _o.c.channel, _o.c.template, _o.c.payload, _o.c.attempts)


@dataclass
class DispatchReport:
    """What one batch did."""

    claimed: int = 0
    sent: int = 0
    shadowed: int = 0
    cancelled: int = 0
    retried: int = 0
    """Failed and pending again, for a later attempt."""
    deferred: int = 0
    """Held back by a rule (quiet hours, a cap, a rate limit); pending again, attempt not
    counted."""
    dead: int = 0
    lost: int = 0
    """Claims that expired and were taken over before this dispatcher recorded them."""

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return asdict(self)

    def merged(self, other: DispatchReport) -> DispatchReport:
        """Both reports added up."""
        return DispatchReport(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


CHUNK = 128
"""Rows a large batch renders at a time: the first part goes out while the next renders."""


def _chunks(claimed: Sequence[ClaimedRow], contacts: Mapping[int, Recipient]
            ) -> list[list[ClaimedRow]]:
    """`claimed` in parts of about CHUNK rows, every row of one contact (after merges) in
    the same part; one part when the batch is small."""
    if len(claimed) <= CHUNK:
        return [list(claimed)]
    by_contact: dict[int, list[ClaimedRow]] = {}
    for row in claimed:
        found = contacts.get(row.contact_id)
        by_contact.setdefault(found.id if found else row.contact_id, []).append(row)
    parts: list[list[ClaimedRow]] = [[]]
    for rows in by_contact.values():
        if len(parts[-1]) >= CHUNK:
            parts.append([])
        parts[-1].extend(rows)
    return [sorted(part, key=lambda r: r.id) for part in parts]


_Loaded = tuple[dict[int, Recipient], dict[str, TemplateRecord]]


@dataclass
class _Prepared:
    messages: list[Message]
    failures: Outcomes
    contents: dict[int, dict[str, Any]]


_RECORD = (
    sa.update(_o)
    .where(_o.c.id == sa.bindparam("b_id"), _o.c.status == "sending",
           _o.c.attempts == sa.bindparam("b_attempts"))
    .values(
        status=sa.bindparam("b_status"),
        attempts=sa.bindparam("b_new_attempts"),
        purpose=sa.bindparam("b_purpose"),
        next_attempt_at=sa.bindparam("b_next"),
        claimed_until=None,
        last_error=sa.func.coalesce(sa.bindparam("b_error", type_=sa.Text), _o.c.last_error),
        provider_ref=sa.func.coalesce(sa.bindparam("b_ref", type_=sa.String),
                                      _o.c.provider_ref),
        rendered=sa.bindparam("b_rendered", type_=_o.c.rendered.type),
        sent_at=sa.func.coalesce(sa.bindparam("b_sent_at", type_=sa.BigInteger), _o.c.sent_at),
    )
)


_CURRENT = (sa.select(_o.c.id, _o.c.status, _o.c.attempts)
            .where(_o.c.id.in_(sa.bindparam("ids", expanding=True))).with_for_update())


class _Lost(Exception):
    """A fenced record changed fewer rows than it was given (raised to roll it back)."""


def _tally(claimed: int, kinds: Iterable[str]) -> DispatchReport:
    report = DispatchReport(claimed=claimed)
    for kind in kinds:
        setattr(report, kind, getattr(report, kind) + 1)
    return report


class Dispatcher:
    """Claims due outbox rows and delivers them; records every outcome durably."""

    def __init__(self, store: Store, clock: Clock, channels: ChannelRegistry,
                 templates: TemplateService, policy: RetryPolicy, rng: random.Random,
                 lease_ms: int = 120_000, *, interceptors: Sequence[Interceptor] | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, crash: CrashPoints | None = None,
                 links: LinkBuilder | None = None) -> None:
        if lease_ms < 1000:
            raise ValueError(f"lease_ms must be at least 1000 so that a claim outlives its "
                             f"sends, got {lease_ms}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.store = store
        self.clock = clock
        self.channels = channels
        self.templates = templates
        self.policy = policy
        self.rng = rng
        self.lease_ms = lease_ms
        self.concurrency = concurrency
        self.interceptors = list(default_interceptors(store, clock) if interceptors is None
                                 else interceptors)
        self.crash = crash if crash is not None else CrashPoints.from_environment()
        self.outbox = OutboxService(store, clock)
        self.links: LinkBuilder = links if links is not None else NoLinks()
        self._chain = build_chain(self.interceptors, self._deliver)
        # The batch being delivered: rows not recorded yet, their rendered contents, and what
        # was recorded early (channels that record each message).
        self._in_flight: dict[int, ClaimedRow] = {}
        self._contents: dict[int, dict[str, Any]] = {}
        self._early = DispatchReport()
        self._purposes: dict[int, str] = {}
        self._group = _GroupCommit(self._record_early, self.concurrency // 2)
        self._gate = asyncio.Semaphore(concurrency)
        """Sends in flight (until recorded), shared by every part of a batch."""

    # --- one batch ------------------------------------------------------------------------

    async def run_once(self, limit: int = 100) -> DispatchReport:
        """Claim up to `limit` due rows, deliver them and record the outcomes."""
        if not 1 <= limit <= MAX_BATCH:
            raise ValueError(f"limit must be between 1 and {MAX_BATCH}, got {limit}")
        claimed = await asyncio.to_thread(self._claim, self.clock.now_ms(), limit)
        if not claimed:
            return DispatchReport()
        self.crash("dispatch.after_claim")
        self._purposes = {}
        at = self.clock.now_ms()
        loaded = await asyncio.to_thread(self._load, claimed)
        chunks = _chunks(claimed, loaded[0])
        first = await asyncio.to_thread(self._render, chunks[0], loaded, at)
        self.crash("dispatch.after_render")
        self._in_flight = {row.id: row for row in claimed}
        self._contents = dict(first.contents)
        self._early = DispatchReport()
        self._group = _GroupCommit(self._record_early, self.concurrency // 2)
        self._gate = asyncio.Semaphore(self.concurrency)
        outcomes: Outcomes = dict(first.failures)
        contents = dict(first.contents)
        delivering: list[asyncio.Task[Outcomes]] = []
        try:
            # The rest of a large batch renders while the first part is being sent, so the
            # receiving server is not idle meanwhile. Each part holds every row of its
            # contacts (caps count a contact's messages within one part) and all parts share
            # the one `concurrency` gate.
            prepared = first
            for chunk in chunks[1:]:
                delivering.append(asyncio.ensure_future(self._run_chain(prepared.messages)))
                prepared = await asyncio.to_thread(self._render, chunk, loaded, at)
                outcomes.update(prepared.failures)
                contents.update(prepared.contents)
                self._contents.update(prepared.contents)
            delivering.append(asyncio.ensure_future(self._run_chain(prepared.messages)))
            for part in await asyncio.gather(*delivering):
                outcomes.update(part)
        except BaseException:
            for task in delivering:
                task.cancel()
            await asyncio.gather(*delivering, return_exceptions=True)
            raise
        finally:
            await self.channels.end_batch()
        self.crash("dispatch.after_send")
        rest = [row for row in claimed if row.id in self._in_flight]
        report = await asyncio.to_thread(self._record, rest, outcomes, contents)
        return self._early.merged(report)

    def _claim(self, now: int, limit: int) -> list[ClaimedRow]:
        until = now + self.lease_ms
        due = sa.and_(_o.c.status.in_(("pending", "sending")), _o.c.next_attempt_at <= now,
                      sa.or_(_o.c.status == "pending", _o.c.claimed_until < now),
                      ~stopped_clause())
        pick = sa.select(_o.c.id).where(due).order_by(_o.c.next_attempt_at, _o.c.id)
        pick = pick.limit(limit)
        if self.store.is_sqlite:
            picked = pick.cte("picked")
        else:
            # Concurrent dispatchers skip each other's rows instead of claiming them twice.
            # MATERIALIZED: the pick runs once. As `id IN (subquery)` the planner may rescan it
            # for every outer row, each rescan locking the next `limit` rows.
            picked = (pick.with_for_update(skip_locked=True).cte("picked")
                      .prefix_with("MATERIALIZED"))
        # A claimed row's next_attempt_at is its claim expiry: the ready index finds it again.
        claim = (sa.update(_o).where(_o.c.id.in_(sa.select(picked.c.id)), due)
                 .values(status="sending", attempts=_o.c.attempts + 1, claimed_until=until,
                         next_attempt_at=until)
                 .returning(*_CLAIMED_COLUMNS))

        def work(conn: Connection) -> list[ClaimedRow]:
            return [ClaimedRow(*row) for row in conn.execute(claim).all()]

        return sorted(self.store.retry(work), key=lambda r: r.id)

    def _load(self, claimed: Sequence[ClaimedRow]) -> _Loaded:
        """The batch's contacts and templates, one statement each."""
        with self.store.read() as conn:
            return (load_recipients(conn, {r.contact_id for r in claimed}),
                    load_templates(conn, {r.template for r in claimed if r.template}))

    def _render(self, claimed: Sequence[ClaimedRow], loaded: _Loaded, at: int) -> _Prepared:
        contacts, templates = loaded
        prepared = _Prepared([], {}, {})
        renderer = self.templates.renderer
        for row in claimed:
            channel = self.channels.get(row.channel)
            if channel is None:
                prepared.failures[row.id] = Outcome.failed(ChannelError(
                    row.channel, "this dispatcher has no such channel; configure it and "
                    "replay the row", retryable=False))
                continue
            contact = contacts.get(row.contact_id)
            if contact is None:
                prepared.failures[row.id] = Outcome.cancelled(
                    f"contact {row.contact_id} no longer exists")
                continue
            template = templates.get(row.template) if row.template else None
            if row.template and template is None:
                prepared.failures[row.id] = Outcome.failed(RenderFailed(
                    row.template, "no template has this key; save it and replay the row"))
                continue
            payload = row.payload or {}
            params: Mapping[str, Any] = payload.get("params") or {}
            journey = payload.get("journey")
            step = payload.get("step") or row.node
            purpose = str(params.get("purpose") or (template.purpose if template else None)
                          or "marketing")
            ref = MessageRef(row.id, contact.id, row.channel, purpose, row.shadow)
            links = self.links.links(ref)
            context = render_context(contact, payload.get("entry"), journey, step, links)
            try:
                content = renderer.compose(template=template, params=params,
                                           text_fields=channel.text_fields, context=context,
                                           inline_name=f"{journey or 'outbox'}.{step or row.id}")
            except RenderFailed as exc:
                prepared.failures[row.id] = Outcome.failed(exc)
                continue
            content = self.links.decorate(ref, content)
            kind = channel.address_kind
            address = contact.email if kind == "email" else contact.phone if kind else None
            if address:
                content = {"to": address, **content}
            prepared.contents[row.id] = content
            prepared.messages.append(Message(
                outbox_id=row.id, key=row.key, channel=row.channel, contact=contact,
                params=params, content=content, at_ms=at, attempt=row.attempts,
                journey_id=row.journey_id, journey=journey, step=step, template=row.template,
                shadow=row.shadow, address_kind=kind, address=address, purpose=purpose,
                links=links, sender=template.sender if template else None))
            self._purposes[row.id] = purpose
        return prepared

    async def _run_chain(self, messages: Sequence[Message]) -> Outcomes:
        if not messages:
            return {}
        try:
            return dict(await self._chain(messages))
        except CadenzaError as exc:
            # A rule could not be checked (the store was busy): nothing was sent by the
            # chain's own decision, so try the whole batch again later.
            logger.warning("interceptor chain failed for %d messages: %s", len(messages),
                           exc.message)
            failed = Outcome(OutcomeKind.FAILED, reason=exc.message, retryable=True)
            return {m.outbox_id: failed for m in messages}

    async def _deliver(self, messages: Sequence[Message]) -> Outcomes:
        gate = self._gate

        async def one(message: Message) -> tuple[int, Outcome]:
            async with gate:
                return message.outbox_id, await self._send(message)

        return dict(await asyncio.gather(*(one(m) for m in messages)))

    async def _send(self, message: Message) -> Outcome:
        channel = self.channels.get(message.channel)
        assert channel is not None  # checked in _prepare
        try:
            result = await channel.send(message)
        except Undeliverable as exc:
            return Outcome.cancelled(exc.message)
        except RateLimited as exc:
            # Not attempted: the provider's rate limit had no room in time.
            return Outcome.deferred(exc.retry_after_ms or self.clock.now_ms(), exc.message)
        except CadenzaError as exc:
            return Outcome.failed(exc)
        except Exception as exc:
            # A bug in a channel must not stop the batch; the row is retried, then dead.
            logger.exception("channel %s raised on outbox row %d", message.channel,
                             message.outbox_id)
            return Outcome(OutcomeKind.FAILED, reason=f"{type(exc).__name__}: {exc}",
                           retryable=True)
        outcome = Outcome.sent(result.provider_ref)
        if result.details and message.outbox_id in self._contents:
            self._contents[message.outbox_id].update(result.details)
        row = self._in_flight.get(message.outbox_id)
        if channel.record_each and row is not None:
            # Accepted by a receiver that cannot drop a repeat: record it now, not with the
            # batch, so that a crash from here on repeats this message only (and the others
            # in flight). The send holds its place among the `concurrency` sends until its
            # record commits, so no more than those are ever accepted and unrecorded.
            del self._in_flight[message.outbox_id]
            await self._group.record(row, outcome, self._contents.get(row.id))
        return outcome

    def _record_early(self, group: Sequence[tuple[ClaimedRow, Outcome, dict[str, Any] | None]]
                      ) -> None:
        rows = [row for row, _, _ in group]
        report = self._record(rows, {row.id: outcome for row, outcome, _ in group},
                              {row.id: content for row, _, content in group
                               if content is not None}, batch=False)
        self._early = self._early.merged(report)

    def _record(self, claimed: Sequence[ClaimedRow], outcomes: Outcomes,
                contents: Mapping[int, dict[str, Any]], *, batch: bool = True
                ) -> DispatchReport:
        if not claimed:
            if batch:  # nothing left to write: the batch's commit is this point
                self.crash("dispatch.before_commit")
            return DispatchReport()
        now = self.clock.now_ms()
        # Each row's new values, computed once (the retry jitter draws from the injected
        # generator once per row, whichever path below writes them).
        values = [self._values(row, outcomes.get(row.id), contents.get(row.id), now)
                  for row in sorted(claimed, key=lambda r: r.id)]

        def fenced(conn: Connection) -> DispatchReport:
            # The statement is fenced (status 'sending', our attempt count): when it changes
            # as many rows as it was given, every row was still ours.
            if conn.execute(_RECORD, [v for v, _ in values]).rowcount != len(values):
                raise _Lost
            if batch:  # the named point is the batch's commit, not one early message's
                self.crash("dispatch.before_commit")
            return _tally(len(claimed), [kind for _, kind in values])

        def careful(conn: Connection) -> DispatchReport:
            current = conn.execute(_CURRENT, {"ids": [v["b_id"] for v, _ in values]}).all()
            ours = {i for i, status, attempts in current
                    if status == "sending" and attempts == by_id[i].attempts}
            mine = [(v, kind) for v, kind in values if v["b_id"] in ours]
            if mine:
                conn.execute(_RECORD, [v for v, _ in mine])
            if batch:
                self.crash("dispatch.before_commit")
            report = _tally(len(claimed), [kind for _, kind in mine])
            report.lost = len(claimed) - len(mine)
            return report

        by_id = {row.id: row for row in claimed}
        try:
            return self.store.retry(fenced)
        except _Lost:
            # A claim expired and another dispatcher took the row over: that write was rolled
            # back; write again only the rows still ours (rare, so two statements are fine).
            return self.store.retry(careful)

    def _values(self, row: ClaimedRow, outcome: Outcome | None,
                content: dict[str, Any] | None, now: int) -> tuple[dict[str, Any], str]:
        """The record statement's parameters for `row`, and the report field it counts in."""
        if outcome is None:  # not expected: every message gets an outcome
            outcome = Outcome(OutcomeKind.FAILED, reason="no outcome was recorded",
                              retryable=True)
        values: dict[str, Any] = {"b_id": row.id, "b_attempts": row.attempts, "b_next": now,
                                  "b_new_attempts": row.attempts, "b_error": None,
                                  "b_ref": None, "b_rendered": content, "b_sent_at": None,
                                  "b_purpose": self._purposes.get(row.id)}
        if outcome.kind is OutcomeKind.SENT:
            values.update(b_status="sent", b_ref=outcome.provider_ref, b_sent_at=now)
            return values, "sent"
        if outcome.kind is OutcomeKind.SHADOWED:
            values.update(b_status="shadowed")
            return values, "shadowed"
        if outcome.kind is OutcomeKind.CANCELLED:
            values.update(b_status="cancelled", b_error=outcome.reason)
            return values, "cancelled"
        if outcome.kind is OutcomeKind.DEFERRED:
            # A rule held it back: pending again, and this claim does not count as an attempt.
            values.update(b_status="pending", b_next=max(now, outcome.not_before or now),
                          b_new_attempts=max(0, row.attempts - 1), b_error=outcome.reason)
            return values, "deferred"
        if outcome.retryable and not self.policy.exhausted(row.attempts):
            delay = next_delay(self.policy, row.attempts, self.rng)
            asked = (outcome.not_before or 0) - now  # the receiver's Retry-After, if longer
            values.update(b_status="pending", b_next=now + max(delay, asked),
                          b_error=outcome.reason)
            return values, "retried"
        reason = outcome.reason or "failed"
        if outcome.retryable:
            reason += f" (gave up after {row.attempts} attempts)"
        values.update(b_status="dead", b_error=reason)
        return values, "dead"

    # --- the server loop ------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event, wake: asyncio.Event, *, limit: int = 100,
                          idle_ms: int = 30_000, floor_ms: int = 50,
                          error_backoff_ms: int = 1000) -> None:
        """Dispatch until `stop` is set: a full batch is followed at once by the next;
        otherwise sleep until the next row is due, `wake` is set (new rows, a replay) or
        `idle_ms` passes. Never polls faster than every `floor_ms`."""
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    report = await self.run_once(limit)
                    if report.claimed >= limit:
                        await asyncio.sleep(0)
                        continue
                    due = await asyncio.to_thread(self.outbox.next_due_at)
                    delay = idle_ms if due is None else due - self.clock.now_ms()
                except CadenzaError as exc:
                    logger.warning("dispatch failed; next try in %d ms: %s", error_backoff_ms,
                                   exc.message)
                    delay = error_backoff_ms
                await _wait_any((stop, wake), min(idle_ms, max(floor_ms, delay)) / 1000)
        finally:
            await self.channels.close()

    async def close(self) -> None:
        """Close every channel (connection pools)."""
        await self.channels.close()

    # --- dead letters ---------------------------------------------------------------------

    def dead_letters(self, limit: int = 50, cursor: str | None = None) -> Page:
        """Dead rows, newest first."""
        return self.outbox.dead_letters(limit, cursor)

    def inspect(self, outbox_id: int) -> dict[str, Any]:
        """One row with its payload, rendered content and last error."""
        return self.outbox.inspect(outbox_id)

    def replay(self, ids: Iterable[int]) -> ReplayReport:
        """Dead rows back to pending with attempts reset; other rows unchanged (reported)."""
        return self.outbox.replay(ids)


_Accepted = tuple[ClaimedRow, Outcome, "dict[str, Any] | None"]


class _GroupCommit:
    """Records accepted messages in small groups: the first to arrive writes, those arriving
    meanwhile wait and go together in the next write (group commit). Each caller returns
    once its own message is committed, so the group never holds a message whose send has
    already returned.

    A group is written `GROUP_WINDOW_S` after its first message arrived, or as soon as
    `flush_at` messages wait: each waiting message holds one of the dispatcher's
    `concurrency` places, and a group that held them all would leave none for sending."""

    def __init__(self, write: Callable[[Sequence[_Accepted]], None], flush_at: int = 1
                 ) -> None:
        self._write = write
        self._flush_at = max(1, flush_at)
        self._queue: list[tuple[_Accepted, asyncio.Future[bool]]] = []
        self._writing = False
        self._since = 0.0
        """Loop time the oldest waiting message arrived."""
        self._full: asyncio.Future[None] | None = None
        """Resolved when `flush_at` messages wait (the writer stops waiting for more)."""

    async def record(self, row: ClaimedRow, outcome: Outcome,
                     content: dict[str, Any] | None) -> None:
        """Commit one accepted message, with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[bool] = loop.create_future()
        if not self._queue:
            self._since = loop.time()
        self._queue.append(((row, outcome, content), mine))
        full = self._full
        if full is not None and not full.done() and len(self._queue) >= self._flush_at:
            full.set_result(None)
        # `mine` says True when another wrote it, False when this caller writes next.
        if self._writing and await mine:
            return
        self._writing = True
        # Let the sends finishing now join this group (a group handed over after a write
        # has been gathering meanwhile, and waits only for what is left of its window).
        wait = self._since + GROUP_WINDOW_S - loop.time()
        if wait > 0 and len(self._queue) < self._flush_at:
            self._full = loop.create_future()
            timer = loop.call_later(wait, _resolve, self._full)
            try:
                await self._full
            finally:
                timer.cancel()
                self._full = None
        group, self._queue = self._queue, []
        try:
            await asyncio.to_thread(self._write, [item for item, _ in group])
        except BaseException as exc:
            for _, waiter in group:
                if waiter is not mine and not waiter.done():
                    waiter.set_exception(exc)
            raise
        finally:
            self._writing = False
            if self._queue:  # hand over to the first waiting: it writes the next group
                self._writing = True
                self._queue[0][1].set_result(False)
        for _, waiter in group:
            if waiter is not mine and not waiter.done():
                waiter.set_result(True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def load_recipients(conn: Connection, ids: Iterable[int]) -> dict[int, Recipient]:
    """Contacts by the ids outbox rows name, following merges to the surviving contact; one
    statement per merge hop (normally one in all)."""
    columns = (_c.c.id, _c.c.email, _c.c.phone, _c.c.user_id, _c.c.attributes,
               _c.c.timezone, _c.c.locale, _c.c.merged_into)
    found: dict[int, Recipient] = {}
    looking = {i: i for i in ids}  # id named by the row -> id to read now
    for _ in range(MAX_MERGE_HOPS):
        if not looking:
            break
        rows = {row[0]: row for row in conn.execute(
            sa.select(*columns).where(_c.c.id.in_(sorted(set(looking.values()))))).all()}
        following: dict[int, int] = {}
        for named, current in looking.items():
            row = rows.get(current)
            if row is None:
                continue
            if row[7] is not None:
                following[named] = int(row[7])
            else:
                found[named] = Recipient(int(row[0]), row[1], row[2], row[3], row[4] or {},
                                         row[5], row[6])
        looking = following
    return found


async def _wait_any(events: Sequence[asyncio.Event], timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def dispatcher_from_settings(store: Store, clock: Clock, settings: Any) -> Dispatcher:
    """A live dispatcher: the channels configured by the settings (`smtp_*`, `email_*`,
    `webhook_*`, and the settings each channel reads itself), the default retry policy."""
    from cadenza.channels import (
        ChannelDeps,
        ChannelRegistry,
        SmtpOptions,
        TemplateService,
        WebhookOptions,
    )
    from cadenza.errors import ConfigError

    try:
        smtp = SmtpOptions.from_settings(settings)
    except ValueError as exc:
        raise ConfigError("CADENZA_SMTP_*", str(exc)) from None
    try:
        webhook = WebhookOptions.from_settings(settings)
    except ValueError as exc:
        raise ConfigError("CADENZA_WEBHOOK_*", str(exc)) from None
    from cadenza.channels.tracking import link_builder_from_settings

    channels = ChannelRegistry.build(ChannelDeps(store, clock, smtp=smtp, webhook=webhook,
                                                 settings=settings))
    return Dispatcher(store, clock, channels, TemplateService.from_settings(store, clock,
                                                                            settings),
                      RetryPolicy(), random.Random(),
                      links=link_builder_from_settings(settings))
