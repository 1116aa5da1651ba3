"""Checking a definition's shape with the format models, every problem at once.

Pydantic reports every shape error of the file; this module turns them into `Problem`s that
name the step and the field in the writer's terms, then validates each section that had no
error on its own, so that the later rules (targets, reachability, durations, conditions)
still run over everything that can be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from cadenza.journeys import format as fmt
from cadenza.journeys.errors import Problem

_STEP = TypeAdapter(fmt.StepDef)
_TRIGGER = TypeAdapter(fmt.Trigger)
_RE_ENTRY = TypeAdapter(fmt.ReEntryPolicy)
_EXIT = TypeAdapter(fmt.ExitCriterion)
_GOAL = TypeAdapter(fmt.GoalDef)
_ALL_STEP_KEYS = sorted({key for model in fmt.STEP_MODELS.values() for key in model.model_fields})
_ALL_TRIGGER_KEYS = ("event", "attribute", "to", "where", "date", "api", "schedule",
                     "segment", "on")
_STEP_EXAMPLE = "{id: welcome, send: {channel: email, template: welcome}}"
_TRIGGER_EXAMPLE = "{event: signed_up}"


@dataclass
class Parsed:
    """What could be read of a definition: the whole file when it is valid, otherwise the
    sections and steps that are valid on their own."""

    key: str | None
    file: fmt.JourneyFile | None
    problems: list[Problem] = field(default_factory=list)
    triggers: list[tuple[str, Any]] = field(default_factory=list)
    """(path, trigger model) of every readable entry trigger."""
    re_entry: Any = "never"
    exits: list[tuple[str, fmt.ExitCriterion]] = field(default_factory=list)
    goals: list[tuple[str, fmt.GoalDef]] = field(default_factory=list)
    steps: list[Any | None] = field(default_factory=list)
    """One per step in the file: its model, or None when the step itself is broken."""
    raw_ids: list[str | None] = field(default_factory=list)
    """Each step's id as written, when it is a valid id (None otherwise)."""
    name: str | None = None
    allow_multiple: bool = False

    @property
    def complete(self) -> bool:
        """Every step could be read."""
        return all(step is not None for step in self.steps)


def parse(definition: Any) -> Parsed:
    """Check `definition` against the format; collect every shape problem."""
    if not isinstance(definition, Mapping):
        return Parsed(None, None, [Problem(None, "", "a journey definition must be a mapping "
                                                     "with journey, entry and steps")])
    raw = dict(definition)
    key = raw.get("journey") if isinstance(raw.get("journey"), str) else None
    parsed = Parsed(key, None, raw_ids=[_valid_id(s) for s in _as_list(raw.get("steps"))])
    try:
        parsed.file = fmt.JourneyFile.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        for error in errors:
            parsed.problems += _translate(error, raw, parsed.raw_ids)
        _salvage(parsed, raw, errors)
        return parsed
    file = parsed.file
    parsed.name = file.name
    parsed.allow_multiple = file.allow_multiple
    single = isinstance(raw.get("entry"), Mapping)
    parsed.triggers = [("entry" if single else f"entry.{i}", t) for i, t in enumerate(file.entry)]
    parsed.re_entry = file.re_entry
    parsed.exits = [(f"exit_when.{i}", g) for i, g in enumerate(file.exit_when)]
    parsed.goals = [(f"goals.{i}", g) for i, g in enumerate(file.goals)]
    parsed.steps = list(file.steps)
    return parsed


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _valid_id(step: Any) -> str | None:
    if not isinstance(step, Mapping):
        return None
    value = step.get("id")
    try:
        return str(TypeAdapter(fmt.StepId).validate_python(value))
    except ValidationError:
        return None


