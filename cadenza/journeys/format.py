"""The journey file format as Pydantic models: what a file may say, and its JSON Schema.

These models check the shape (keys, types, patterns). Durations and conditions are kept as
written and parsed by `compile.py` (with the segments domain's parsers), which also checks
the rules that span the file (targets, reachability, loops) and builds the spec.

Every mapping refuses keys it does not know, naming the nearest known one. One key decides
the kind of an entry trigger (event, attribute, date, api, schedule, segment) and of a step
(send, wait, wait_until, wait_for, branch, split, update, tag, emit, enroll, task, exit);
the tags of those unions start with "#" so that error paths can drop them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,127}$"
"""Journey keys: lowercase letters, digits, `-` and `_`, at most 128 characters."""
STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
"""Step ids: letters, digits, `-` and `_`, at most 128 characters."""
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
"""Local times of day, HH:MM on a 24-hour clock."""
END_TARGET = "end"
"""The word that, as a target (goto, on_event, on_timeout), means the end of the journey."""
RESERVED_KEYS = frozenset({"schema"})
"""Journey keys that would collide with API paths."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TRIGGER_KINDS = ("event", "attribute", "date", "api", "schedule", "segment")
STEP_KINDS = ("send", "wait", "wait_until", "wait_for", "branch", "split", "update", "tag",
              "emit", "enroll", "task", "exit")
WAIT_KINDS = frozenset({"wait", "wait_until", "wait_for"})


# --- base: unknown keys are refused with a suggestion ----------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict) or cls.model_config.get("extra") == "allow":
            return handler(data)
        allowed = list(cls.model_fields)
        unknown = [key for key in data if key not in cls.model_fields]
        if not unknown:
            return handler(data)
        errors = [InitErrorDetails(type=PydanticCustomError("unknown_key",
                                                            cls._unknown_reason(key, allowed)),
                                   loc=(str(key),), input=data[key]) for key in unknown]
        try:
            handler({key: value for key, value in data.items() if key in cls.model_fields})
        except ValidationError as exc:
            # Custom error types cannot be re-raised by name; carry type and text over.
            errors += [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]),
                                        loc=e["loc"], input=e["input"]) for e in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)

    @classmethod
    def _unknown_reason(cls, key: object, allowed: list[str]) -> str:
        return f"unknown key {key!r}{suggest(key, allowed)}"


def suggest(word: object, choices: Any, cutoff: float = 0.6) -> str:
    """' (did you mean 'x'?)' for a near miss among `choices`, else ''."""
    if not isinstance(word, str) or len(word) > 256:
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _matches(pattern: str, what: str, example: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise PydanticCustomError("pattern", f"{shown!r} is not {what} (e.g. {example})")
        return value

    return check


def _journey_key(value: str) -> str:
    if value in RESERVED_KEYS:
        raise PydanticCustomError("reserved", f"{value!r} is reserved; pick another key")
    return value


def _step_id(value: str) -> str:
    if value == END_TARGET:
        raise PydanticCustomError("reserved", "'end' is reserved (as a target it means the "
                                  "end of the journey); pick another id")
    return value


JourneyKey = Annotated[
    str,
    AfterValidator(_matches(KEY_PATTERN, "a journey key: lowercase letters, digits, - and _, "
                                         "at most 128", "trial-onboarding")),
    AfterValidator(_journey_key),
    WithJsonSchema({"type": "string", "pattern": KEY_PATTERN}),
]
StepId = Annotated[
    str,
    AfterValidator(_matches(STEP_ID_PATTERN, "a step id: letters, digits, - and _, at most "
                                             "128", "send-welcome")),
    AfterValidator(_step_id),
    WithJsonSchema({"type": "string", "pattern": STEP_ID_PATTERN}),
]
Target = Annotated[
    str,
    AfterValidator(_matches(STEP_ID_PATTERN, "a step id or end", "offer")),
    WithJsonSchema({"type": "string", "pattern": STEP_ID_PATTERN,
                    "description": "A step id, or `end` for the end of the journey."}),
]
LocalTime = Annotated[
    str,
    AfterValidator(_matches(TIME_PATTERN, "a time of day as HH:MM (24-hour clock)", "09:00")),
    WithJsonSchema({"type": "string", "pattern": TIME_PATTERN,
                    "description": "Local time of day, HH:MM."}),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Name = Annotated[str, Field(min_length=1, max_length=128)]
EventName = Annotated[str, Field(min_length=1, max_length=256)]
Duration = Annotated[
    str | int,
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^(\s*[0-9]+\s*(ms|w|d|h|m|s))+$"},
                              {"type": "integer", "minimum": 0}],
                    "description": "A duration such as 30m, 12h, 2d, 1w or 1d12h, or whole "
                                   "milliseconds."}),
]
Offset = Annotated[
    str | int,
    WithJsonSchema({"anyOf": [{"type": "string",
                               "pattern": r"^-?(\s*[0-9]+\s*(ms|w|d|h|m|s))+$"},
                              {"type": "integer"}],
                    "description": "A duration before (-3d) or after (2d) a date."}),
]
ConditionJSON = Annotated[
    Any,
    WithJsonSchema({"type": "object", "description": "A condition such as {attr: plan, eq: "
                    "pro} (see docs/conditions.md)."}),
]
Scalar = str | int | float | bool


