"""Predictive lead scoring: the model definition (what to predict, from which features, how
often to retrain) and the scheduled retraining job.

A definition is YAML or JSON, checked by Pydantic at the edge and turned into a frozen
`ModelSpec` inside:

    key: likely-buyer
    name: Likely to buy within 30 days
    outcome: {event: Order Completed, where: {plan: pro}}
    horizon_days: 30
    features:
      - {attr: employees, type: number}
      - {attr: plan, type: enum, values: [free, team, business]}
      - {attr: signup_date, type: date}
      - {count: Logged In, windows: [7, 30, 90]}
      - {days_since: Logged In, cap: 90}
      - {sum: Order Completed, property: total, windows: [90]}
    schedule: {retrain_every_days: 7, rescore_every_hours: 24}

The training, the report and the guard live in `training.py` and `predictive_service.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cadenza.errors import ValidationFailed

log = logging.getLogger("cadenza.leads")

MAX_HORIZON_DAYS = 365
MAX_WINDOW_DAYS = 365
MAX_FEATURES = 100
MAX_ENUM_VALUES = 50
LEARNED_ENUM_VALUES = 20
"""An enum without declared values one-hot encodes its most frequent training values."""
DEFAULT_DAYS_SINCE_CAP = 90
ATTR_TYPES = ("number", "boolean", "enum", "date")
_KINDS = ("attr", "count", "days_since", "sum")


@dataclass(frozen=True)
class Feature:
    """One declared feature; `columns` says which model inputs it becomes."""

    kind: str
    """attr, count, days_since or sum."""
    name: str
    """The attribute name (attr) or the event name (the others)."""
    type: str = ""
    """For attr: number, boolean, enum or date (age in days)."""
    values: tuple[str, ...] = ()
    """For an enum: the declared values (one column each, plus 'other'); empty: learned."""
    windows: tuple[int, ...] = ()
    """For count and sum: the windows in days, each ending at the snapshot time."""
    prop: str = ""
    """For sum: the numeric event property added up (`property` in the definition)."""
    cap: int = 0
    """For days_since: the look-back in days (and the value when no event was seen)."""

    @property
    def label(self) -> str:
        """A short stable name, the prefix of its columns: `count:Logged In`."""
        if self.kind == "sum":
            return f"sum:{self.name}.{self.prop}"
        return f"{self.kind}:{self.name}"

    @property
    def lookback_days(self) -> int:
        """How far before the snapshot time its events reach (0 for attributes)."""
        if self.kind == "days_since":
            return self.cap
        return max(self.windows, default=0)

    def to_json(self) -> dict[str, Any]:
        """The definition's form of this feature."""
        if self.kind == "attr":
            out: dict[str, Any] = {"attr": self.name, "type": self.type}
            if self.values:
                out["values"] = list(self.values)
            return out
        if self.kind == "count":
            return {"count": self.name, "windows": list(self.windows)}
        if self.kind == "days_since":
            return {"days_since": self.name, "cap": self.cap}
        return {"sum": self.name, "property": self.prop, "windows": list(self.windows)}


@dataclass(frozen=True)
class Outcome:
    """What a conversion is: an event, optionally with property values."""

    event: str
    where: tuple[tuple[str, str | int | float | bool], ...] = ()
    """(dotted property path, value) pairs that must all be equal."""

    def to_json(self) -> dict[str, Any]:
        """The definition's form."""
        out: dict[str, Any] = {"event": self.event}
        if self.where:
            out["where"] = dict(self.where)
        return out


@dataclass(frozen=True)
class Schedule:
    """When the retraining job acts on its own."""

    retrain_every_days: int = 0
    """Train a new candidate this often and promote it through the guard (0: never)."""
    rescore_every_hours: int = 0
    """Rescore every contact with the live version this often (0: only after promotion)."""

    def to_json(self) -> dict[str, Any]:
        """The definition's form."""
        return {"retrain_every_days": self.retrain_every_days,
                "rescore_every_hours": self.rescore_every_hours}


