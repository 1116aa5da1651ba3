"""Rule-based score models: their document form parsed and checked into frozen specs.

A model is a YAML/JSON document (docs/leads/scoring.md has the guide):

    key: engagement                 # a slug, unique in the workspace
    name: Engagement
    kind: rules                     # rules, or matrix (two graded models combined)
    half_life: 14d                  # event points lose half their value every 14 days
    floor: 0                        # optional bounds of the score
    ceiling: 100
    cap: {points: 60, per: 1d}      # optional: event points per day, all rules together
    rules:
      - id: pricing
        event: Pricing Viewed       # points per occurrence of the event ...
        where: {plan: pro}          # ... whose properties equal these (a list: any of)
        points: 5
        cap: {points: 20, per: 1d}  # at most 20 points from this rule per day
      - id: decision-maker
        when: {attr: job_title, in: [CEO, CTO]}   # points while the condition holds
        points: 15
    grades: [{grade: A, min: 60}, {grade: B, min: 30}, {grade: C}]
    thresholds: [50]                # emit "Score Threshold Crossed" events
    grade_events: true              # emit "Grade Changed" events

Every mistake raises `ValidationFailed` naming the dotted path of the offending key and how
to fix it. Overlapping rules are refused here too (`cadenza.leads.rules`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cadenza.errors import ValidationFailed
from cadenza.segments import Condition, parse_condition, parse_duration
from cadenza.segments.durations import DAY, WEEK, format_duration

KINDS = ("rules", "matrix")
"""Kinds of model this module defines (helper packages add "predictive")."""
KEY = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
MAX_RULES = 200
MAX_GRADES = 26
MAX_THRESHOLDS = 20
MAX_POINTS = 1_000_000.0
MAX_FILTER_VALUES = 100
PERIOD_ORIGIN_MS = 4 * DAY
"""Periods of caps are counted from Monday 1970-01-05 00:00 UTC, so a `1w` period runs
Monday to Sunday (UTC) and a `1d` period is a UTC day."""

_MODEL_KEYS = ("key", "name", "kind", "description", "half_life", "floor", "ceiling", "cap",
               "rules", "grades", "thresholds", "grade_events")
_MATRIX_KEYS = ("key", "name", "kind", "description", "rows", "columns", "thresholds",
                "grade_events")
_RULE_KEYS = ("id", "description", "event", "where", "when", "points", "cap", "stack")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Cap:
    """At most `points` (in absolute value) per `period_ms` window of time."""

    points: float
    """The most points one period may add (or, for negative rules, remove)."""
    period_ms: int
    """Length of a period; periods start at `PERIOD_ORIGIN_MS` and follow each other."""

    def to_json(self) -> dict[str, Any]:
        return {"points": _number_json(self.points), "per": format_duration(self.period_ms)}


@dataclass(frozen=True)
class EventRule:
    """Points per occurrence of an event whose properties match `where`."""

    id: str
    event: str
    points: float
    where: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()
    """(property path, accepted values) pairs; every pair must match (a value equal to one
    of the accepted values, of the same JSON type)."""
    cap: Cap | None = None
    stack: bool = False
    """Declared on purpose to add to the points of rules it overlaps."""
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"id": self.id, "event": self.event}
        if self.where:
            shape["where"] = {path: (list(values) if len(values) > 1 else values[0])
                              for path, values in self.where}
        shape["points"] = _number_json(self.points)
        if self.cap:
            shape["cap"] = self.cap.to_json()
        if self.stack:
            shape["stack"] = True
        if self.description:
            shape["description"] = self.description
        return shape


@dataclass(frozen=True)
class AttributeRule:
    """Points while a condition of the condition language holds for the contact."""

    id: str
    when: Condition
    points: float
    stack: bool = False
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"id": self.id, "when": self.when.to_json(),
                                 "points": _number_json(self.points)}
        if self.stack:
            shape["stack"] = True
        if self.description:
            shape["description"] = self.description
        return shape


Rule = EventRule | AttributeRule


@dataclass(frozen=True)
class Grade:
    """A band: scores of at least `min` (down to the next band) get `grade`."""

    grade: str
    min: float | None
    """None on the last band only: every lower score."""

    def to_json(self) -> dict[str, Any]:
        return {"grade": self.grade} if self.min is None else {"grade": self.grade,
                                                               "min": _number_json(self.min)}


@dataclass(frozen=True)
class RulesModel:
    """A points model: attribute rules plus decayed, capped event rules."""

    key: str
    name: str
    rules: tuple[Rule, ...]
    half_life_ms: int | None = None
    floor: float | None = None
    ceiling: float | None = None
    cap: Cap | None = None
    grades: tuple[Grade, ...] = ()
    thresholds: tuple[float, ...] = ()
    grade_events: bool = False
    description: str = ""
    kind: str = "rules"

    @property
    def event_rules(self) -> tuple[EventRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, EventRule))

    @property
    def attribute_rules(self) -> tuple[AttributeRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, AttributeRule))

    def grade_of(self, score: float) -> str | None:
        """The band `score` falls in (None below a last band that has a minimum)."""
        return grade_of(self.grades, score)

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"key": self.key, "name": self.name, "kind": "rules"}
        if self.description:
            shape["description"] = self.description
        if self.half_life_ms:
            shape["half_life"] = format_duration(self.half_life_ms)
        if self.floor is not None:
            shape["floor"] = _number_json(self.floor)
        if self.ceiling is not None:
            shape["ceiling"] = _number_json(self.ceiling)
        if self.cap:
            shape["cap"] = self.cap.to_json()
        shape["rules"] = [r.to_json() for r in self.rules]
        if self.grades:
            shape["grades"] = [g.to_json() for g in self.grades]
        _events_json(self, shape)
        return shape


@dataclass(frozen=True)
class MatrixModel:
    """Two graded models combined: the grade is the rows model's grade followed by the
    columns model's (fit A-C x engagement 1-3 gives A1 ... C3)."""

    key: str
    name: str
    rows: str
    columns: str
    thresholds: tuple[float, ...] = ()
    grade_events: bool = False
    description: str = ""
    kind: str = "matrix"
    row_grades: tuple[str, ...] = field(default=(), compare=False)
    """The rows model's grades, best first (filled when the model is loaded)."""
    column_grades: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"key": self.key, "name": self.name, "kind": "matrix"}
        if self.description:
            shape["description"] = self.description
        shape["rows"] = self.rows
        shape["columns"] = self.columns
        _events_json(self, shape)
        return shape


