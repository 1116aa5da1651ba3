"""Lifecycle stages: their order, their transition rules, and reading and writing them.

A workspace has an ordered list of stages (by default subscriber, lead, mql, sql,
opportunity, customer, evangelist, other). Each stage may carry transition rules: a condition
in the condition language that moves a contact *into* that stage. A rule moves contacts only
forward (to a later stage) unless it says `backward: true`. A stage marked `route: true`
hands every contact that enters it to the routing rules (`cadenza.leads.routing_assign`).

The document form, as the API and the CLI take it:

    stages:
      - {key: subscriber, name: Subscriber}
      - key: mql
        name: Marketing qualified lead
        route: true
        rules:
          - {name: fit, when: {score: fit, gte: 60}}
          - {name: demo, when: {count: Demo Requested, gte: 1}}

While nothing was ever saved, the default stages (without rules) are in force.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.contacts import list_fields
from cadenza.errors import ValidationFailed
from cadenza.segments import Condition, Needs, parse_condition
from cadenza.store import dumps, loads, schema

DEFAULT_STAGES: tuple[tuple[str, str], ...] = (
    ("subscriber", "Subscriber"), ("lead", "Lead"), ("mql", "Marketing qualified lead"),
    ("sql", "Sales qualified lead"), ("opportunity", "Opportunity"), ("customer", "Customer"),
    ("evangelist", "Evangelist"), ("other", "Other"))
"""Key and name of each default stage, first to last."""

MAX_STAGES = 50
MAX_RULES = 20
"""Transition rules per stage at most."""
KEY = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_KEY_RULE = "must be a slug: a lowercase letter, then letters, digits, '_' or '-' (64 at most)"
_STAGE_OPERANDS = ("eq", "ne", "in", "not_in")


@dataclass(frozen=True)
class TransitionRule:
    """A condition that moves a contact into its stage."""

    name: str
    """Names the rule in history and events ("<stage>:<n>" when not given)."""
    condition: Condition
    backward: bool = False
    """Whether the rule may move a contact back from a later stage."""

    def to_dict(self) -> dict[str, Any]:
        """Document form."""
        return {"name": self.name, "when": self.condition.to_json(), "backward": self.backward}


@dataclass(frozen=True)
class Stage:
    """One lifecycle stage."""

    key: str
    name: str
    position: int
    """0 for the first stage; later stages are "forward"."""
    rules: tuple[TransitionRule, ...] = ()
    routes: bool = False
    """Entering this stage routes the contact to a sales rep."""

    def to_dict(self) -> dict[str, Any]:
        """Document form."""
        return {"key": self.key, "name": self.name, "position": self.position,
                "route": self.routes, "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class StageConfig:
    """Every stage, in order."""

    stages: tuple[Stage, ...]
    stored: bool = True
    """False while the defaults are in force (nothing saved yet)."""
    _by_key: dict[str, Stage] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update({s.key: s for s in self.stages})

    def get(self, key: str) -> Stage | None:
        """The stage of this key, if any."""
        return self._by_key.get(key)

    def require(self, key: str, where: str = "stage") -> Stage:
        """The stage of this key, or a ValidationFailed naming the known ones."""
        found = self._by_key.get(key)
        if found is None:
            raise ValidationFailed(where, unknown_stage(key, self.keys()))
        return found

    def keys(self) -> list[str]:
        """Stage keys in order."""
        return [s.key for s in self.stages]

    def position(self, key: str | None) -> int:
        """A stage's position; -1 for no stage (or one no longer defined)."""
        found = self._by_key.get(key) if key is not None else None
        return -1 if found is None else found.position

    def rules(self) -> Iterator[tuple[Stage, TransitionRule]]:
        """Every rule with its stage, last stage first (the furthest target wins)."""
        for stage in reversed(self.stages):
            for rule in stage.rules:
                yield stage, rule

    def needs(self) -> Needs:
        """What the rules need loaded."""
        needs = Needs()
        for _, rule in self.rules():
            needs = needs | rule.condition.needs()
        return needs

    def to_dict(self) -> dict[str, Any]:
        """Document form."""
        return {"stages": [s.to_dict() for s in self.stages], "stored": self.stored}