@dataclass(frozen=True)
class ModelSpec:
    """A predictive model definition, validated."""

    key: str
    name: str
    outcome: Outcome
    horizon_days: int
    """Label: the outcome happens within this many days after the snapshot time."""
    features: tuple[Feature, ...]
    schedule: Schedule = Schedule()
    seed: int = 7
    """Seeds the holdout split and the cross-validation folds."""

    @property
    def horizon_ms(self) -> int:
        """The horizon in milliseconds."""
        return self.horizon_days * 86_400_000

    def to_json(self) -> dict[str, Any]:
        """The canonical definition (stored in `score_models.definition`)."""
        return {"key": self.key, "name": self.name, "outcome": self.outcome.to_json(),
                "horizon_days": self.horizon_days,
                "features": [f.to_json() for f in self.features],
                "schedule": self.schedule.to_json(), "seed": self.seed}


# --- the edge: Pydantic models of the document -----------------------------------------------

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _OutcomeIn(_Strict):
    event: str = Field(min_length=1, max_length=256)
    where: dict[str, Scalar] = Field(default_factory=dict, max_length=20)


class _FeatureIn(_Strict):
    attr: str | None = Field(default=None, min_length=1, max_length=128)
    count: str | None = Field(default=None, min_length=1, max_length=256)
    days_since: str | None = Field(default=None, min_length=1, max_length=256)
    sum: str | None = Field(default=None, min_length=1, max_length=256)
    type: Literal["number", "boolean", "enum", "date"] | None = None
    values: list[str] | None = Field(default=None, min_length=1, max_length=MAX_ENUM_VALUES)
    windows: list[int] | None = Field(default=None, min_length=1, max_length=8)
    property: str | None = Field(default=None, min_length=1, max_length=128)
    cap: int | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)

    @model_validator(mode="after")
    def _one_kind(self) -> _FeatureIn:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            shown = " and ".join(kinds) if kinds else "none"
            raise ValueError(f"needs exactly one of attr, count, days_since or sum "
                             f"(found {shown})")
        kind = kinds[0]
        allowed = {"attr": {"type", "values"}, "count": {"windows"},
                   "days_since": {"cap"}, "sum": {"property", "windows"}}[kind]
        for extra in ("type", "values", "windows", "property", "cap"):
            if getattr(self, extra) is not None and extra not in allowed:
                raise ValueError(f"'{extra}' does not apply to a {kind} feature")
        if kind == "attr" and self.type is None:
            raise ValueError("an attr feature needs a type: number, boolean, enum or date")
        if self.values is not None and self.type != "enum":
            raise ValueError("'values' applies to type enum only")
        if kind == "sum" and self.property is None:
            raise ValueError("a sum feature needs the numeric event property to add up, "
                             "e.g. property: total")
        for day in self.windows or ():
            if not 1 <= day <= MAX_WINDOW_DAYS:
                raise ValueError(f"window {day} is outside 1..{MAX_WINDOW_DAYS} days")
        return self


class _ScheduleIn(_Strict):
    retrain_every_days: int = Field(default=0, ge=0, le=365)
    rescore_every_hours: int = Field(default=0, ge=0, le=24 * 30)


class _ModelIn(_Strict):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,127}$")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    outcome: _OutcomeIn
    horizon_days: int
    features: list[_FeatureIn] = Field(min_length=1, max_length=MAX_FEATURES)
    schedule: _ScheduleIn = Field(default_factory=_ScheduleIn)
    seed: int = Field(default=7, ge=0, le=2**31 - 1)


_UNION_TAGS = ("str", "int", "float", "bool")


def _error_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc if not str(part).startswith("function-")]
    if len(parts) > 3 and parts[:2] == ["outcome", "where"] and parts[-1] in _UNION_TAGS:
        parts.pop()  # which member of `Scalar` failed is noise
    return ".".join(parts)


