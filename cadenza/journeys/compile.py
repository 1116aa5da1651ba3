"""From a journey definition (parsed JSON data) to the engine's `JourneySpec`.

`compile_definition` checks the shape (`structure.py`), then every rule that needs more
than one value at a time — targets that name no step, waits without timeouts, unreachable
steps, loops without a wait, unknown channels, templates and attributes — and collects every
problem before raising `JourneyInvalid`, so a writer fixes a file in one pass.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from cadenza.contacts import FieldSpec
from cadenza.errors import FieldTypeMismatch, ValidationFailed
from cadenza.journeys import format as fmt
from cadenza.journeys import spec as sp
from cadenza.journeys.errors import JourneyInvalid, Problem
from cadenza.journeys.graph import loops_without_wait, unreachable
from cadenza.journeys.structure import Parsed, parse
from cadenza.segments import BUILTIN_ATTRIBUTES, Condition, parse_condition, parse_duration

DEFAULT_CHANNELS = frozenset({"email", "sms", "webhook", "log", "task"})
"""The channel names a journey may send through when none are given."""


def compile_definition(definition: Mapping[str, Any], *,
                       attributes: Collection[str] | None = None,
                       channels: Collection[str] | None = None,
                       templates: Mapping[str, str] | None = None,
                       journeys: Collection[str] | None = None,
                       fields: Mapping[str, FieldSpec] | None = None) -> sp.JourneySpec:
    """The spec of a journey definition, or JourneyInvalid listing every problem.

    Optional checks, each skipped when its argument is None: `attributes` (declared
    attribute names: conditions and date attributes must use them or built-in ones),
    `fields` (declared fields: their names as `attributes`, and update steps' values must
    fit their types), `templates` (template key -> channel: every send's template must
    exist for its channel), `journeys` (keys an enroll step may name). `channels` defaults
    to DEFAULT_CHANNELS."""
    parsed = parse(definition)
    if attributes is None and fields is not None:
        attributes = list(fields)
    builder = _Builder(parsed, attributes, channels, templates, journeys, fields)
    spec = builder.build()
    if builder.problems or spec is None:
        raise JourneyInvalid(parsed.key, _in_file_order(builder.problems, parsed) or [
            Problem(None, "journey", "is required: the journey's key")])
    return spec


def _in_file_order(problems: list[Problem], parsed: Parsed) -> list[Problem]:
    """Header problems first, then each step's in the order of the steps (stable)."""
    first: dict[str, int] = {}
    for index, step_id in enumerate(parsed.raw_ids):
        if step_id is not None:
            first.setdefault(step_id, index)

    def position(problem: Problem) -> int:
        if problem.step is not None:
            return 1 + first.get(problem.step, 0)
        parts = problem.field.split(".")
        if parts[0] == "steps" and len(parts) > 1 and parts[1].isdigit():
            return 1 + int(parts[1])
        return 0

    return sorted(problems, key=position)


