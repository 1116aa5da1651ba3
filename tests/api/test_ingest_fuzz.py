"""Random garbage against the real server never yields a 5xx, and what it acknowledges is what
it stored: every message of a 200 is accepted, a duplicate or listed as rejected."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.clock import FakeClock
from cadenza.store import Store, schema
from tests.api.conftest import Keys
from tests.api.support import Api, count, iso

FUZZ = settings(max_examples=250, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
ids = st.text(min_size=0, max_size=6) | st.integers() | json_values
times = (st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                      timezones=st.sampled_from([None, dt.UTC])).map(lambda d: d.isoformat())
         | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
         | st.text(max_size=25) | json_values)
traits = st.dictionaries(
    st.sampled_from(["email", "phone", "timezone", "locale", "age", "plan", "name"])
    | st.text(max_size=6),
    st.sampled_from(["a@example.com", "+14155550100", "Europe/Paris", "fr-FR", "42", "x"])
    | json_values,
    max_size=5,
)
DAY = 24 * 3_600_000
near_now = st.integers(-3 * DAY, DAY // 2).map(lambda off: iso(FakeClock().now_ms() + off))
some_ids = st.sampled_from(["u1", "u2", "a1", "a2", "g1", "m1", "m2"]) | st.text(min_size=1,
                                                                                  max_size=4)
common = {"messageId": some_ids, "timestamp": near_now, "sentAt": near_now,
          "context": st.dictionaries(st.text(max_size=5), json_values, max_size=3)}
who = st.sampled_from([{"userId": "u1"}, {"userId": "u2"}, {"anonymousId": "a1"},
                       {"anonymousId": "a2"}, {"userId": "u1", "anonymousId": "a2"}])
valid_messages = st.tuples(who, st.one_of(
    st.fixed_dictionaries({"type": st.just("track"), "event": st.text(min_size=1, max_size=9)},
                          optional={**common, "properties": st.dictionaries(
                              st.text(max_size=5), json_values, max_size=3)}),
    st.fixed_dictionaries({"type": st.just("identify")}, optional={**common, "traits": traits}),
    st.fixed_dictionaries({"type": st.just("group"), "groupId": some_ids},
                          optional={**common, "traits": traits}),
    st.fixed_dictionaries({"type": st.just("alias"), "userId": some_ids,
                           "previousId": some_ids}, optional=common),
    st.fixed_dictionaries({"type": st.sampled_from(["page", "screen"])},
                          optional={**common, "name": st.text(max_size=9)}),
)).map(lambda pair: {**pair[0], **pair[1]})
mutated_messages = st.tuples(valid_messages, st.sampled_from(
    ["type", "userId", "anonymousId", "event", "traits", "properties", "context", "timestamp",
     "sentAt", "groupId", "previousId", "messageId", "integrations"]), json_values).map(
    lambda t: {**t[0], t[1]: t[2]})
garbage_messages = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "x"])
    | json_values,
    "userId": st.sampled_from(["u1", "u2"]) | ids,
    "anonymousId": st.sampled_from(["a1", "a2"]) | ids,
    "previousId": st.sampled_from(["a1", "u1"]) | ids,
    "groupId": st.sampled_from(["g1"]) | ids,
    "messageId": st.sampled_from(["m1", "m2"]) | ids,
    "event": st.text(max_size=10) | json_values,
    "name": st.text(max_size=10) | json_values,
    "category": st.text(max_size=10) | json_values,
    "properties": json_values,
    "traits": traits | json_values,
    "context": st.fixed_dictionaries({}, optional={"traits": traits | json_values,
                                                   "timezone": json_values}) | json_values,
    "integrations": json_values,
    "timestamp": times,
    "originalTimestamp": times,
    "sentAt": times,
}) | json_values
messages = valid_messages | mutated_messages | garbage_messages


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server, with a declared field to trip over."""
    helper = Api(client, keys.write, keys.admin)
    assert helper.post("/fields", {"name": "age", "type": "number"}).status_code == 201
    return helper


def check_batch_response(response: httpx.Response, sent: int) -> int:
    """A 200 accounts for every message; a 400 is a proper error. Returns events accepted."""
    assert response.status_code in (200, 400), response.text
    body = response.json()
    if response.status_code == 400:
        assert body["success"] is False
        assert isinstance(body["error"]["field"], str)
        assert body["error"]["reason"]
        return 0
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == sent, body
    for rejected in body["rejected"]:
        assert 0 <= rejected["index"] < sent
        assert isinstance(rejected["field"], str)
        assert rejected["reason"]
    accepted: int = body["accepted"]
    return accepted


def test_random_batches_never_5xx(api: Api, store: Store) -> None:
    stored = 0

    @FUZZ
    @given(batch=st.lists(messages, max_size=6), envelope=st.fixed_dictionaries(
        {}, optional={"sentAt": times, "context": json_values}))
    def run(batch: list[Any], envelope: dict[str, Any]) -> None:
        nonlocal stored
        content = json.dumps({**envelope, "batch": batch}).encode()
        stored += check_batch_response(api.send_raw("batch", content), len(batch))
        assert count(store, schema.events) == stored

    run()
    assert stored > 0, "the generator never reached the storing path"


def test_random_single_calls_never_5xx(api: Api, store: Store) -> None:
    stored = 0

    calls = ["identify", "track", "page", "screen", "group", "alias"]

    @FUZZ
    @given(call=st.sampled_from(calls), message=messages, matching=st.booleans())
    def run(call: str, message: Any, matching: bool) -> None:
        nonlocal stored
        if matching and isinstance(message, dict) and message.get("type") in calls:
            call = message["type"]  # mostly send each message to its own endpoint
        response = api.send_raw(call, json.dumps(message).encode())
        stored += check_batch_response(response, 1)
        assert count(store, schema.events) == stored

    run()
    assert stored > 0, "the generator never reached the storing path"


def test_random_bytes_never_5xx(api: Api) -> None:
    @FUZZ
    @given(call=st.sampled_from(["track", "batch", "import"]), content=st.binary(max_size=300),
           zipped=st.booleans())
    def run(call: str, content: bytes, zipped: bool) -> None:
        headers = {"Content-Encoding": "gzip"} if zipped else {}
        body = gzip.compress(content) if zipped and content[:1] == b"{" else content
        response = api.send_raw(call, body, headers)
        assert response.status_code in (200, 400), response.text
        assert response.json()["success"] is (response.status_code == 200)

    run()