def parse_model(document: Any, key: str | None = None) -> ModelSpec:
    """A `ModelSpec` from a definition document; `key` (from a URL or a command) fills or
    must match the document's. Raises ValidationFailed naming the field."""
    if not isinstance(document, dict):
        raise ValidationFailed("definition", "must be a mapping with key, outcome, "
                               "horizon_days and features; see docs/leads/predictive.md")
    if key is not None:
        if document.get("key", key) != key:
            raise ValidationFailed("key", f"the document says {document['key']!r} but the "
                                   f"request names {key!r}; make them the same")
        document = {**document, "key": key}
    horizon = document.get("horizon_days")
    if isinstance(horizon, int) and not isinstance(horizon, bool) and (
            horizon <= 0 or horizon > MAX_HORIZON_DAYS):
        raise ValidationFailed("horizon_days", f"{horizon} is outside 1..{MAX_HORIZON_DAYS} "
                               "days; the outcome must be predicted within a year")
    try:
        parsed = _ModelIn.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = _error_path(first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        if path.startswith("outcome.where."):
            reason = "must be a string, number or true/false (the property's value)"
        elif first["type"] == "string_pattern_mismatch":
            reason = "must be a slug: lowercase letters, digits, '-' and '_'"
        raise ValidationFailed(path or "definition", reason) from None
    features = tuple(_feature(f) for f in parsed.features)
    labels = [f.label for f in features]
    for index, label in enumerate(labels):
        if labels.index(label) != index:
            raise ValidationFailed(f"features.{index}", f"{label} is declared twice; "
                                   "declare each feature once (list several windows in one)")
    for path, value in parsed.outcome.where.items():
        if not all(part.strip() for part in path.split(".")):
            raise ValidationFailed(f"outcome.where.{path}", "is not a dotted property path "
                                   "such as plan or order.total")
        if isinstance(value, float) and value != value:
            raise ValidationFailed(f"outcome.where.{path}", "NaN matches nothing")
    return ModelSpec(
        key=parsed.key, name=parsed.name or parsed.key,
        outcome=Outcome(parsed.outcome.event, tuple(sorted(parsed.outcome.where.items()))),
        horizon_days=parsed.horizon_days, features=features,
        schedule=Schedule(parsed.schedule.retrain_every_days,
                          parsed.schedule.rescore_every_hours),
        seed=parsed.seed)


def _feature(f: _FeatureIn) -> Feature:
    if f.attr is not None:
        values = tuple(dict.fromkeys(f.values or ()))
        return Feature("attr", f.attr, type=f.type or "", values=values)
    if f.count is not None:
        return Feature("count", f.count, windows=tuple(sorted(set(f.windows or (7, 30, 90)))))
    if f.days_since is not None:
        return Feature("days_since", f.days_since, cap=f.cap or DEFAULT_DAYS_SINCE_CAP)
    assert f.sum is not None
    return Feature("sum", f.sum, prop=f.property or "",
                   windows=tuple(sorted(set(f.windows or (90,)))))


# --- the retraining job ----------------------------------------------------------------------


class _At:
    """A clock stopped at the job's `now`."""

    def __init__(self, now: int) -> None:
        self._now = now

    def now_ms(self) -> int:
        return self._now


class RetrainJob:
    """Retrains the models whose schedule is due, promotes only through the guard, rescores
    what changed; each outcome is a `model_versions` row (live, or refused with its note)."""

    name = "predictive-retrain"

    def __init__(self, interval_ms: int, tolerance: float) -> None:
        self.interval_ms = interval_ms
        self.tolerance = tolerance

    def run(self, store: Any, now: int) -> list[dict[str, Any]]:
        """One round over every predictive model."""
        from cadenza.leads.predictive_service import PredictiveService

        outcomes = PredictiveService(store, _At(now), tolerance=self.tolerance).run_schedule()
        for outcome in outcomes:
            log.info("predictive model %s: %s", outcome["model"], outcome["outcome"])
        return outcomes


def predictive_jobs(settings: Any) -> list[Any]:
    """Scheduled retraining and rescoring (every `model_retrain_check_s`; 0 turns it off)."""
    seconds = int(getattr(settings, "model_retrain_check_s", 3600))
    if seconds <= 0:
        return []
    tolerance = float(getattr(settings, "model_auc_tolerance", 0.005))
    return [RetrainJob(seconds * 1000, tolerance)]
