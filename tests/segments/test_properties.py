"""Properties of random conditions over random facts.

Conditions are drawn in their JSON form over small pools of names and values, so that they
often hit the facts drawn beside them (and often miss, and often meet the wrong type).
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.errors import ValidationFailed
from cadenza.segments import (
    COUNT_OPERATORS,
    OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    Facts,
    Not,
    parse_condition,
)

DAY = 86_400_000
NAMES = ("plan", "age", "vip", "signup", "interests", "email", "missing")
PATHS = ("order.total", "order.id", "items.0.sku", "items.1", "x")
EVENTS = ("purchased", "opened")
WINDOWS = {None: 0, "1d": DAY, "30d": 30 * DAY}
CHANNELS = ("email", "sms")
PURPOSES = ("marketing", "news")
TAGS = ("vip", "churned")

scalars = st.one_of(
    st.sampled_from(["pro", "free", "p", "", "2026-01-01", "2026-06-30", "golf"]),
    st.integers(-3, 50), st.sampled_from([0.5, 2.5, 30.0]), st.booleans(),
)
values = st.one_of(st.none(), scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["total", "id", "sku"]), scalars,
                                   max_size=2))


def operand(op: str) -> st.SearchStrategy[Any]:
    if op in ("in", "not_in"):
        return st.lists(scalars, min_size=1, max_size=4)
    if op == "exists":
        return st.booleans()
    if op == "starts_with":
        return st.sampled_from(["p", "pr", "2026", "", "g"])
    if op in ("gt", "gte", "lt", "lte"):
        return st.one_of(st.integers(-3, 50), st.sampled_from(["2026-03-01", "m", 1.5]))
    return scalars


@st.composite
def value_tests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["attr", "prop", "event_prop"]))
    name = draw(st.sampled_from(NAMES if kind == "attr" else PATHS))
    op = draw(st.sampled_from(OPERATORS))
    return {kind: name, op: draw(operand(op))}


@st.composite
def counts(draw: st.DrawFn) -> dict[str, Any]:
    shape: dict[str, Any] = {"count": draw(st.sampled_from(EVENTS))}
    within = draw(st.sampled_from(list(WINDOWS)))
    if within:
        shape["within"] = within
    shape[draw(st.sampled_from(COUNT_OPERATORS))] = draw(st.integers(0, 4))
    return shape


@st.composite
def consents(draw: st.DrawFn) -> dict[str, Any]:
    shape = {"consent": draw(st.sampled_from(CHANNELS)),
             "purpose": draw(st.sampled_from(PURPOSES))}
    status = draw(st.sampled_from([None, "opted_in", "opted_out", "pending", "none"]))
    if status and status != "opted_in":
        shape["status"] = status
    return shape


leaves = st.one_of(value_tests(), counts(), consents(),
                   st.builds(lambda tag: {"tag": tag}, st.sampled_from(TAGS)))
conditions = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=4)),
    st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=4)),
    st.builds(lambda item: {"not": item}, inner),
), max_leaves=12)


@st.composite
def facts(draw: st.DrawFn) -> Facts:
    pairs = [(event, window) for event in EVENTS for window in WINDOWS.values()]
    return Facts(
        1,
        attributes=draw(st.dictionaries(st.sampled_from(NAMES[:-1]), values)),
        entry={"order": draw(values), "items": draw(st.lists(values, max_size=2))},
        event={"order": draw(st.dictionaries(st.sampled_from(["total", "id"]), scalars)),
               "x": draw(values)},
        counts=draw(st.dictionaries(st.sampled_from(pairs), st.integers(0, 5))),
        consents=draw(st.dictionaries(
            st.tuples(st.sampled_from(CHANNELS), st.sampled_from(PURPOSES)),
            st.sampled_from(["opted_in", "opted_out", "pending"]))),
        tags=frozenset(draw(st.sets(st.sampled_from(TAGS)))),
    )


@settings(max_examples=200)
@given(conditions)
def test_to_json_round_trips_through_json_and_yaml(shape: dict[str, Any]) -> None:
    parsed = parse_condition(shape, "when")
    assert parsed.to_json() == shape
    assert parse_condition(parsed.to_json(), "when") == parsed
    assert parse_condition(orjson.loads(orjson.dumps(parsed.to_json())), "when") == parsed
    assert parse_condition(yaml.safe_load(yaml.safe_dump(parsed.to_json())), "when") == parsed


@settings(max_examples=200)
@given(conditions, facts())
def test_not_is_the_complement(shape: dict[str, Any], known: Facts) -> None:
    condition = parse_condition(shape, "when")
    assert parse_condition({"not": shape}, "w").evaluate(known) is \
        (not condition.evaluate(known))


@settings(max_examples=200)
@given(st.lists(conditions, min_size=1, max_size=5), facts())
def test_all_and_any_agree_with_their_children(shapes: list[dict[str, Any]],
                                               known: Facts) -> None:
    children = [parse_condition(shape, "w").evaluate(known) for shape in shapes]
    assert parse_condition({"all": shapes}, "w").evaluate(known) is all(children)
    assert parse_condition({"any": shapes}, "w").evaluate(known) is any(children)


@settings(max_examples=200)
@given(st.sampled_from(["attr", "prop", "event_prop"]), st.data(), facts())
def test_ne_and_not_in_are_exact_complements(kind: str, data: st.DataObject,
                                             known: Facts) -> None:
    name = data.draw(st.sampled_from(NAMES if kind == "attr" else PATHS))
    value = data.draw(scalars)
    listed = data.draw(st.lists(scalars, min_size=1, max_size=4))

    def holds(op: str, operand: Any) -> bool:
        return parse_condition({kind: name, op: operand}, "w").evaluate(known)

    assert holds("ne", value) is not holds("eq", value)
    assert holds("not_in", listed) is not holds("in", listed)
    assert holds("in", listed) is any(holds("eq", item) for item in listed)
    assert holds("exists", False) is not holds("exists", True)


def leaves_of(condition: Condition) -> list[Condition]:
    if isinstance(condition, AllOf | AnyOf):
        return [leaf for child in condition.conditions for leaf in leaves_of(child)]
    if isinstance(condition, Not):
        return leaves_of(condition.condition)
    return [condition]


@settings(max_examples=200)
@given(conditions, facts())
def test_seen_explains_and_never_changes_the_outcome(shape: dict[str, Any],
                                                     known: Facts) -> None:
    condition = parse_condition(shape, "w")
    seen: dict[str, Any] = {}
    assert condition.evaluate(known, seen) is condition.evaluate(known)
    # Each leaf on its own records exactly one entry, and the whole records a subset of those.
    keys = set()
    for leaf in leaves_of(condition):
        alone: dict[str, Any] = {}
        leaf.evaluate(known, alone)
        assert len(alone) == 1
        keys |= set(alone)
    assert set(seen) <= keys
    assert seen  # at least the first leaf was looked at


@settings(max_examples=200)
@given(conditions, facts())
def test_needed_facts_are_enough(shape: dict[str, Any], known: Facts) -> None:
    """Evaluating over facts cut down to `needs()` gives the same answer."""
    condition = parse_condition(shape, "w")
    needs = condition.needs()
    cut = Facts(
        known.contact_id,
        attributes=known.attributes if needs.attributes else {},
        entry=known.entry, event=known.event,
        counts={k: v for k, v in known.counts.items() if k in needs.counts},
        consents={k: v for k, v in known.consents.items() if k in needs.consents},
        tags=known.tags if needs.tags else frozenset(),
    )
    assert condition.evaluate(cut) is condition.evaluate(known)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["attr", "eq", "30d", "pro", "email", "marketing"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(
            ["attr", "prop", "event_prop", "count", "within", "consent", "purpose", "status",
             "tag", "all", "any", "not", *OPERATORS]), st.text(max_size=6)), inner,
            max_size=4),
    ), max_leaves=20)


@settings(max_examples=1000)
@given(json_values)
def test_any_input_parses_or_is_refused_with_a_field(value: Any) -> None:
    try:
        parsed = parse_condition(value, "when")
    except ValidationFailed as error:
        refusal: ValidationFailed | None = error
    else:
        refusal = None
        assert parse_condition(parsed.to_json(), "when") == parsed
    if refusal is not None:
        assert refusal.field.startswith("when")
        assert refusal.reason