class _Builder:
    """Builds spec objects from the parsed models, noting problems as it goes."""

    def __init__(self, parsed: Parsed, attributes: Collection[str] | None,
                 channels: Collection[str] | None, templates: Mapping[str, str] | None,
                 journeys: Collection[str] | None,
                 fields: Mapping[str, FieldSpec] | None) -> None:
        self.parsed = parsed
        self.fields = fields
        self.problems: list[Problem] = list(parsed.problems)
        self.attributes = None if attributes is None else sorted(attributes)
        self.channels = DEFAULT_CHANNELS if channels is None else frozenset(channels)
        self.templates = templates
        self.journeys = journeys
        self.ids = {i for i in parsed.raw_ids if i is not None}
        self.graph_known = parsed.complete
        """False once a target or an id is wrong: the graph is then not what the writer
        meant, and reachability would only report the consequences."""

    def add(self, step: str | None, field: str, reason: str) -> None:
        """Note a problem."""
        self.problems.append(Problem(step, field, reason))

    # --- the whole journey -------------------------------------------------------------------

    def build(self) -> sp.JourneySpec | None:
        """The spec; None when the file is too broken to build one (problems say why)."""
        parsed = self.parsed
        triggers = tuple(t for path, model in parsed.triggers
                         if (t := self.trigger(path, model)) is not None)
        re_entry = self.re_entry(parsed.re_entry)
        goals = self.goals()
        steps = self.steps()
        entry_known = not any(p.step is None and p.field.startswith("entry")
                              for p in self.problems)
        has_entry_data = any(isinstance(t, sp.EventTrigger | sp.ApiTrigger) for t in triggers)
        for step in steps.values():
            if isinstance(step, sp.WaitForStep) and step.match and not has_entry_data \
                    and entry_known:
                self.add(step.id, "wait_for.match", "compares the awaited event with the "
                         "entry event's properties, but no entry trigger is an event or an "
                         "API call; remove match or enter on an event")
        if self.graph_known and steps:
            self.graph(steps)
        if parsed.key is None or self.problems:
            return None
        return sp.JourneySpec(key=parsed.key, name=parsed.name or parsed.key,
                              triggers=triggers, steps=steps, re_entry=re_entry,
                              allow_multiple=parsed.allow_multiple, goals=goals)

    def graph(self, steps: Mapping[str, sp.Step]) -> None:
        first = next(iter(steps))
        for step_id in unreachable(steps):
            self.add(step_id, "", f"cannot be reached from the first step {first!r}: no "
                     "goto, branch, split or earlier step leads here; remove it or point a "
                     "goto at it")
        for loop in loops_without_wait(steps):
            if len(loop) == 1:
                reason = "leads back to itself with no wait"
            else:
                listed = " and ".join(", ".join(repr(s) for s in loop).rsplit(", ", 1))
                reason = f"steps {listed} form a loop with no wait in it"
            self.add(loop[0], "", f"{reason}, so a contact would go round it forever at "
                     "once; add a wait (wait, wait_until or wait_for) inside the loop")

    # --- values ------------------------------------------------------------------------------

    def duration(self, value: Any, step: str | None, field: str, positive: bool = True) -> int:
        try:
            ms = parse_duration(value, field)
        except ValidationFailed as exc:
            self.add(step, exc.field, exc.reason)
            return 0
        if positive and ms == 0:
            self.add(step, field, "must be longer than 0")
        return ms

    def offset(self, value: Any, step: str | None, field: str) -> int:
        """A signed duration: -3d is three days before."""
        if isinstance(value, str) and value.strip().startswith("-"):
            return -self.duration(value.strip()[1:], step, field, positive=False)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return -self.duration(-value, step, field, positive=False)
        return self.duration(value, step, field, positive=False)

    def condition(self, value: Any, step: str | None, field: str) -> Condition | None:
        if value is None:
            return None
        try:
            return parse_condition(value, field, self.attributes)
        except ValidationFailed as exc:
            self.add(step, exc.field, exc.reason)
            return None

    def attribute(self, name: str, step: str | None, field: str) -> None:
        """A date attribute must be declared (when declarations are known)."""
        if self.attributes is None or name in self.attributes or name in BUILTIN_ATTRIBUTES:
            return
        self.add(step, field, f"{name!r} is not a declared field"
                 f"{fmt.suggest(name, self.attributes)}; declare it first "
                 "(cadenza fields declare)")

    def target(self, value: str, step: str, field: str) -> str:
        if value == fmt.END_TARGET:
            return sp.END
        if value not in self.ids:
            self.add(step, field, f"{value!r} names no step{fmt.suggest(value, self.ids)}")
            self.graph_known = False
            return sp.END
        return value

    # --- header ------------------------------------------------------------------------------

    def trigger(self, path: str, model: Any) -> sp.Trigger | None:
        where = functools.partial(self.condition, step=None)
        if isinstance(model, fmt.EventEntry):
            return sp.EventTrigger(model.event, where(model.where, field=f"{path}.where"))
        if isinstance(model, fmt.AttributeEntry):
            return sp.AttributeTrigger(model.attribute, self.values(model.to, f"{path}.to"),
                                       where(model.where, field=f"{path}.where"))
        if isinstance(model, fmt.DateEntry):
            date = model.date
            self.attribute(date.attr, None, f"{path}.date.attr")
            return sp.DateTrigger(date.attr, self.offset(date.offset, None, f"{path}.date.offset"),
                                  _time(date.at), where(date.where, field=f"{path}.date.where"))
        if isinstance(model, fmt.ApiEntry):
            options = model.api
            return sp.ApiTrigger(where(options.where, field=f"{path}.api.where")
                                 if isinstance(options, fmt.ApiOptions) else None)
        if isinstance(model, fmt.ScheduleEntry):
            return self.schedule(model.schedule, f"{path}.schedule")
        assert isinstance(model, fmt.SegmentEntry)
        return sp.SegmentTrigger(model.segment, model.on)

    def values(self, value: Any, field: str) -> tuple[Any, ...] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str | int | float) for v in items):
            self.add(None, field, "must be a value or a list of values (strings, numbers, "
                     "true/false)")
            return None
        return tuple(items)

    def schedule(self, options: fmt.ScheduleOptions, path: str) -> sp.ScheduleTrigger:
        if options.every == "week" and not options.on:
            self.add(None, f"{path}.on", "is required with every: week: the weekdays it "
                     "runs on, e.g. on: [mon]")
        if options.every == "day" and options.on:
            self.add(None, f"{path}.on", "narrows a weekly schedule; for some days of each "
                     "week write every: week")
        zone = options.timezone
        if zone not in ("contact", "UTC") and not _is_zone(zone):
            self.add(None, f"{path}.timezone", f"{zone!r} is not a time zone"
                     f"{fmt.suggest(zone, _zones())}; use contact, UTC or an IANA name such "
                     "as Europe/Paris")
        return sp.ScheduleTrigger(options.every, _time(options.at),
                                  tuple(_weekdays(options.on)), zone,
                                  self.condition(options.where, None, f"{path}.where"))

    def re_entry(self, policy: Any) -> sp.ReEntry:
        if isinstance(policy, fmt.Cooldown):
            return sp.ReEntry("cooldown", self.duration(policy.cooldown, None,
                                                        "re_entry.cooldown"))
        return sp.ReEntry("always" if policy == "always" else "never")

    def goals(self) -> tuple[sp.Goal, ...]:
        goals: list[sp.Goal] = []
        seen: set[str] = set()
        listed = [(p, g, True) for p, g in self.parsed.exits] + \
            [(p, g, False) for p, g in self.parsed.goals]
        for path, model, exits in listed:
            name = model.name or model.event
            if name in seen:
                self.add(None, f"{path}.name" if model.name else path,
                         f"goal name {name!r} is used twice; give each goal its own name "
                         "(name: ...)")
            seen.add(name)
            conversion = model.conversion if isinstance(model, fmt.ExitCriterion) else True
            goals.append(sp.Goal(name, model.event,
                                 self.condition(model.where, None, f"{path}.where"),
                                 conversion=conversion, exit=exits))
        return tuple(goals)

    # --- steps -------------------------------------------------------------------------------

    def steps(self) -> dict[str, sp.Step]:
        parsed = self.parsed
        ids = parsed.raw_ids
        steps: dict[str, sp.Step] = {}
        for index, model in enumerate(parsed.steps):
            step_id = ids[index]
            if step_id is not None and step_id in steps:
                self.add(step_id, "id", f"is used by an earlier step too (step "
                         f"{ids.index(step_id) + 1}); give each step its own id")
                self.graph_known = False
                continue
            if model is None or step_id is None:
                continue
            following = ids[index + 1] if index + 1 < len(ids) else sp.END
            built = self.step(model, following or sp.END)
            if built is not None:
                steps[step_id] = built
        return steps

    def step(self, model: Any, following: str) -> sp.Step | None:
        sid: str = model.id
        if model.goto is not None and model.end:
            self.add(sid, "end", "contradicts goto; keep one of them")
        if isinstance(model, fmt.ExitStep):
            if model.goto is not None or model.end:
                self.add(sid, "goto" if model.goto is not None else "end",
                         "an exit step ends the journey; remove it")
            return sp.ExitStep(sid)
        if model.goto is not None:
            nxt = self.target(model.goto, sid, "goto")
        elif model.end:
            nxt = sp.END
        else:
            nxt = following
        build = getattr(self, f"_{model.kind}")
        step: sp.Step = build(model, sid, nxt)
        return step

    def _send(self, model: fmt.SendStep, sid: str, nxt: str) -> sp.SendStep:
        send = model.send
        self.channel(send.channel, sid, "send.channel")
        if send.template is not None and self.templates is not None:
            owner = self.templates.get(send.template)
            if owner is None:
                same = [k for k, c in self.templates.items() if c == send.channel]
                self.add(sid, "send.template", f"{send.template!r} names no template"
                         f"{fmt.suggest(send.template, same)}; create it first")
            elif owner != send.channel:
                self.add(sid, "send.template", f"{send.template!r} is a {owner} template, "
                         f"not {send.channel}")
        return sp.SendStep(sid, nxt, channel=send.channel, template=send.template,
                           params=dict(send.model_extra or {}))

    def channel(self, name: str, sid: str, field: str) -> None:
        if name not in self.channels:
            self.add(sid, field, f"{name!r} is not a channel{fmt.suggest(name, self.channels)}"
                     f"; channels: {', '.join(sorted(self.channels))}")

    def _wait(self, model: fmt.WaitStep, sid: str, nxt: str) -> sp.WaitStep:
        return sp.WaitStep(sid, nxt, duration_ms=self.duration(model.wait, sid, "wait"))

    def _wait_until(self, model: fmt.WaitUntilStep, sid: str, nxt: str) -> sp.WaitUntilStep:
        options = model.wait_until
        if options.attr is not None:
            self.attribute(options.attr, sid, "wait_until.attr")
            if options.on:
                self.add(sid, "wait_until.on", "does not combine with attr: wait for a "
                         "weekday and time, or for a date attribute")
        elif options.offset is not None:
            self.add(sid, "wait_until.offset", "needs attr, the date attribute it counts from")
        offset = 0 if options.offset is None else \
            self.offset(options.offset, sid, "wait_until.offset")
        return sp.WaitUntilStep(sid, nxt, at=_time(options.at),
                                weekdays=tuple(_weekdays(options.on)), attr=options.attr,
                                offset_ms=offset)

    def _wait_for(self, model: fmt.WaitForStep, sid: str, nxt: str) -> sp.WaitForStep:
        options = model.wait_for
        on_event = nxt if model.on_event is None else self.target(model.on_event, sid,
                                                                  "on_event")
        on_timeout = nxt if model.on_timeout is None else self.target(model.on_timeout, sid,
                                                                      "on_timeout")
        return sp.WaitForStep(sid, on_event, event=options.event,
                              timeout_ms=self.duration(options.timeout, sid, "wait_for.timeout"),
                              on_timeout=on_timeout, match=tuple(options.match),
                              where=self.condition(options.where, sid, "wait_for.where"))

    def _branch(self, model: fmt.BranchStep, sid: str, nxt: str) -> sp.BranchStep:
        else_at = next((i for i, arm in enumerate(model.branch) if arm.when is None), None)
        if else_at is not None and else_at < len(model.branch) - 1:
            self.add(sid, f"branch.{else_at + 1}", "comes after the arm without when (the "
                     "else), so it is never taken; move the else arm last")
        arms = []
        for i, arm in enumerate(model.branch):
            arms.append(sp.BranchArm(self.condition(arm.when, sid, f"branch.{i}.when"),
                                     self.target(arm.goto, sid, f"branch.{i}.goto")))
        return sp.BranchStep(sid, nxt, arms=tuple(arms))

    def _split(self, model: fmt.SplitStep, sid: str, nxt: str) -> sp.SplitStep:
        variants = []
        seen: set[str] = set()
        for i, variant in enumerate(model.split):
            if variant.name in seen:
                self.add(sid, f"split.{i}.name", f"{variant.name!r} is used twice; give each "
                         "variant its own name")
            seen.add(variant.name)
            goto = nxt if variant.goto is None else self.target(variant.goto, sid,
                                                                f"split.{i}.goto")
            variants.append(sp.SplitVariant(variant.name, variant.weight, goto))
        return sp.SplitStep(sid, nxt, variants=tuple(variants))

    def _update(self, model: fmt.UpdateStep, sid: str, nxt: str) -> sp.UpdateStep:
        # Checked against declared types, but kept as written: the spec must not depend on
        # the declarations of the day (the write coerces, as every attribute write does).
        for name, value in model.update.items():
            declared = None if self.fields is None else self.fields.get(name)
            if declared is not None:
                try:
                    declared.coerce(value, f"update.{name}")
                except FieldTypeMismatch as exc:
                    self.add(sid, exc.field, exc.reason)
        return sp.UpdateStep(sid, nxt, attributes=dict(model.update))

    def _tag(self, model: fmt.TagStep, sid: str, nxt: str) -> sp.TagStep:
        tags = model.tag
        if not tags.add and not tags.remove:
            self.add(sid, "tag", "adds and removes nothing; list tags under add or remove")
        both = sorted(set(tags.add) & set(tags.remove))
        if both:
            self.add(sid, "tag", f"adds and removes {', '.join(map(repr, both))}; keep one")
        return sp.TagStep(sid, nxt, add=tuple(tags.add), remove=tuple(tags.remove))

    def _emit(self, model: fmt.EmitStep, sid: str, nxt: str) -> sp.EmitStep:
        return sp.EmitStep(sid, nxt, event=model.emit.event,
                           properties=dict(model.emit.properties))

    def _enroll(self, model: fmt.EnrollStep, sid: str, nxt: str) -> sp.EnrollStep:
        key = model.enroll.journey
        if self.journeys is not None and key not in self.journeys \
                and key != self.parsed.key:
            self.add(sid, "enroll.journey", f"{key!r} names no journey"
                     f"{fmt.suggest(key, self.journeys)}")
        return sp.EnrollStep(sid, nxt, journey=key)

    def _task(self, model: fmt.TaskStep, sid: str, nxt: str) -> sp.TaskStep:
        task = model.task
        if "task" not in self.channels:
            self.add(sid, "task", "task steps need the task channel, which is not available")
        try:
            _JINJA.parse(task.title)
        except jinja2.TemplateSyntaxError as exc:
            self.add(sid, "task.title", f"is not a valid template: {exc.message}")
        due = None if task.due is None else self.duration(task.due, sid, "task.due")
        return sp.TaskStep(sid, nxt, title=task.title, queue=task.queue, due_ms=due,
                           details=dict(task.details))


_JINJA = SandboxedEnvironment()


def _time(text: str) -> tuple[int, int]:
    hours, minutes = text.split(":")
    return int(hours), int(minutes)


def _weekdays(names: Sequence[str]) -> list[int]:
    return sorted({fmt.WEEKDAYS.index(name) for name in names})


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