@dataclass(frozen=True)
class Declared:
    """The declared fields conditions are checked against (name -> type)."""

    fields: Mapping[str, str] = field(default_factory=dict)
    company: Mapping[str, str] = field(default_factory=dict)

    def parse(self, value: Any, where: str) -> Condition:
        """Parse a condition refusing undeclared fields and type mismatches."""
        return parse_condition(value, where, fields=self.fields, company_fields=self.company)


def declared_fields(conn: Connection) -> Declared:
    """The workspace's declared contact and company fields."""
    found = list_fields(conn)
    return Declared({f.name: f.type for f in found if f.entity == "contact"},
                    {f.name: f.type for f in found if f.entity == "company"})


def parse_when(value: Any, where: str, declared: Declared | None) -> Condition:
    """A rule's condition, checked against `declared` when given."""
    return parse_condition(value, where) if declared is None else declared.parse(value, where)


def unknown_stage(key: object, known: Sequence[str]) -> str:
    """The reason for an unknown stage key, with a suggestion."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key!r} is not a lifecycle stage{hint}; stages: {', '.join(known)}"


def default_config() -> StageConfig:
    """The default stages, without rules."""
    return StageConfig(tuple(Stage(k, n, i) for i, (k, n) in enumerate(DEFAULT_STAGES)),
                       stored=False)


# --- references inside conditions -----------------------------------------------------------

def condition_refs(value: Any) -> tuple[set[str], set[str], bool]:
    """Event names counted, summed or looked for (`*`: any event), stage keys named, and
    whether attributes are read, found by walking a condition's JSON form."""
    events: set[str] = set()
    stages: set[str] = set()
    attributes = False
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
            continue
        if not isinstance(item, Mapping):
            continue
        for kind in ("count", "sum", "last_seen"):
            if isinstance(item.get(kind), str):
                events.add(item[kind])
        if "attr" in item or "company_attr" in item:
            attributes = True
        if "stage" in item:
            named = item["stage"]
            if isinstance(named, str):
                stages.add(named)
            elif isinstance(named, list):
                stages.update(s for s in named if isinstance(s, str))
            for op in _STAGE_OPERANDS:
                operand = item.get(op)
                if isinstance(operand, str):
                    stages.add(operand)
                elif isinstance(operand, list):
                    stages.update(s for s in operand if isinstance(s, str))
        todo.extend(v for v in item.values() if isinstance(v, list | Mapping))
    return events, stages, attributes


def check_stage_refs(condition: Condition, where: str, known: Sequence[str]) -> set[str]:
    """The stage keys a condition names; unknown ones are refused."""
    _, stages, _ = condition_refs(condition.to_json())
    for key in sorted(stages):
        if key not in known:
            raise ValidationFailed(where, unknown_stage(key, known))
    return stages


# --- parsing --------------------------------------------------------------------------------

def parse_config(document: Any, declared: Declared | None = None) -> StageConfig:
    """A stage configuration from its document form; every mistake names its field."""
    if not isinstance(document, Mapping):
        raise ValidationFailed("", "must be an object with a 'stages' list")
    unknown = set(document) - {"stages", "stored"}
    if unknown:
        raise ValidationFailed(sorted(unknown)[0], "is not a setting of lifecycle stages; "
                               "give only 'stages'")
    items = document.get("stages")
    if not isinstance(items, list) or not items:
        raise ValidationFailed("stages", "must be a non-empty list of {key, name, rules}")
    if len(items) > MAX_STAGES:
        raise ValidationFailed("stages", f"at most {MAX_STAGES} stages, got {len(items)}")
    seen: dict[str, int] = {}
    heads: list[tuple[str, str, bool, list[Any]]] = []
    for i, item in enumerate(items):
        where = f"stages[{i}]"
        if not isinstance(item, Mapping):
            raise ValidationFailed(where, "must be an object such as {key: mql, name: MQL}")
        extra = set(item) - {"key", "name", "rules", "route", "position"}
        if extra:
            raise ValidationFailed(f"{where}.{sorted(extra)[0]}", "is not a stage setting; "
                                   "use key, name, route and rules")
        key = item.get("key")
        if not isinstance(key, str) or not KEY.match(key):
            raise ValidationFailed(f"{where}.key", _KEY_RULE)
        if key in seen:
            raise ValidationFailed(f"{where}.key", f"{key!r} is already the key of "
                                   f"stages[{seen[key]}]; stage keys must be unique")
        seen[key] = i
        name = item.get("name", key)
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 128:
            raise ValidationFailed(f"{where}.name", "must be a name of 1 to 128 characters")
        routes = item.get("route", False)
        if not isinstance(routes, bool):
            raise ValidationFailed(f"{where}.route", "must be true or false")
        rules = item.get("rules", [])
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            raise ValidationFailed(f"{where}.rules", f"must be a list of at most {MAX_RULES} "
                                   "rules such as {when: {count: Demo Requested, gte: 1}}")
        heads.append((key, name.strip(), routes, rules))
    known = [h[0] for h in heads]
    stages = []
    for i, (key, name, routes, rules) in enumerate(heads):
        parsed = tuple(_parse_rule(rule, f"stages[{i}].rules[{j}]", key, j, known, declared)
                       for j, rule in enumerate(rules))
        names = [r.name for r in parsed]
        for j, rule_name in enumerate(names):
            if names.index(rule_name) != j:
                raise ValidationFailed(f"stages[{i}].rules[{j}].name",
                                       f"{rule_name!r} is used twice in this stage")
        stages.append(Stage(key, name, i, parsed, routes))
    return StageConfig(tuple(stages))


