"""The mutable run: one enrollment while a pass works on it, and what a pass will write.

A pass (a tick over due rows, or a batch of events) loads rows into `Run` objects, moves them
through steps in memory, and collects every row it must write into one `Effects`; the
engine then writes all of it in the pass's single transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from cadenza.journeys.spec import END, EXIT

ACTIVE = ("ready", "waiting")


class Run:
    """One enrollment in memory. `resume` says how a waiting run got here: None (run `node`
    from the start), "timer" (its wait is over) or "event" (its awaited event came)."""

    __slots__ = (
        "_context",
        "_raw_context",
        "active_slot",
        "after_event",
        "cause",
        "contact_id",
        "ended_at",
        "entered_at",
        "entry_json",
        "entry_key",
        "id",
        "journey_id",
        "new",
        "node",
        "old_seq",
        "outcome",
        "part",
        "path",
        "resume",
        "resume_event",
        "seq",
        "shadow",
        "status",
        "version_id",
        "wait_event",
        "wait_key",
        "wake_at",
    )

    def __init__(self, *, id: int, journey_id: int, version_id: int, contact_id: int,
                 part: int, shadow: bool, node: str, status: str, wake_at: int | None,
                 wait_event: str | None, wait_key: str | None, seq: int,
                 context: dict[str, Any] | str | bytes, entered_at: int, active_slot: int | None,
                 entry_key: str | None, new: bool, cause: str) -> None:
        self.id = id
        self.journey_id = journey_id
        self.version_id = version_id
        self.contact_id = contact_id
        self.part = part
        self.shadow = shadow
        self.node = node
        self.status = status
        self.wake_at = wake_at
        self.wait_event = wait_event
        self.wait_key = wait_key
        self.seq = seq
        self.old_seq = seq
        # Parsed only when a step needs it: most steps never look at the entry context.
        self._context: dict[str, Any] | None = None if isinstance(context, str | bytes) \
            else context
        self._raw_context = context if isinstance(context, str | bytes) else None
        self.entered_at = entered_at
        self.ended_at: int | None = None
        self.outcome: str | None = None
        self.active_slot = active_slot
        self.entry_key = entry_key
        self.new = new
        self.resume: str | None = "timer" if status == "waiting" else None
        self.resume_event: dict[str, Any] | None = None
        self.path: list[list[Any]] = []
        self.cause = cause
        self.after_event = 0
        self.entry_json: str | None = None
        """Events with an id at or below this one predate the run (it was born from it)."""

    @property
    def context(self) -> dict[str, Any]:
        """The entry context (the entry event's properties or the API payload, ...)."""
        if self._context is None:
            self._context = orjson.loads(self._raw_context or "{}") or {}
        return self._context

    @property
    def active(self) -> bool:
        """Still in the journey."""
        return self.status in ACTIVE

    def key(self, node: str | None = None) -> str:
        """The idempotency key of the side effect of the current step."""
        return f"{self.id}:{node or self.node}:{self.seq}"


@dataclass
class Effects:
    """Everything a pass writes, gathered while the runs move."""

    now: int
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    entered: Counter[tuple[int, bool, str]] = field(default_factory=Counter)
    departed: Counter[tuple[int, bool, str]] = field(default_factory=Counter)
    edges: Counter[tuple[int, bool, str, str]] = field(default_factory=Counter)
    attribute_updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    tags_add: list[tuple[int, str]] = field(default_factory=list)
    tags_remove: list[tuple[int, str]] = field(default_factory=list)
    events: list[tuple[str, int, str, dict[str, Any]]] = field(default_factory=list)
    """(message id, contact id, name, properties) of events the journeys emit."""
    enroll: list[tuple[str, int, dict[str, Any], str]] = field(default_factory=list)
    """(journey key, contact id, context, entry key) for `enroll` steps."""
    conversions: list[tuple[Run, str, int | None]] = field(default_factory=list)
    steps: int = 0
    """Steps run (entered or resumed) in this pass: the engine's unit of throughput."""

    def move(self, run: Run, target: str, outcome: str, detail: dict[str, Any] | None,
             entering: bool | None) -> None:
        """Record that `run` leaves its step for `target` (a step id, END or EXIT). The step
        counters are kept per group by `Batch.advance`; `entering` is for callers outside it."""
        node = run.node
        if entering is None:
            self.departed[(run.version_id, run.shadow, node)] += 1
            self.edges[(run.version_id, run.shadow, node, target)] += 1
        run.path.append([node, outcome, detail] if detail else [node, outcome])
        run.seq += 1
        if target == END:
            self.finish(run, "completed", "completed")
        elif target == EXIT:
            self.finish(run, "exited", "exited")
        else:
            run.node = target
            run.status = "ready"
            run.wake_at = None
            run.wait_event = None
            run.wait_key = None
            run.resume = None
            run.resume_event = None

    def hold(self, run: Run, wake_at: int | None, detail: dict[str, Any],
             wait_event: str | None = None, wait_key: str | None = None) -> None:
        """Record that `run` now waits in its step."""
        run.path.append([run.node, "wait", detail])
        run.seq += 1
        run.status = "waiting"
        run.wake_at = wake_at
        run.wait_event = wait_event
        run.wait_key = wait_key
        run.resume = None

    def finish(self, run: Run, status: str, outcome: str) -> None:
        """End the run."""
        run.status = status
        run.outcome = outcome
        run.ended_at = self.now
        run.wake_at = None
        run.wait_event = None
        run.wait_key = None
        run.active_slot = None