ScoreModel = RulesModel | MatrixModel


def grade_of(grades: Sequence[Grade], score: float) -> str | None:
    """The first band whose minimum `score` reaches."""
    for band in grades:
        if band.min is None or score >= band.min:
            return band.grade
    return None


def _events_json(model: RulesModel | MatrixModel, shape: dict[str, Any]) -> None:
    if model.thresholds:
        shape["thresholds"] = [_number_json(t) for t in model.thresholds]
    if model.grade_events:
        shape["grade_events"] = True


def _number_json(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# --- parsing ---------------------------------------------------------------------------------

def parse_model(document: Any, fields: Mapping[str, str] | None = None,
                company_fields: Mapping[str, str] | None = None) -> ScoreModel:
    """A model from its document. With `fields` and `company_fields` (declared name ->
    type), attribute rules on undeclared names, and operands of the wrong type, are errors
    (as in segments); without them (reading a stored model back) any name is accepted."""
    from cadenza.leads.rules import check_overlaps

    if not isinstance(document, Mapping):
        raise ValidationFailed("model", "must be a mapping with key, name, kind and rules "
                                        "(see docs/leads/scoring.md)")
    key = _key(document.get("key"), "key", "the model")
    kind = document.get("kind", "rules")
    if kind not in KINDS:
        raise ValidationFailed("kind", f"{kind!r} is not a kind of rule model"
                                       f"{_hint(kind, KINDS)}")
    _known(document, "", _MODEL_KEYS if kind == "rules" else _MATRIX_KEYS)
    name = document.get("name", key)
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise ValidationFailed("name", "must be a non-empty string of at most 256 characters")
    description = _description(document.get("description", ""), "description")
    thresholds = _thresholds(document.get("thresholds", []))
    grade_events = _flag(document.get("grade_events", False), "grade_events")
    if kind == "matrix":
        rows = _key(document.get("rows"), "rows", "the model whose grades make the rows")
        columns = _key(document.get("columns"), "columns",
                       "the model whose grades make the columns")
        if rows == columns:
            raise ValidationFailed("columns", "names the same model as rows; a matrix "
                                              "combines two different graded models")
        if key in (rows, columns):
            raise ValidationFailed("rows" if key == rows else "columns",
                                   "names the matrix itself; name two rules models")
        return MatrixModel(key, name, rows, columns, thresholds, grade_events, description)
    rules = _rules(document.get("rules"), fields, company_fields)
    half_life = None
    if document.get("half_life") is not None:
        half_life = parse_duration(document["half_life"], "half_life")
        if half_life <= 0:
            raise ValidationFailed("half_life", "must be longer than 0 (e.g. 14d); leave it "
                                                "out for points that never decay")
    floor = _optional_number(document.get("floor"), "floor")
    ceiling = _optional_number(document.get("ceiling"), "ceiling")
    if floor is not None and ceiling is not None and floor >= ceiling:
        raise ValidationFailed("ceiling", f"{_number_json(ceiling)} must be above the floor "
                                          f"({_number_json(floor)})")
    cap = _cap(document["cap"], "cap") if document.get("cap") is not None else None
    if cap is not None and not any(isinstance(r, EventRule) for r in rules):
        raise ValidationFailed("cap", "caps event points, but the model has no event rule; "
                                      "remove it")
    grades = _grades(document.get("grades", []))
    model = RulesModel(key, name, rules, half_life, floor, ceiling, cap, grades, thresholds,
                       grade_events, description)
    if grade_events and not grades:
        raise ValidationFailed("grade_events", "needs grades: declare grade bands or remove "
                                               "grade_events")
    check_overlaps(model)
    return model


def _hint(word: object, choices: Sequence[str]) -> str:
    if isinstance(word, str):
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return f"; use one of {', '.join(choices)}"


def _at(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _known(value: Mapping[str, Any], where: str, keys: Sequence[str]) -> None:
    for key in value:
        if key not in keys:
            raise ValidationFailed(_at(where, key), f"unknown field {key!r}{_hint(key, keys)}")


def _key(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not KEY.match(value):
        raise ValidationFailed(where, f"must name {what} as a slug: lower-case letters, digits, "
                                      "'-' or '_', starting with a letter (e.g. 'fit'), "
                                      f"not {value!r}")
    return value


def _description(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        raise ValidationFailed(where, "must be a string of at most 2000 characters")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed(where, f"must be true or false, not {value!r}")
    return value


def _number(value: Any, where: str, *, what: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise ValidationFailed(where, f"must be {what}, not {value!r}")
    if abs(value) > MAX_POINTS:
        raise ValidationFailed(where, f"{value!r} is too large; keep points within "
                                      f"±{int(MAX_POINTS)}")
    return float(value)


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _cap(value: Any, where: str) -> Cap:
    if not isinstance(value, Mapping):
        raise ValidationFailed(where, "must be a mapping such as {points: 20, per: 1d}")
    _known(value, where, ("points", "per"))
    if "points" not in value or "per" not in value:
        missing = "points" if "points" not in value else "per"
        raise ValidationFailed(_at(where, missing), "is missing; write a cap as "
                                                    "{points: 20, per: 1d}")
    points = _number(value["points"], _at(where, "points"))
    if points <= 0:
        raise ValidationFailed(_at(where, "points"), f"{_number_json(points)} must be above 0 "
                                                     "(a cap limits how many points a period "
                                                     "adds); remove the cap for no limit")
    period = parse_duration(value["per"], _at(where, "per"))
    if period < 60_000:
        raise ValidationFailed(_at(where, "per"), "must be at least 1m (e.g. 1d or 1w)")
    if period > 53 * WEEK:
        raise ValidationFailed(_at(where, "per"), "must be at most 53w")
    return Cap(points, period)


def _rules(value: Any, fields: Mapping[str, str] | None,
           company_fields: Mapping[str, str] | None) -> tuple[Rule, ...]:
    if not isinstance(value, list) or not value:
        raise ValidationFailed("rules", "must be a non-empty list of rules, each with an id, "
                                        "points and either event or when")
    if len(value) > MAX_RULES:
        raise ValidationFailed("rules", f"has {len(value)} rules; at most {MAX_RULES} are "
                                        "allowed")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        where = f"rules.{i}"
        rule = _rule(item, where, fields, company_fields)
        if rule.id in seen:
            raise ValidationFailed(f"{where}.id", f"{rule.id!r} is already the id of "
                                                  f"rules.{seen[rule.id]}; ids must be unique")
        seen[rule.id] = i
        rules.append(rule)
    return tuple(rules)


def _rule(item: Any, where: str, fields: Mapping[str, str] | None,
          company_fields: Mapping[str, str] | None) -> Rule:
    if not isinstance(item, Mapping):
        raise ValidationFailed(where, "must be a mapping such as {id: pricing, event: "
                                      "Pricing Viewed, points: 5}")
    _known(item, where, _RULE_KEYS)
    rule_id = _key(item.get("id"), _at(where, "id"), "the rule")
    if "points" not in item:
        raise ValidationFailed(where, "needs points (negative points remove them)")
    points = _number(item["points"], _at(where, "points"))
    if points == 0:
        raise ValidationFailed(_at(where, "points"), "is 0; a rule must add or remove points")
    stack = _flag(item.get("stack", False), _at(where, "stack"))
    description = _description(item.get("description", ""), _at(where, "description"))
    has_event, has_when = "event" in item, "when" in item
    if has_event == has_when:
        raise ValidationFailed(where, "needs exactly one of event (points per occurrence) "
                                      "or when (points while a condition holds)")
    if has_when:
        for key in ("where", "cap"):
            if key in item:
                raise ValidationFailed(_at(where, key), "applies to event rules only; an "
                                                        "attribute rule counts once")
        condition = parse_condition(item["when"], _at(where, "when"), fields=fields,
                                    company_fields=company_fields)
        _refuse_kinds(condition.to_json(), _at(where, "when"))
        return AttributeRule(rule_id, condition, points, stack, description)
    event = item["event"]
    if not isinstance(event, str) or not event.strip() or len(event) > 256:
        raise ValidationFailed(_at(where, "event"), "must name an event (a non-empty string "
                                                    "of at most 256 characters)")
    filters = _filters(item.get("where", {}), _at(where, "where"))
    cap = _cap(item["cap"], _at(where, "cap")) if item.get("cap") is not None else None
    return EventRule(rule_id, event, points, filters, cap, stack, description)


_PATH = re.compile(r"^[A-Za-z0-9_\-$@]+(\.[A-Za-z0-9_\-$@]+)*$")


def _filters(value: Any, where: str) -> tuple[tuple[str, tuple[Scalar, ...]], ...]:
    if not isinstance(value, Mapping):
        raise ValidationFailed(where, "must map property paths to values, e.g. "
                                      "{path: /pricing} or {plan: [pro, enterprise]}")
    pairs = []
    for path, wanted in value.items():
        field_where = _at(where, path)
        if not isinstance(path, str) or not _PATH.match(path) or len(path) > 256:
            raise ValidationFailed(field_where, "must be a property path of letters, digits, "
                                                "'_' or '-', dotted for nested values "
                                                "(e.g. order.currency)")
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise ValidationFailed(field_where, f"must list 1 to {MAX_FILTER_VALUES} values")
        for j, one in enumerate(values):
            if not _is_scalar(one):
                at = field_where if not isinstance(wanted, list) else _at(field_where, j)
                raise ValidationFailed(at, f"must be a string, a number or true/false, not "
                                           f"{one!r}")
        pairs.append((path, tuple(dict.fromkeys(values))))
    return tuple(sorted(pairs))


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int)


_NOT_IN_RULES = {"prop": "reads the event being handled; an attribute rule has none "
                          "(score events with an event rule and where: instead)",
                 "event_prop": "reads the event being handled; an attribute rule has none "
                               "(score events with an event rule and where: instead)",
                 "score": "reads a score; scores cannot depend on scores (combine two models "
                          "with a matrix instead)"}


def _refuse_kinds(shape: Any, where: str) -> None:
    """Condition kinds that make no sense in a scoring rule."""
    if isinstance(shape, Mapping):
        for kind, reason in _NOT_IN_RULES.items():
            if kind in shape:
                raise ValidationFailed(where, f"a {kind!r} condition {reason}")
        for key, value in shape.items():
            _refuse_kinds(value, _at(where, key))
    elif isinstance(shape, list):
        for i, item in enumerate(shape):
            _refuse_kinds(item, _at(where, i))


def _grades(value: Any) -> tuple[Grade, ...]:
    if not isinstance(value, list):
        raise ValidationFailed("grades", "must be a list of bands, best first, e.g. "
                                         "[{grade: A, min: 60}, {grade: B, min: 30}, "
                                         "{grade: C}]")
    if len(value) > MAX_GRADES:
        raise ValidationFailed("grades", f"has {len(value)} bands; at most {MAX_GRADES}")
    bands: list[Grade] = []
    for i, item in enumerate(value):
        where = f"grades.{i}"
        if not isinstance(item, Mapping):
            raise ValidationFailed(where, "must be a mapping such as {grade: A, min: 60}")
        _known(item, where, ("grade", "min"))
        grade = item.get("grade")
        if not isinstance(grade, str | int) or isinstance(grade, bool) or not str(
                grade).strip() or len(str(grade)) > 8:
            raise ValidationFailed(_at(where, "grade"), "must be a short label (at most 8 "
                                                        "characters) such as A or 1")
        label = str(grade)
        if any(b.grade == label for b in bands):
            raise ValidationFailed(_at(where, "grade"), f"{label!r} is already a band; each "
                                                        "grade appears once")
        low = item.get("min")
        if low is None and i != len(value) - 1:
            raise ValidationFailed(_at(where, "min"), "is missing; only the last band may "
                                                      "leave min out (it takes every lower "
                                                      "score)")
        floor = None if low is None else _number(low, _at(where, "min"))
        if floor is not None and bands and bands[-1].min is not None and floor >= bands[
                -1].min:
            raise ValidationFailed(_at(where, "min"), f"{_number_json(floor)} is not below "
                                                      f"the band before it ({bands[-1].grade}"
                                                      f" from {_number_json(bands[-1].min)})"
                                                      "; list bands best first with falling "
                                                      "minimums")
        bands.append(Grade(label, floor))
    return tuple(bands)


def _thresholds(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ValidationFailed("thresholds", "must be a list of scores, e.g. [50, 80]")
    if len(value) > MAX_THRESHOLDS:
        raise ValidationFailed("thresholds", f"has {len(value)} values; at most "
                                             f"{MAX_THRESHOLDS}")
    found = [_number(v, f"thresholds.{i}") for i, v in enumerate(value)]
    if len(set(found)) != len(found):
        raise ValidationFailed("thresholds", "lists a score twice; give each once")
    return tuple(sorted(found))