def _parse_rule(value: Any, where: str, stage: str, index: int, known: Sequence[str],
                declared: Declared | None) -> TransitionRule:
    if not isinstance(value, Mapping):
        raise ValidationFailed(where, "must be an object such as {when: {attr: plan, eq: pro}}")
    extra = set(value) - {"name", "when", "backward"}
    if extra:
        raise ValidationFailed(f"{where}.{sorted(extra)[0]}", "is not a rule setting; use "
                               "name, when and backward")
    name = value.get("name", f"{stage}:{index + 1}")
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise ValidationFailed(f"{where}.name", "must be a name of 1 to 128 characters")
    if "when" not in value:
        raise ValidationFailed(f"{where}.when", "is required: the condition that moves a "
                               "contact into this stage")
    condition = parse_when(value["when"], f"{where}.when", declared)
    named = check_stage_refs(condition, f"{where}.when", known)
    if stage in named:
        raise ValidationFailed(f"{where}.when", f"names the stage {stage!r} it moves "
                               "contacts into: the rule would depend on its own outcome "
                               "(a cycle); test an earlier stage instead")
    backward = value.get("backward", False)
    if not isinstance(backward, bool):
        raise ValidationFailed(f"{where}.backward", "must be true or false")
    return TransitionRule(name, condition, backward)


# --- storage --------------------------------------------------------------------------------

_t = schema.lifecycle_stages


StageRows = tuple[tuple[str, str, str, bool], ...]
"""Stored stages as (key, name, rules as JSON text, routes), in order."""


def stage_rows(conn: Connection) -> StageRows:
    """The stored stages, raw (cheap to compare: the listener re-parses only on change)."""
    return tuple((str(k), str(n), r if isinstance(r, str) else dumps(r), bool(x))
                 for k, n, r, x in conn.execute(
                     sa.select(_t.c.key, _t.c.name, _t.c.rules, _t.c.routes)
                     .order_by(_t.c.position)).all())


def load_config(conn: Connection) -> StageConfig:
    """The stored stages (the defaults while none are stored)."""
    return config_from_rows(stage_rows(conn))


def config_from_rows(rows: StageRows) -> StageConfig:
    """Stored rows as a configuration (the defaults when there are none)."""
    if not rows:
        return default_config()
    return parse_config({"stages": [{"key": k, "name": n, "rules": loads(r) or [], "route": x}
                                    for k, n, r, x in rows]})


def save_config(conn: Connection, config: StageConfig, now: int) -> None:
    """Replace the stored stages by `config`."""
    conn.execute(sa.delete(_t))
    conn.execute(sa.insert(_t), [
        {"key": s.key, "name": s.name, "position": s.position, "routes": s.routes,
         "rules": [r.to_dict() for r in s.rules], "updated_at": now} for s in config.stages])


def stage_population(conn: Connection) -> dict[str, int]:
    """Contacts per stage."""
    c = schema.contact_stages
    return {str(k): int(n) for k, n in conn.execute(
        sa.select(c.c.stage, sa.func.count()).group_by(c.c.stage)).all()}
