"""A journey version as the engine sees it: an immutable, validated spec.

The journey file (YAML or JSON, see `format.py`) is parsed and checked into these frozen
dataclasses; the engine only ever reads them. Spec apart from run: an enrollment row is the
mutable run, these never change once a version is published.

Durations are milliseconds; local times are (hour, minute) in the contact's time zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cadenza.segments import Condition

END = "$end"
"""The pseudo-step a path reaches when it runs off the last step or says `end: true`."""

EXIT = "$exit"
"""The pseudo-step an enrollment reaches when a goal or exit criterion takes it out."""


# --- entry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventTrigger:
    """Enter when a contact sends `event` (a track name, or `page`/`screen`)."""

    event: str
    where: Condition | None = None
    """Filter on the entry event's properties (and the contact), checked when it arrives."""


@dataclass(frozen=True)
class AttributeTrigger:
    """Enter when an identify call sets attribute `attr` (optionally to one of `values`)."""

    attr: str
    values: tuple[Any, ...] | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class DateTrigger:
    """Enter at `offset_ms` from the date in attribute `attr`, at local `at` time."""

    attr: str
    offset_ms: int
    at: tuple[int, int] = (9, 0)
    where: Condition | None = None


@dataclass(frozen=True)
class ApiTrigger:
    """Enter when the API (or another journey's `enroll` step) enrolls a contact."""

    where: Condition | None = None


@dataclass(frozen=True)
class ScheduleTrigger:
    """A broadcast: at each occurrence, enter every contact that matches `where`.

    `every` is day or week; `weekdays` (0 = Monday) narrows a weekly schedule; `at` is the
    time of day in `timezone` (an IANA name, or "contact" for each contact's own zone)."""

    every: Literal["day", "week"]
    at: tuple[int, int]
    weekdays: tuple[int, ...] = ()
    timezone: str = "UTC"
    where: Condition | None = None


@dataclass(frozen=True)
class SegmentTrigger:
    """Enter when a contact enters (or exits) segment `segment`. The segments domain calls
    the engine's hook; until it does, such a journey simply gets no entries."""

    segment: str
    on: Literal["enter", "exit"] = "enter"


Trigger = EventTrigger | AttributeTrigger | DateTrigger | ApiTrigger | ScheduleTrigger | \
    SegmentTrigger


@dataclass(frozen=True)
class ReEntry:
    """Whether a contact who has been through the journey may enter again."""

    policy: Literal["never", "cooldown", "always"] = "never"
    cooldown_ms: int = 0
    """With policy "cooldown": the time since the last entry before another is allowed."""


@dataclass(frozen=True)
class Goal:
    """Checked on every event of an enrolled contact: `event` (filtered by `where`) records a
    conversion named `name` when `conversion`, and takes the contact out when `exit`."""

    name: str
    event: str
    where: Condition | None = None
    conversion: bool = True
    exit: bool = True


# --- steps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """What every step has: its id and the step that follows (END when none)."""

    id: str
    next: str = END


@dataclass(frozen=True)
class SendStep(Step):
    """Write an outbox row for `channel` with `template` and `params`."""

    channel: str = ""
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitStep(Step):
    """Wait a fixed duration."""

    duration_ms: int = 0


@dataclass(frozen=True)
class WaitUntilStep(Step):
    """Wait until a local time: the next `at` on one of `weekdays` (0 = Monday; empty means
    any day), or `offset_ms` from the date in attribute `attr` at local `at`. Computed in
    the contact's time zone (UTC when unknown), DST-correct; never earlier than now."""

    at: tuple[int, int] = (9, 0)
    weekdays: tuple[int, ...] = ()
    attr: str | None = None
    offset_ms: int = 0


@dataclass(frozen=True)
class WaitForStep(Step):
    """Wait for `event` (filtered by `where`) for at most `timeout_ms`; `next` follows the
    event, `on_timeout` the timeout. `match` names entry-event properties the awaited event
    must repeat (the same `order_id`)."""

    event: str = ""
    timeout_ms: int = 0
    on_timeout: str = END
    match: tuple[str, ...] = ()
    where: Condition | None = None


@dataclass(frozen=True)
class BranchArm:
    """One arm of a branch: taken when `when` holds (None: always)."""

    when: Condition | None
    goto: str


@dataclass(frozen=True)
class BranchStep(Step):
    """The first arm whose condition holds decides; no arm holding means `next`."""

    arms: tuple[BranchArm, ...] = ()


@dataclass(frozen=True)
class SplitVariant:
    """One variant of a random split."""

    name: str
    weight: int
    goto: str


@dataclass(frozen=True)
class SplitStep(Step):
    """Pick a variant by a stable hash of (journey, step, contact): the same contact always
    lands in the same variant, and weights hold over the population."""

    variants: tuple[SplitVariant, ...] = ()


@dataclass(frozen=True)
class UpdateStep(Step):
    """Set attributes on the contact (checked against declared fields)."""

    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TagStep(Step):
    """Add and remove tags."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmitStep(Step):
    """Record an event for the contact (it can trigger other journeys and goals)."""

    event: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnrollStep(Step):
    """Enroll the contact into another journey (its entry rules apply)."""

    journey: str = ""


@dataclass(frozen=True)
class TaskStep(Step):
    """Create a task for a human (through the outbox, channel `task`)."""

    title: str = ""
    queue: str = "default"
    due_ms: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExitStep(Step):
    """End the journey here, explicitly."""


@dataclass(frozen=True)
class JourneySpec:
    """A whole journey version."""

    key: str
    name: str
    triggers: tuple[Trigger, ...]
    steps: Mapping[str, Step]
    """Steps by id, in file order (the first is where entries start)."""
    re_entry: ReEntry = ReEntry()
    allow_multiple: bool = False
    """More than one active enrollment per contact (each entry event enters again)."""
    goals: tuple[Goal, ...] = ()

    @property
    def first(self) -> str:
        """The step entries start at."""
        return next(iter(self.steps))

    def step(self, step_id: str) -> Step:
        """The step with `step_id` (KeyError if none)."""
        return self.steps[step_id]
