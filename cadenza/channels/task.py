"""The `task` channel: a task for a human, as a row in `tasks`.

The task's idempotency key is the outbox row's, inserted with ON CONFLICT DO NOTHING: a retry,
a crash between insert and the outbox commit, or a replay never creates a second task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from cadenza.channels.base import (
    ChannelDeps,
    ChannelSpec,
    NoBatchState,
    check_known,
    check_text,
    param_path,
)
from cadenza.channels.models import Message, SendResult
from cadenza.clock import Clock
from cadenza.errors import ValidationFailed
from cadenza.store import Store, dialect_insert, schema

_KNOWN = frozenset({"title", "queue", "due_at", "due_ms", "details"})
MAX_TITLE = 512


def check_params(params: Mapping[str, Any], where: str) -> None:
    """`title` (a template) required; `queue`, `due_at` (epoch milliseconds) or `due_ms` (due
    this long after the task is created), and `details` (a JSON object) optional."""
    check_known(params, where, _KNOWN)
    check_text(params, where, "title", required=True, max_length=4000)
    queue = params.get("queue", "default")
    if not isinstance(queue, str) or not 1 <= len(queue) <= 128:
        raise ValidationFailed(param_path(where, "queue"), "must be a name of 1 to 128 "
                               "characters")
    for name in ("due_at", "due_ms"):
        due = params.get(name)
        if due is not None and (isinstance(due, bool) or not isinstance(due, int) or due < 0):
            raise ValidationFailed(param_path(where, name), "must be a number of milliseconds "
                                   "of at least 0")
    if not isinstance(params.get("details", {}), dict):
        raise ValidationFailed(param_path(where, "details"), "must be an object")


class TaskChannel(NoBatchState):
    """Creates tasks in the store (same database: no provider to call)."""

    name = "task"
    text_fields: tuple[str, ...] = ("title",)
    record_each = False
    address_kind: str | None = None

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    async def send(self, message: Message) -> SendResult:
        """Insert the task once; a repeat finds the existing one."""
        return await asyncio.to_thread(self._insert, message)

    def _insert(self, message: Message) -> SendResult:
        params = message.params
        title = str(message.content.get("title") or params.get("title") or "")[:MAX_TITLE]
        now = self.clock.now_ms()
        due_at = params.get("due_at")
        if due_at is None and params.get("due_ms") is not None:
            due_at = now + int(params["due_ms"])
        details = {**dict(params.get("details") or {}), "journey": message.journey,
                   "step": message.step, "outbox_id": message.outbox_id}
        t = schema.tasks
        with self.store.begin() as conn:
            conn.execute(dialect_insert(conn, t).on_conflict_do_nothing(
                index_elements=["idempotency_key"]), {
                    "idempotency_key": message.key, "contact_id": message.contact.id,
                    "journey_id": message.journey_id, "title": title,
                    "queue": params.get("queue") or "default", "status": "open",
                    "details": details, "due_at": due_at,
                    "created_at": now,
            })
            task_id = conn.execute(sa.select(t.c.id)
                                   .where(t.c.idempotency_key == message.key)).scalar_one()
        return SendResult(provider_ref=f"task:{task_id}")


def create(deps: ChannelDeps) -> TaskChannel:
    """A task channel over the store."""
    return TaskChannel(deps.store, deps.clock)


SPEC = ChannelSpec("task", check_params, create)
