"""The outbox's operator side: list rows, inspect one, and replay dead letters.

A replay moves a dead row back to pending with its attempts reset, so the dispatcher sends it
again with the same idempotency key. Only dead rows move: replaying a row that is pending,
sending, sent, shadowed or cancelled changes nothing and the report says so, which makes a
replay safe to repeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cadenza.clock import Clock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Page, Store, check_limit, decode_cursor, encode_cursor, schema

STATUSES = ("pending", "sending", "sent", "shadowed", "dead", "cancelled")
MAX_REPLAY = 1000
_o = schema.outbox
_SUMMARY = (_o.c.id, _o.c.idempotency_key, _o.c.contact_id, _o.c.journey_id, _o.c.node,
            _o.c.channel, _o.c.template, _o.c.shadow, _o.c.status, _o.c.attempts,
            _o.c.next_attempt_at, _o.c.last_error, _o.c.provider_ref, _o.c.created_at,
            _o.c.sent_at)


@dataclass
class ReplayReport:
    """What a replay did, per id."""

    replayed: list[int] = field(default_factory=list)
    unchanged: dict[int, str] = field(default_factory=dict)
    """Ids that were not dead, with their status (already pending, sent...)."""
    missing: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"replayed": self.replayed,
                "unchanged": [{"id": k, "status": v} for k, v in self.unchanged.items()],
                "missing": self.missing}


def check_status(status: str | None) -> str | None:
    """An outbox status, or None for all."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed("status", f"{status!r} is not an outbox status; one of "
                               f"{', '.join(STATUSES)}")
    return status


class OutboxService:
    """Reads and operator actions over the outbox."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def find(self, status: str | None = None, *, contact_id: int | None = None,
             cursor: str | None = None, limit: int = 50) -> Page:
        """Rows, newest first, optionally of one status or contact; cursor-paginated."""
        check_status(status)
        check_limit(limit)
        query = sa.select(*_SUMMARY).order_by(_o.c.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(_o.c.status == status)
        if contact_id is not None:
            query = query.where(_o.c.contact_id == contact_id)
        if cursor:
            (before,) = decode_cursor(cursor, 1)
            query = query.where(_o.c.id < before)
        with self.store.read() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items, encode_cursor(items[-1]["id"]) if more else None)

    def dead_letters(self, limit: int = 50, cursor: str | None = None) -> Page:
        """Dead rows, newest first."""
        return self.find("dead", cursor=cursor, limit=limit)

    def inspect(self, outbox_id: int) -> dict[str, Any]:
        """Everything about one row: payload, rendered content, last error."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(_o).where(_o.c.id == outbox_id)).mappings().first()
        if row is None:
            raise NotFound("outbox row", outbox_id)
        return dict(row)

    def counts(self) -> dict[str, int]:
        """Rows per status (every status present, zero when none)."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(_o.c.status, sa.func.count())
                                .group_by(_o.c.status)).all()
        found = {str(status): int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    def replay(self, ids: Iterable[int]) -> ReplayReport:
        """Move dead rows back to pending with attempts reset; leave every other row alone."""
        wanted = sorted(set(ids))
        if len(wanted) > MAX_REPLAY:
            raise ValidationFailed("ids", f"replay at most {MAX_REPLAY} rows at a time, got "
                                   f"{len(wanted)}")
        report = ReplayReport()
        if not wanted:
            return report
        now = self.clock.now_ms()

        def work(conn: sa.Connection) -> None:
            moved = set(conn.execute(
                sa.update(_o).where(_o.c.id.in_(wanted), _o.c.status == "dead")
                .values(status="pending", attempts=0, next_attempt_at=now, claimed_until=None)
                .returning(_o.c.id)).scalars())
            others = dict(conn.execute(sa.select(_o.c.id, _o.c.status)
                                       .where(_o.c.id.in_(wanted))).all())
            report.replayed = sorted(moved)
            report.unchanged = {i: str(others[i]) for i in wanted
                                if i in others and i not in moved}
            report.missing = [i for i in wanted if i not in others]

        self.store.retry(work)
        return report

    def next_due_at(self) -> int | None:
        """When the earliest pending (or claimed) row becomes due, or None when none waits."""
        with self.store.read() as conn:
            value = conn.execute(sa.select(sa.func.min(_o.c.next_attempt_at))
                                 .where(_o.c.status.in_(("pending", "sending")))).scalar()
        return None if value is None else int(value)
