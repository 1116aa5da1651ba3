"""Step kinds: each runs one step over a whole group of runs at once.

A kind has `enter` (runs arriving at the step) and, for waits, `resume` (runs whose wait is
over). It moves every run it is given, through `Effects.move` (to another step, the end or
the exit) or `Effects.hold` (wait here). The engine owns the loop; kinds own one step's rule.
Adding a step kind: one class here and one line in `KINDS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from cadenza.engine.runs import Effects, Run
from cadenza.engine.timecalc import date_attribute_instant, next_local_time
from cadenza.journeys.spec import (
    EXIT,
    BranchStep,
    EmitStep,
    EnrollStep,
    ExitStep,
    SendStep,
    SplitStep,
    Step,
    TagStep,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
)
from cadenza.segments import Condition, Facts, Needs
from cadenza.store import dumps


class StepContext(Protocol):
    """What a step kind may use besides its runs."""

    effects: Effects
    now: int

    def facts(self, runs: Sequence[Run], needs: Needs) -> dict[int, Facts]:
        """Facts for the runs' contacts (one statement per kind of need), with each run's
        entry context filled in; keyed by run id."""
        ...

    def journey_key(self, journey_id: int) -> str:
        """The key of a journey."""
        ...

    def timezones(self, runs: Sequence[Run]) -> dict[int, str | None]:
        """The time zone of each run's contact, by contact id."""
        ...


class Kind(Protocol):
    """One step kind."""

    def enter(self, step: Any, runs: list[Run], ctx: StepContext) -> None:
        """Run `step` for `runs`, which have just arrived at it."""
        ...

    def resume(self, step: Any, runs: list[Run], ctx: StepContext) -> None:
        """Finish `step` for `runs`, whose wait is over (timer or event)."""
        ...


class _Instant:
    """A step that does its work and moves on; it never waits."""

    def resume(self, step: Any, runs: list[Run], ctx: StepContext) -> None:
        # Only reachable after a migration put a run "in" an instant step: run it afresh.
        self.enter(step, runs, ctx)

    def enter(self, step: Any, runs: list[Run], ctx: StepContext) -> None:
        raise NotImplementedError


def payload_json(run: Run, tail: str) -> str:
    """An outbox payload: the run's entry context (serialised once per run) and `tail`, the
    serialised rest shared by the whole group (params, journey, step) without its `{`."""
    if run.entry_json is None:
        run.entry_json = dumps(run.context.get("entry", {}))
    return '{"entry":' + run.entry_json + "," + tail


def _tail(step: Step, params: dict[str, Any], journey: str) -> str:
    return dumps({"params": params, "journey": journey, "step": step.id})[1:]


class SendKind(_Instant):
    """An outbox row per run, keyed (enrollment, step, seq): written once, whatever retries."""

    def enter(self, step: SendStep, runs: list[Run], ctx: StepContext) -> None:
        effects = ctx.effects
        now = effects.now
        params = dict(step.params)
        tails: dict[int, str] = {}
        outbox = effects.outbox
        for run in runs:
            tail = tails.get(run.journey_id)
            if tail is None:
                tail = tails[run.journey_id] = _tail(step, params,
                                                     ctx.journey_key(run.journey_id))
            outbox.append((
                f"{run.id}:{step.id}:{run.seq}", run.contact_id, run.id, run.journey_id,
                run.version_id, step.id, run.part, run.shadow, step.channel, step.template,
                payload_json(run, tail), now))
            effects.move(run, step.next, "sent", None, True)


class TaskKind(_Instant):
    """A task for a human, delivered through the outbox like any side effect."""

    def enter(self, step: TaskStep, runs: list[Run], ctx: StepContext) -> None:
        effects = ctx.effects
        now = effects.now
        for run in runs:
            params = {"title": step.title, "queue": step.queue, "details": dict(step.details),
                      "due_at": now + step.due_ms if step.due_ms is not None else None}
            tail = _tail(step, params, ctx.journey_key(run.journey_id))
            effects.outbox.append((
                run.key(), run.contact_id, run.id, run.journey_id, run.version_id, step.id,
                run.part, run.shadow, "task", None, payload_json(run, tail), now))
            effects.move(run, step.next, "task", None, True)