def _salvage(parsed: Parsed, raw: dict[str, Any], errors: Sequence[ErrorDetails]) -> None:
    """Validate on their own the sections and list items that had no error."""
    locs = [tuple(e["loc"]) for e in errors]

    def ok(*prefix: Any) -> bool:
        # Broken: an error inside it (("steps", 3, ...)) or on what holds it (("steps",)).
        return not any(loc[:len(prefix)] == prefix or prefix[:len(loc)] == loc
                       for loc in locs)

    def read(adapter: TypeAdapter[Any], value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError:  # already reported through the whole file's errors
            return None

    name = raw.get("name")
    parsed.name = name if isinstance(name, str) and ok("name") else None
    parsed.allow_multiple = raw.get("allow_multiple") is True
    entry = raw.get("entry")
    items = [entry] if isinstance(entry, Mapping) else _as_list(entry)
    single = isinstance(entry, Mapping)
    parsed.triggers = [("entry" if single else f"entry.{i}", trigger)
                       for i, item in enumerate(items)
                       if ok("entry", i) and (trigger := read(_TRIGGER, item)) is not None]
    if "re_entry" in raw and ok("re_entry"):
        parsed.re_entry = read(_RE_ENTRY, raw["re_entry"]) or "never"
    parsed.exits = [(f"exit_when.{i}", goal)
                    for i, item in enumerate(_as_list(raw.get("exit_when")))
                    if ok("exit_when", i) and (goal := read(_EXIT, item)) is not None]
    parsed.goals = [(f"goals.{i}", goal)
                    for i, item in enumerate(_as_list(raw.get("goals")))
                    if ok("goals", i) and (goal := read(_GOAL, item)) is not None]
    parsed.steps = [read(_STEP, step) if ok("steps", i) else None
                    for i, step in enumerate(_as_list(raw.get("steps")))]


# --- error translation -----------------------------------------------------------------------

def _translate(error: ErrorDetails, raw: dict[str, Any],
               ids: list[str | None]) -> list[Problem]:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("#"))]
    kind = error["type"]
    if loc[:1] == ["entry"] and isinstance(raw.get("entry"), Mapping) and loc[1:2] == [0]:
        del loc[1]  # a single trigger was written as a mapping, not a list
    step: str | None = None
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        index = loc[1]
        step = ids[index] if index < len(ids) else None
        rest = loc[2:]
        if kind in ("union_tag_not_found", "union_tag_invalid") and not rest:
            raw_step = _as_list(raw.get("steps"))[index]
            return _kind_problems(raw_step, step, f"steps.{index}", fmt.STEP_KINDS,
                                  _ALL_STEP_KEYS, "step", _STEP_EXAMPLE)
        path = _dotted(rest) if step is not None else _dotted(loc)
        return [Problem(step, path, _reason(error, loc))]
    if kind in ("union_tag_not_found", "union_tag_invalid") and loc[:1] == ["entry"]:
        entry = raw.get("entry")
        item = entry if isinstance(entry, Mapping) else _as_list(entry)[int(loc[1])]
        return _kind_problems(item, None, _dotted(loc), fmt.TRIGGER_KINDS, _ALL_TRIGGER_KEYS,
                              "entry trigger", _TRIGGER_EXAMPLE)
    return [Problem(None, _dotted(loc), _reason(error, loc))]


def _dotted(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _kind_problems(item: Any, step: str | None, path: str, kinds: Sequence[str],
                   known: Sequence[str], what: str, example: str) -> list[Problem]:
    """Problems of a step or trigger whose kind cannot be told."""
    at = "" if step is not None else path

    def problem(field: str, reason: str) -> Problem:
        return Problem(step, ".".join(p for p in (at, field) if p), reason)

    if not isinstance(item, Mapping):
        article = "an" if what[0] in "aeiou" else "a"
        return [problem("", f"{article} {what} must be a mapping such as {example}")]
    present = [kind for kind in kinds if kind in item]
    if len(present) > 1:
        listed = " and ".join(", ".join(present).rsplit(", ", 1))
        if what == "step":
            return [problem("", f"does {listed} at once, but a step does one thing; split "
                                f"it into {len(present)} steps")]
        return [problem("", f"has {listed}, but a trigger is of one kind; write a list of "
                            f"{len(present)} triggers")]
    unknown = [key for key in item if key not in known]
    if unknown:
        return [problem(str(key), f"unknown key {key!r}{fmt.suggest(key, known)}")
                for key in unknown]
    return [problem("", f"says what it does with one of {', '.join(kinds)}, and has none of "
                        f"them (e.g. {example})")]


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string (quote it)",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
}


def _reason(error: ErrorDetails, loc: Sequence[Any]) -> str:
    kind = error["type"]
    last = loc[-1] if loc else ""
    if kind == "missing" and list(loc[-2:]) == ["wait_for", "timeout"]:
        return "is required: a wait_for step needs a timeout (e.g. timeout: 3d), or a " \
               "contact whose event never comes would wait forever"
    if kind in ("missing", "too_short") and list(loc) == ["entry"]:
        return "is missing: a journey needs at least one entry trigger, e.g. " \
               "entry: {event: signed_up}"
    if kind in ("missing", "too_short") and list(loc) == ["steps"]:
        return "is missing: a journey needs at least one step"
    if kind == "missing" and list(loc) == ["journey"]:
        return "is required: the journey's key, e.g. journey: trial-onboarding"
    if kind == "literal_error" and last == "exit":
        return "must be true (exit: true)"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = error["msg"]
    for start in ("Input should", "String should", "List should", "Dictionary should"):
        if message.startswith(start):
            return "must" + message[len(start):]
    return message[:1].lower() + message[1:]
