"""The hand-written Segment validator agrees with the pydantic models that document it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cadenza.events.segment import MODELS, Message, Rejection, parse

NOW = 1_800_000_000_000
# JSON numbers that fit 64 bits: what an HTTP body can carry (larger ones are rejected as not
# encodable, which pydantic would not notice).
i64 = st.integers(-(2**63), 2**63 - 1)

ids = st.one_of(st.none(), st.text(min_size=0, max_size=300), st.integers(-5, 10**12),
                st.booleans(), st.floats(allow_nan=False), st.lists(i64, max_size=2))
names = st.one_of(st.none(), st.text(max_size=300), i64, st.dictionaries(
    st.text(max_size=3), i64, max_size=2))
objects = st.one_of(st.dictionaries(st.text(max_size=5), i64, max_size=3),
                    st.lists(st.integers(0, 9), max_size=2), st.text(max_size=5), st.integers(0, 9))
times = st.one_of(st.none(), st.just("2026-05-01T09:30:00Z"),
                  st.just("2026-05-01T09:30:00.123+02:00"), st.just("yesterday"),
                  st.integers(0, 2 * 10**12), st.booleans())


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(MODELS)))
    raw: dict[str, Any] = {"type": kind}
    for key, strategy in (("messageId", ids), ("userId", ids), ("anonymousId", ids),
                          ("previousId", ids), ("groupId", ids), ("event", names),
                          ("name", names), ("category", names), ("timestamp", times),
                          ("sentAt", times), ("properties", objects), ("traits", objects),
                          ("context", objects)):
        if draw(st.booleans()):
            value = draw(strategy)
            if value is not None:
                raw[key] = value
    return raw


def pydantic_accepts(raw: dict[str, Any]) -> bool:
    try:
        model = MODELS[raw["type"]].model_validate(raw)
    except ValidationError:
        return False
    if raw["type"] == "alias":
        return True
    return getattr(model, "userId", None) is not None or model.anonymousId is not None


@settings(max_examples=400, deadline=None)
@given(messages())
def test_fast_parser_agrees_with_documented_models(raw: dict[str, Any]) -> None:
    # NUL characters are refused on purpose (PostgreSQL cannot store them); the models do not
    # say so, which is the one deliberate difference.
    assume("\\u0000" not in orjson.dumps(raw).decode())
    parsed = parse(raw, 0, received_at=NOW)
    assert isinstance(parsed, Message) == pydantic_accepts(raw), parsed


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The client's clock is 1 hour fast: it says the event happened at 10:00 and was sent at
    # 10:05, so the event happened 5 minutes before we received it.
    raw = {"type": "track", "userId": "u", "event": "E", "timestamp": "2026-01-01T10:00:00Z",
           "sentAt": "2026-01-01T10:05:00Z"}
    parsed = parse(raw, 0, received_at=NOW)
    assert isinstance(parsed, Message)
    assert parsed.timestamp == NOW - 5 * 60 * 1000


def test_batch_sent_at_applies_when_the_message_has_none() -> None:
    raw = {"type": "track", "userId": "u", "event": "E", "timestamp": "2026-01-01T10:00:00Z"}
    sent = parse({**raw, "sentAt": "2026-01-01T10:00:30Z"}, 0, received_at=NOW)
    batch = parse(raw, 0, received_at=NOW, batch_sent_at=1_767_261_630_000)
    assert isinstance(sent, Message)
    assert isinstance(batch, Message)
    assert sent.timestamp == batch.timestamp == NOW - 30_000


@pytest.mark.parametrize(("raw", "field"), [
    ({"type": "track", "userId": "u"}, "event"),
    ({"type": "track", "event": "E"}, "userId"),
    ({"type": "alias", "userId": "u"}, "previousId"),
    ({"type": "group", "userId": "u"}, "groupId"),
    ({"type": "track", "userId": "u", "event": "E", "properties": [1]}, "properties"),
    ({"type": "track", "userId": "u", "event": "E", "timestamp": "soon"}, "timestamp"),
    ({"type": "identify", "userId": True}, "userId"),
    ({"type": "unknown", "userId": "u"}, "type"),
])
def test_rejections_name_the_field(raw: dict[str, Any], field: str) -> None:
    parsed = parse(raw, 3, received_at=NOW)
    assert isinstance(parsed, Rejection)
    assert parsed.field == field
    assert parsed.index == 3
    assert parsed.reason


def test_oversized_message_is_rejected() -> None:
    raw = {"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 40_000}}
    parsed = parse(raw, 0, received_at=NOW)
    assert isinstance(parsed, Rejection)
    assert "32 KB" in parsed.reason
