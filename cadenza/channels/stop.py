"""The emergency stop: every send held at once, until someone resumes them.

Stopping writes one row (`workspace_flags.sends_stopped`). From then on dispatchers claim no
outbox row (the claim statement itself checks the flag, so every process stops at its next
claim), and the batch already in flight is held by `EmergencyStopInterceptor`, first in the
chain after shadow: its messages are deferred, not failed — no attempt is counted, and they go
out in order once sends resume. Journeys keep running and queue their messages meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.models import Message, Outcome
from cadenza.clock import Clock
from cadenza.errors import ValidationFailed
from cadenza.store import Store, schema

FLAG = "sends_stopped"
RECHECK_MS = 30_000
"""Deferred messages of a stopped batch come due again after this long (then wait for the
claim, which checks the flag)."""
_f = schema.workspace_flags


@dataclass(frozen=True)
class StopState:
    """Who stopped sends, when and why."""

    since: int
    by: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"stopped": True, "since": self.since, "by": self.by, "reason": self.reason}


def stopped_clause() -> sa.ColumnElement[bool]:
    """SQL that holds while sends are stopped (for the dispatcher's claim)."""
    return sa.exists(sa.select(_f.c.name).where(_f.c.name == FLAG))


def sends_stopped(conn: Connection) -> StopState | None:
    """The stop in force, if any."""
    row = conn.execute(sa.select(_f).where(_f.c.name == FLAG)).first()
    if row is None:
        return None
    value = row.value if isinstance(row.value, dict) else {}
    return StopState(row.updated_at, row.updated_by, str(value.get("reason", "")))


def stop_sends(conn: Connection, by: str, reason: str, now: int) -> StopState:
    """Stop every send (idempotent: a second stop keeps the first one's time and reason)."""
    reason = reason.strip()
    if not reason or len(reason) > 500:
        raise ValidationFailed("reason", "say why sends are stopped (1 to 500 characters); "
                                         "it is shown to everyone and kept in the audit trail")
    current = sends_stopped(conn)
    if current is not None:
        return current
    conn.execute(_f.insert().values(name=FLAG, value={"reason": reason}, updated_at=now,
                                    updated_by=by))
    return StopState(now, by, reason)


def resume_sends(conn: Connection) -> StopState | None:
    """Lift the stop; returns the stop that was lifted (None when sends were running)."""
    current = sends_stopped(conn)
    conn.execute(_f.delete().where(_f.c.name == FLAG))
    return current


class EmergencyStopInterceptor:
    """Holds the whole batch while sends are stopped (one read of the flag per batch)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def _read(self) -> StopState | None:
        with self.store.read() as conn:
            return sends_stopped(conn)

    async def intercept(self, messages: Sequence[Message], proceed: Any) -> dict[int, Outcome]:
        """Defer everything when stopped; otherwise pass the batch on."""
        state = await asyncio.to_thread(self._read)
        if state is None:
            result: dict[int, Outcome] = await proceed(messages)
            return result
        held = Outcome.deferred(self.clock.now_ms() + RECHECK_MS,
                                f"sends are stopped: {state.reason}")
        return {m.outbox_id: held for m in messages}


class SendSwitch:
    """Stop and resume sends, each change recorded in the audit trail in its transaction."""

    def __init__(self, store: Store, clock: Clock, audit: Any) -> None:
        self.store = store
        self.clock = clock
        self.audit = audit
        """A `cadenza.governance.AuditService`."""

    def status(self) -> StopState | None:
        """The stop in force, if any."""
        with self.store.read() as conn:
            return sends_stopped(conn)

    def stop(self, actor: str, reason: str) -> StopState:
        """Stop every send now."""
        with self.store.begin() as conn:
            before = sends_stopped(conn)
            state = stop_sends(conn, actor, reason, self.clock.now_ms())
            if before is None:
                self.audit.record(conn, actor, "sends.stop", "sends", "all", {"reason": reason})
            return state

    def resume(self, actor: str) -> StopState | None:
        """Let sends go again; returns the stop that was lifted."""
        with self.store.begin() as conn:
            lifted = resume_sends(conn)
            if lifted is not None:
                self.audit.record(conn, actor, "sends.resume", "sends", "all",
                                  {"stopped_since": lifted.since, "stopped_by": lifted.by})
            return lifted