def _kind_of(kinds: tuple[str, ...]) -> Any:
    def discriminate(value: Any) -> str | None:
        if isinstance(value, dict):
            present = [kind for kind in kinds if kind in value]
            return f"#{present[0]}" if len(present) == 1 else None
        if isinstance(value, BaseModel):
            return next((f"#{k}" for k in kinds if k in type(value).model_fields), None)
        return None

    return Discriminator(discriminate)


class _OneOrMany:
    """A single mapping or a list of them; validated as a list, described as both."""

    @staticmethod
    def wrap(value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        as_list = handler(schema)
        return {"anyOf": [as_list["items"], as_list]}


# --- entry triggers --------------------------------------------------------------------------

class EventEntry(_Model):
    """Enter when the contact sends this event (a track name, or page/screen)."""

    event: EventName
    where: ConditionJSON | None = None


class AttributeEntry(_Model):
    """Enter when an identify call sets this attribute (to one of `to`, when given)."""

    attribute: Name
    to: Annotated[Any, WithJsonSchema({"anyOf": [{"type": ["string", "number", "boolean"]},
                                                 {"type": "array", "items": {
                                                     "type": ["string", "number",
                                                              "boolean"]}}]})] = None
    where: ConditionJSON | None = None


class DateOptions(_Model):
    """A moment relative to a date attribute, in the contact's time zone."""

    attr: Name
    offset: Offset = 0
    at: LocalTime = "09:00"
    where: ConditionJSON | None = None


class DateEntry(_Model):
    """Enter at `offset` from the date in attribute `attr`, at local time `at`."""

    date: DateOptions


class ApiOptions(_Model):
    """An API entry with a filter."""

    where: ConditionJSON | None = None


class ApiEntry(_Model):
    """Enter when the API (or another journey's enroll step) enrolls the contact."""

    api: Annotated[Annotated[Literal[True], Tag("#flag")] | Annotated[ApiOptions,
                                                                      Tag("#options")],
                   Discriminator(lambda v: "#options" if isinstance(v, dict | ApiOptions)
                                 else "#flag")]


class ScheduleOptions(_Model):
    """A recurring broadcast over the contacts that match `where`."""

    every: Literal["day", "week"]
    on: list[Weekday] = Field(default_factory=list, max_length=7)
    at: LocalTime
    timezone: str = Field("UTC", min_length=1, max_length=64,
                          description="`contact` (each contact's own zone), UTC or an IANA "
                                      "zone name such as Europe/Paris.")
    where: ConditionJSON | None = None


class ScheduleEntry(_Model):
    """Enter every matching contact at each occurrence of the schedule."""

    schedule: ScheduleOptions


class SegmentEntry(_Model):
    """Enter when the contact enters (or leaves) a segment."""

    segment: Name
    on: Literal["enter", "exit"] = "enter"


Trigger = Annotated[
    Annotated[EventEntry, Tag("#event")] | Annotated[AttributeEntry, Tag("#attribute")]
    | Annotated[DateEntry, Tag("#date")] | Annotated[ApiEntry, Tag("#api")]
    | Annotated[ScheduleEntry, Tag("#schedule")] | Annotated[SegmentEntry, Tag("#segment")],
    _kind_of(TRIGGER_KINDS),
]


class Cooldown(_Model):
    """Enter again once this long has passed since the last entry."""

    cooldown: Duration


ReEntryPolicy = Annotated[
    Annotated[Literal["never", "always"], Tag("#policy")] | Annotated[Cooldown, Tag("#cooldown")],
    Discriminator(lambda v: "#cooldown" if isinstance(v, dict | Cooldown) else "#policy"),
]


class ExitCriterion(_Model):
    """An event that takes the contact out of the journey (a conversion by default)."""

    event: EventName
    where: ConditionJSON | None = None
    name: Name | None = Field(None, description="Defaults to the event name.")
    conversion: bool = True


class GoalDef(_Model):
    """An event that records a conversion; the contact stays in the journey."""

    event: EventName
    where: ConditionJSON | None = None
    name: Name | None = Field(None, description="Defaults to the event name.")


# --- steps -----------------------------------------------------------------------------------

_COMMON_STEP_KEYS = ("id", "goto", "end")


class _Step(_Model):
    id: StepId
    goto: Target | None = Field(None, description="The step that follows instead of the next "
                                "one in the list.")
    end: bool = Field(False, description="End the journey after this step.")

    kind: ClassVar[str] = ""

    @classmethod
    def _unknown_reason(cls, key: object, allowed: list[str]) -> str:
        owners = [k for k, model in STEP_MODELS.items() if key in model.model_fields]
        if owners and key not in _COMMON_STEP_KEYS:
            return f"{key!r} belongs to {owners[0]} steps, not {cls.kind} steps"
        everything = sorted({k for m in STEP_MODELS.values() for k in m.model_fields})
        return f"unknown key {key!r}{suggest(key, everything)}"


class SendAction(_Model):
    """Send through a channel. Keys other than channel and template are the message's
    parameters (a webhook's url, an email's best-time hint)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _near_misses(cls, data: Any) -> Any:
        # Extra keys are parameters, so `templte: welcome` would pass silently: refuse keys
        # that look like a misspelt channel or template.
        if isinstance(data, dict):
            for key in data:
                hint = suggest(key, ("channel", "template"), cutoff=0.8)
                if key not in cls.model_fields and hint:
                    raise PydanticCustomError(
                        "unknown_key", f"key {key!r} looks like a misspelling{hint}; other "
                        "keys are the message's parameters")
        return data

    channel: Annotated[str, Field(min_length=1, max_length=32)]
    template: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class SendStep(_Step):
    """Send a message (one outbox row per contact)."""

    kind: ClassVar[str] = "send"
    send: SendAction


class WaitStep(_Step):
    """Wait a fixed duration."""

    kind: ClassVar[str] = "wait"
    wait: Duration


class WaitUntilOptions(_Model):
    """The next local `at` (on one of the weekdays `on`), or `offset` from the date in
    attribute `attr` at local `at`."""

    at: LocalTime = "09:00"
    on: list[Weekday] = Field(default_factory=list, max_length=7)
    attr: Name | None = None
    offset: Offset | None = None


class WaitUntilStep(_Step):
    """Wait until a local time of day, or a moment relative to a date attribute."""

    kind: ClassVar[str] = "wait_until"
    wait_until: WaitUntilOptions


class WaitForOptions(_Model):
    """The event awaited and for how long."""

    event: EventName
    timeout: Duration
    match: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=16,
        description="Entry-event properties the awaited event must repeat (order_id).")
    where: ConditionJSON | None = None


class WaitForStep(_Step):
    """Wait for an event, at most `timeout`."""

    kind: ClassVar[str] = "wait_for"
    wait_for: WaitForOptions
    on_event: Target | None = Field(None, description="Where the event leads (default: the "
                                    "next step).")
    on_timeout: Target | None = Field(None, description="Where the timeout leads (default: "
                                      "the next step).")


class BranchArmDef(_Model):
    """One arm: taken when `when` holds; an arm without `when` is the else."""

    when: ConditionJSON | None = None
    goto: Target


class BranchStep(_Step):
    """The first arm whose condition holds decides; none holding means the next step."""

    kind: ClassVar[str] = "branch"
    branch: list[BranchArmDef] = Field(min_length=1, max_length=100)


class SplitVariantDef(_Model):
    """One variant of a random split."""

    name: Name
    weight: int = Field(gt=0, le=1_000_000)
    goto: Target | None = Field(None, description="Default: the step after the split.")


class SplitStep(_Step):
    """Pick a variant by a stable hash of the contact."""

    kind: ClassVar[str] = "split"
    split: list[SplitVariantDef] = Field(min_length=1, max_length=100)


class UpdateStep(_Step):
    """Set attributes on the contact."""

    kind: ClassVar[str] = "update"
    update: dict[Annotated[str, Field(min_length=1, max_length=128)], Any] = Field(
        min_length=1, max_length=200)


class TagAction(_Model):
    """Tags to add and to remove."""

    add: list[Name] = Field(default_factory=list, max_length=100)
    remove: list[Name] = Field(default_factory=list, max_length=100)


class TagStep(_Step):
    """Add and remove tags."""

    kind: ClassVar[str] = "tag"
    tag: TagAction


class EmitAction(_Model):
    """An event recorded for the contact."""

    event: EventName
    properties: dict[str, Any] = Field(default_factory=dict)


class EmitStep(_Step):
    """Record an event (it may trigger other journeys and goals)."""

    kind: ClassVar[str] = "emit"
    emit: EmitAction


class EnrollAction(_Model):
    """The journey to enroll into."""

    journey: JourneyKey


class EnrollStep(_Step):
    """Enroll the contact into another journey."""

    kind: ClassVar[str] = "enroll"
    enroll: EnrollAction


class TaskAction(_Model):
    """A task for a person."""

    title: Annotated[str, Field(min_length=1, max_length=512,
                                description="A template: Call {{ contact.email }}.")]
    queue: Name = "default"
    due: Duration | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TaskStep(_Step):
    """Create a task for a human."""

    kind: ClassVar[str] = "task"
    task: TaskAction


class ExitStep(_Step):
    """End the journey here."""

    kind: ClassVar[str] = "exit"
    exit: Literal[True]


STEP_MODELS: dict[str, type[_Step]] = {
    "send": SendStep, "wait": WaitStep, "wait_until": WaitUntilStep,
    "wait_for": WaitForStep, "branch": BranchStep, "split": SplitStep,
    "update": UpdateStep, "tag": TagStep, "emit": EmitStep, "enroll": EnrollStep,
    "task": TaskStep, "exit": ExitStep,
}

StepDef = Annotated[
    Annotated[SendStep, Tag("#send")] | Annotated[WaitStep, Tag("#wait")]
    | Annotated[WaitUntilStep, Tag("#wait_until")] | Annotated[WaitForStep, Tag("#wait_for")]
    | Annotated[BranchStep, Tag("#branch")] | Annotated[SplitStep, Tag("#split")]
    | Annotated[UpdateStep, Tag("#update")] | Annotated[TagStep, Tag("#tag")]
    | Annotated[EmitStep, Tag("#emit")] | Annotated[EnrollStep, Tag("#enroll")]
    | Annotated[TaskStep, Tag("#task")] | Annotated[ExitStep, Tag("#exit")],
    _kind_of(STEP_KINDS),
]


# --- the file --------------------------------------------------------------------------------

class JourneyFile(_Model):
    """A Cadenza journey: who enters, what happens to them, and what takes them out."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              title="Cadenza journey")

    journey: JourneyKey = Field(description="The journey's key (its slug).")
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="Display name; defaults to the key.")
    entry: Annotated[list[Trigger], BeforeValidator(_OneOrMany.wrap), _OneOrMany(),
                     Field(min_length=1, max_length=50)] = Field(
        description="One entry trigger, or a list of them.")
    re_entry: ReEntryPolicy = Field("never", description="never, always, or {cooldown: 30d}.")
    allow_multiple: bool = Field(False, description="Allow more than one active enrollment "
                                 "per contact.")
    exit_when: list[ExitCriterion] = Field(default_factory=list, max_length=50)
    goals: list[GoalDef] = Field(default_factory=list, max_length=50)
    steps: list[StepDef] = Field(min_length=1, max_length=1000,
                                 description="The first step is where entries start.")


def journey_schema() -> dict[str, Any]:
    """The JSON Schema of journey files (docs/journey.schema.json)."""
    schema = JourneyFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """`journey_schema()` as the text committed in docs/journey.schema.json."""
    return json.dumps(journey_schema(), indent=2, ensure_ascii=False) + "\n"