class WaitKind:
    """Wait a fixed duration."""

    def enter(self, step: WaitStep, runs: list[Run], ctx: StepContext) -> None:
        wake = ctx.now + step.duration_ms
        for run in runs:
            ctx.effects.hold(run, wake, {"until": wake})

    def resume(self, step: WaitStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            ctx.effects.move(run, step.next, "waited", None, False)


class WaitUntilKind:
    """Wait until a local weekday/time or a date attribute, in the contact's time zone."""

    def enter(self, step: WaitUntilStep, runs: list[Run], ctx: StepContext) -> None:
        zones = ctx.timezones(runs)
        now = ctx.now
        values: dict[int, Facts] = {}
        if step.attr is not None:
            values = ctx.facts(runs, Needs(attributes=True))
        for run in runs:
            tz = zones.get(run.contact_id)
            if step.attr is None:
                wake = next_local_time(now, step.at, step.weekdays, tz)
                ctx.effects.hold(run, wake, {"until": wake, "timezone": tz})
                continue
            value = values[run.id].attributes.get(step.attr)
            at = date_attribute_instant(value, step.offset_ms, step.at, tz)
            if at is None:  # no date to wait for: nothing to wait for
                ctx.effects.move(run, step.next, "no-date", {step.attr: value}, True)
            else:
                wake = max(at, now)
                ctx.effects.hold(run, wake, {"until": wake, "timezone": tz, step.attr: value})

    def resume(self, step: WaitUntilStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            ctx.effects.move(run, step.next, "waited", None, False)


def wait_key(step: WaitForStep, entry: dict[str, Any]) -> str | None:
    """The value(s) of the entry event that the awaited event must repeat, as one string."""
    if not step.match:
        return None
    return orjson.dumps([_dig(entry, name) for name in step.match]).decode()


def event_key(step: WaitForStep, properties: dict[str, Any]) -> str | None:
    """The same string computed from the arriving event's properties."""
    return wait_key(step, properties)


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


class WaitForKind:
    """Wait for an event (keyed to the entry event, filtered) or the timeout."""

    def enter(self, step: WaitForStep, runs: list[Run], ctx: StepContext) -> None:
        wake = ctx.now + step.timeout_ms
        for run in runs:
            key = wait_key(step, run.context.get("entry", {}))
            ctx.effects.hold(run, wake, {"event": step.event, "until": wake, "key": key},
                             wait_event=step.event, wait_key=key)

    def resume(self, step: WaitForStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            event = run.resume_event
            if run.resume == "event" and event is not None:
                ctx.effects.move(run, step.next, "event", {"event_id": event["id"]}, False)
            else:
                ctx.effects.move(run, step.on_timeout, "timeout", None, False)


def _needs(conditions: Sequence[Condition | None]) -> Needs:
    needs = Needs()
    for cond in conditions:
        if cond is not None:
            needs = needs | cond.needs()
    return needs


class BranchKind(_Instant):
    """The first arm whose condition holds; the values each condition saw are kept."""

    def enter(self, step: BranchStep, runs: list[Run], ctx: StepContext) -> None:
        facts = ctx.facts(runs, _needs([arm.when for arm in step.arms]))
        for run in runs:
            seen: dict[str, Any] = {}
            target, arm_no = step.next, -1
            for number, arm in enumerate(step.arms):
                if arm.when is None or arm.when.evaluate(facts[run.id], seen):
                    target, arm_no = arm.goto, number
                    break
            ctx.effects.move(run, target, f"arm:{arm_no}" if arm_no >= 0 else "no-arm",
                             {"seen": seen, "goto": target}, True)


def stable_bucket(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`: the same contact always gets the same one."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SplitKind(_Instant):
    """A variant by a stable hash of (journey, step, contact)."""

    def enter(self, step: SplitStep, runs: list[Run], ctx: StepContext) -> None:
        total = sum(v.weight for v in step.variants)
        for run in runs:
            point = stable_bucket(ctx.journey_key(run.journey_id), step.id,
                                  run.contact_id) * total
            chosen = step.variants[-1]
            for variant in step.variants:
                if point < variant.weight:
                    chosen = variant
                    break
                point -= variant.weight
            ctx.effects.move(run, chosen.goto, f"variant:{chosen.name}",
                             {"variant": chosen.name}, True)


class UpdateKind(_Instant):
    """Set attributes on the contact."""

    def enter(self, step: UpdateStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            if not run.shadow:  # shadow mode decides, it does not change contacts
                ctx.effects.attribute_updates.append((run.contact_id, dict(step.attributes)))
            ctx.effects.move(run, step.next, "updated", None, True)


class TagKind(_Instant):
    """Add and remove tags."""

    def enter(self, step: TagStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            if not run.shadow:
                ctx.effects.tags_add.extend((run.contact_id, t) for t in step.add)
                ctx.effects.tags_remove.extend((run.contact_id, t) for t in step.remove)
            ctx.effects.move(run, step.next, "tagged", None, True)


class EmitKind(_Instant):
    """Record an event for the contact, with a message id fixed by the step's key."""

    def enter(self, step: EmitStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            if not run.shadow:
                ctx.effects.events.append((f"journey:{run.key()}", run.contact_id, step.event,
                                           dict(step.properties)))
            ctx.effects.move(run, step.next, "emitted", None, True)


class EnrollKind(_Instant):
    """Enroll the contact into another journey, whose entry rules decide."""

    def enter(self, step: EnrollStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            if not run.shadow:
                ctx.effects.enroll.append((step.journey, run.contact_id,
                                           {"entry": run.context.get("entry", {}),
                                            "from": ctx.journey_key(run.journey_id)},
                                           f"enroll:{run.key()}"))
            ctx.effects.move(run, step.next, "enrolled", {"journey": step.journey}, True)


class ExitKind(_Instant):
    """End here."""

    def enter(self, step: ExitStep, runs: list[Run], ctx: StepContext) -> None:
        for run in runs:
            ctx.effects.move(run, EXIT, "exit", None, True)


KINDS: dict[type[Step], Kind] = {
    SendStep: SendKind(),
    TaskStep: TaskKind(),
    WaitStep: WaitKind(),
    WaitUntilStep: WaitUntilKind(),
    WaitForStep: WaitForKind(),
    BranchStep: BranchKind(),
    SplitStep: SplitKind(),
    UpdateStep: UpdateKind(),
    TagStep: TagKind(),
    EmitStep: EmitKind(),
    EnrollStep: EnrollKind(),
    ExitStep: ExitKind(),
}

WAIT_KINDS = (WaitStep, WaitUntilStep, WaitForStep)

