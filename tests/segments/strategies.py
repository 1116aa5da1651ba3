"""Hypothesis strategies for the condition language: random conditions of every kind, and
random populations (contacts, companies, consents, tags, memberships, scores, stages, events)
drawn over the same small pools of names and values, so that conditions often hit, often miss
and often meet a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from cadenza.segments import COUNT_OPERATORS, GRADE_OPERATORS, OPERATORS, SCORE_OPERATORS

NOW = 1_767_225_600_000
SECOND = 1000
DAY = 86_400_000

ATTRIBUTES = ("plan", "age", "topics", 'q"x', "ünï", "email", "locale", "missing")
"""Custom attribute names (one SQLite cannot address by path, one non-ASCII), two built-in
columns, and one that no contact has."""
COMPANY_ATTRIBUTES = ("industry", "size", "name", "domain", "missing")
EVENTS = ("purchased", "viewed", "Order Completed")
PATHS = ("revenue", "plan", "items.0.price", "items.1", "cur", 'q"x', "missing")
SUM_PATHS = ("revenue", "items.0.price", "plan")
CHANNELS = ("email", "sms")
PURPOSES = ("marketing", "news")
TAGS = ("vip", "churned")
SEGMENTS = ("trial", "paying", "nobody")
MODELS = ("fit", "engagement", "unused")
GRADES = ("A", "B", "C")
STAGES = ("lead", "mql", "sql", "customer")
WINDOWS = ("1d", "7d", "30d")
WINDOW_MS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}

_COMMON = st.sampled_from(["pro", "Pro", "free", "p", "", "1", "1.0", "true", "null", "[1]",
                           "{}", "2026-01-01", "2026-06-30", "é", "ü", "🎉", "a b", "EUR"])
strings = st.one_of(
    _COMMON, _COMMON,
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
            max_size=4),
)
"""Mostly a small pool (so values meet operands), sometimes any text."""
_PARTS = st.sampled_from(["p", "pro", "", "1", "é", "[", "E", "20"])
"""Operands of contains and starts_with: short, so they are often found."""
numbers = st.one_of(st.integers(-3, 40), st.sampled_from([0.5, 1.0, 2.5, -0.0, 30.0, 2**40]))
scalars = st.one_of(strings, numbers, st.booleans())
json_values = st.one_of(
    st.none(), scalars, scalars, st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["a", "0", "price"]), scalars, max_size=2),
)


# --- conditions --------------------------------------------------------------------------------

def operand(op: str) -> st.SearchStrategy[Any]:
    """An operand for `op` of attr, company_attr and event_prop tests."""
    if op in ("in", "not_in"):
        return st.lists(scalars, min_size=1, max_size=4)
    if op == "exists":
        return st.booleans()
    if op == "starts_with":
        return _PARTS
    if op == "contains":
        return st.one_of(_PARTS, scalars)
    if op in ("gt", "gte", "lt", "lte"):
        return st.one_of(numbers, st.sampled_from(["2026-03-01", "m", "", "é", "P", "1"]))
    return scalars


@st.composite
def value_tests(draw: st.DrawFn, kind: str, names: tuple[str, ...]) -> dict[str, Any]:
    op = draw(st.sampled_from(OPERATORS))
    return {kind: draw(st.sampled_from(names)), op: draw(operand(op))}


@st.composite
def event_filters(draw: st.DrawFn) -> dict[str, Any]:
    """The `where:` of a count or sum: event_prop tests under all/any/not."""
    leaf = value_tests("event_prop", PATHS)
    return draw(st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ), max_leaves=4))


@st.composite
def windows(draw: st.DrawFn, shape: dict[str, Any]) -> None:
    choice = draw(st.sampled_from(["all", "within", "between"]))
    if choice == "within":
        shape["within"] = draw(st.sampled_from(WINDOWS))
    elif choice == "between":
        older, newer = draw(st.sampled_from([("7d", "1d"), ("30d", "7d"), ("30d", "1d")]))
        shape["between"] = [older, newer]


@st.composite
def counts(draw: st.DrawFn) -> dict[str, Any]:
    shape: dict[str, Any] = {"count": draw(st.sampled_from(EVENTS))}
    draw(windows(shape))
    if draw(st.booleans()):
        shape["where"] = draw(event_filters())
    shape[draw(st.sampled_from(COUNT_OPERATORS))] = draw(st.integers(0, 4))
    return shape


@st.composite
def sums(draw: st.DrawFn) -> dict[str, Any]:
    shape: dict[str, Any] = {"sum": draw(st.sampled_from(EVENTS)),
                             "of": draw(st.sampled_from(SUM_PATHS))}
    draw(windows(shape))
    if draw(st.booleans()):
        shape["where"] = draw(event_filters())
    shape[draw(st.sampled_from(COUNT_OPERATORS))] = draw(
        st.one_of(st.integers(-2, 60), st.sampled_from([0.5, 2.5, 10.0])))
    return shape


@st.composite
def last_seen(draw: st.DrawFn) -> dict[str, Any]:
    return {"last_seen": draw(st.sampled_from(("*", *EVENTS))),
            draw(st.sampled_from(["within", "before"])): draw(st.sampled_from(WINDOWS))}


@st.composite
def consents(draw: st.DrawFn) -> dict[str, Any]:
    shape = {"consent": draw(st.sampled_from(CHANNELS)),
             "purpose": draw(st.sampled_from(PURPOSES))}
    status = draw(st.sampled_from(["opted_in", "opted_out", "pending", "none"]))
    if status != "opted_in":
        shape["status"] = status
    return shape


@st.composite
def scores(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        op = draw(st.sampled_from(SCORE_OPERATORS))
        value: Any = (draw(st.booleans()) if op == "exists"
                      else draw(st.lists(numbers, min_size=1, max_size=3))
                      if op in ("in", "not_in") else draw(numbers))
        return {"score": draw(st.sampled_from(MODELS)), op: value}
    op = draw(st.sampled_from(GRADE_OPERATORS))
    value = (draw(st.booleans()) if op == "exists"
             else draw(st.lists(st.sampled_from(GRADES), min_size=1, max_size=2))
             if op in ("in", "not_in") else draw(st.sampled_from(GRADES)))
    return {"grade": draw(st.sampled_from(MODELS)), op: value}


@st.composite
def stages(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(STAGES), min_size=1, max_size=3, unique=True))
    return {"stage": chosen[0] if len(chosen) == 1 else chosen}


leaves = st.one_of(
    value_tests("attr", ATTRIBUTES), value_tests("attr", ATTRIBUTES[:3]),
    value_tests("company_attr", COMPANY_ATTRIBUTES),
    counts(), sums(), last_seen(), consents(),
    st.builds(lambda tag: {"tag": tag}, st.sampled_from(TAGS)),
    st.builds(lambda key: {"segment": key}, st.sampled_from(SEGMENTS)),
    scores(), stages(),
)
conditions = st.recursive(leaves, lambda inner: st.one_of(
    st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda item: {"not": item}, inner),
), max_leaves=6)
"""Conditions for whole sets: every kind but prop and bare event_prop (journey-only)."""


# --- populations -------------------------------------------------------------------------------

@dataclass
class Population:
    """Rows for every table a condition can read, as plain tuples."""

    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    merged: list[tuple[int, int]] = field(default_factory=list)
    companies: list[tuple[Any, ...]] = field(default_factory=list)
    members: list[tuple[int, int]] = field(default_factory=list)
    consents: list[tuple[Any, ...]] = field(default_factory=list)
    tags: list[tuple[int, str]] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)
    scores: list[tuple[int, int, float, str | None]] = field(default_factory=list)
    stages: list[tuple[int, str]] = field(default_factory=list)
    events: list[tuple[int, str, int, Any]] = field(default_factory=list)


# Offsets from NOW that sit on and beside every window edge, plus the future.
_EDGES = sorted({0, 1, -DAY} | {w + d for w in WINDOW_MS.values() for d in (-1, 0, 1)}
                | {90 * DAY})


@st.composite
def populations(draw: st.DrawFn, max_contacts: int = 8) -> Population:
    found = Population()
    ids = list(range(1, draw(st.integers(3, max_contacts)) + 1))
    for cid in ids:
        attributes = draw(st.dictionaries(
            st.sampled_from([a for a in ATTRIBUTES if a != "missing"]), json_values,
            max_size=4))
        email = draw(st.one_of(st.none(), st.sampled_from(["ann@x.io", "pro", "1"])))
        locale = draw(st.one_of(st.none(), st.sampled_from(["en", "fr-FR"])))
        found.contacts.append((cid, email, locale, attributes))
    if len(ids) > 1 and draw(st.booleans()):
        loser = draw(st.sampled_from(ids[1:]))
        found.merged.append((loser, ids[0]))
    for company_id in range(1, draw(st.integers(0, 3)) + 1):
        attributes = draw(st.dictionaries(st.sampled_from(["industry", "size", "name"]),
                                          json_values, max_size=3))
        name = draw(st.one_of(st.none(), st.sampled_from(["Acme", "pro", ""])))
        domain = draw(st.one_of(st.none(), st.sampled_from(["acme.io", "x.org"])))
        found.companies.append((company_id, name, domain, attributes))
        for cid in draw(st.sets(st.sampled_from(ids), max_size=3)):
            found.members.append((company_id, cid))
    for cid in ids:
        for channel in CHANNELS:
            for purpose in PURPOSES:
                status = draw(st.sampled_from([None, None, "opted_in", "opted_out",
                                               "pending"]))
                if status:
                    found.consents.append((cid, channel, purpose, status))
        found.tags += [(cid, tag) for tag in draw(st.sets(st.sampled_from(TAGS)))]
        found.segments += [(segment_id, cid) for segment_id in
                           draw(st.sets(st.sampled_from([1, 2]), max_size=2))]
        for model_id in draw(st.sets(st.sampled_from([1, 2]), max_size=2)):
            score = draw(st.sampled_from([-5.0, 0.0, 0.5, 1.0, 30.0, 50.0, 72.5]))
            grade = draw(st.one_of(st.none(), st.sampled_from(GRADES)))
            found.scores.append((model_id, cid, score, grade))
        if draw(st.booleans()):
            found.stages.append((cid, draw(st.sampled_from(STAGES))))
        for _ in range(draw(st.integers(0, 4))):
            at = NOW - draw(st.sampled_from(_EDGES))
            properties = draw(st.fixed_dictionaries({}, optional={
                "revenue": st.one_of(numbers, strings, st.booleans(), st.none()),
                "plan": strings,
                "cur": st.sampled_from(["EUR", "USD"]),
                "items": st.lists(st.one_of(
                    st.fixed_dictionaries({}, optional={"price": numbers, "sku": strings}),
                    scalars), max_size=2),
                'q"x': scalars,
            }))
            found.events.append((cid, draw(st.sampled_from(EVENTS)), at, properties))
    return found
