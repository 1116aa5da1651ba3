"""Every kind of bad input to /v1: a 4xx that names the field and the reason, and no state
written (or, in a batch, only the valid messages written)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.events import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from cadenza.store import Store, schema
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error, count, iso, snapshot, stored_events

HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


@pytest.fixture
def unchanged(store: Store, api: Api) -> Iterator[None]:
    """The test must leave every state table exactly as it found it (after some data)."""
    api.ok("identify", {"userId": "existing", "traits": {"email": "existing@example.com",
                                                         "plan": "pro"}})
    api.ok("group", {"userId": "existing", "groupId": "g-1", "traits": {"name": "G"}})
    before = snapshot(store)
    yield
    assert snapshot(store) == before


# --- The body as a whole --------------------------------------------------------------


UNPARSEABLE = [
    (b'{"userId": "u", "event": ', "not valid JSON"),
    (b"{'userId': 'u'}", "not valid JSON"),
    (b'{"userId": "u"} trailing', "not valid JSON"),
    (b'{"userId": NaN}', "not valid JSON"),
    (b'{"n": 1e400}', "not valid JSON"),
    (b'{"s": "\\ud800"}', "not valid JSON"),
    (b"", "empty"),
    (b"\xff\xfe{\x00}", "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("call", ["track", "batch"])
def test_unparseable_body(api: Api, call: str) -> None:
    for content, reason in UNPARSEABLE:
        error = assert_error(api.send_raw(call, content), 400, "body", reason, case=content)
        assert error["code"] == "input.invalid"


@pytest.mark.usefixtures("unchanged")
def test_body_not_an_object(api: Api) -> None:
    for body in ([{"userId": "u", "event": "E"}], "track", 42, None, True):
        content = json.dumps(body).encode()
        assert_error(api.send_raw("track", content), 400, "body", "must be a JSON object",
                     case=body)
        assert_error(api.send_raw("batch", content), 400, "body", "must be a JSON object",
                     case=body)


@pytest.mark.usefixtures("unchanged")
def test_bad_batch_envelope(api: Api) -> None:
    for body, field, reason in [
        ({}, "batch", "required"),
        ({"batch": {"type": "track"}}, "batch", "must be a list"),
        ({"batch": "[]"}, "batch", "must be a list"),
        ({"batch": None}, "batch", "must be a list"),
        ({"batch": [], "context": "web"}, "context", "must be a JSON object"),
        ({"batch": [], "sentAt": "yesterday"}, "sentAt", "ISO 8601"),
        ({"batch": [], "sentAt": 12}, "sentAt", "ISO 8601"),
    ]:
        assert_error(api.send("batch", body), 400, field, reason, case=body)


def test_empty_batch_is_fine(api: Api) -> None:
    assert api.ok("batch", {"batch": []}) == {"success": True, "accepted": 0, "duplicates": 0,
                                              "rejected": []}


# --- One message's fields --------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, dict[str, Any], str, str]] = [
    ("track", {"userId": "u", "event": 42}, "event", "must be a string, got int"),
    ("track", {"userId": "u", "event": ["Signed Up"]}, "event", "must be a string"),
    ("track", {"userId": "u", "event": ""}, "event", "1 to 256"),
    ("track", {"userId": "u"}, "event", "required"),
    ("track", {"userId": "u", "event": None}, "event", "required"),
    ("track", {"userId": "u", "event": "E", "properties": [1, 2]}, "properties",
     "must be a JSON object, got list"),
    ("track", {"userId": "u", "event": "E", "properties": "plan=pro"}, "properties",
     "must be a JSON object, got str"),
    ("track", {"userId": "u", "event": "E", "context": []}, "context", "must be a JSON object"),
    ("track", {"userId": "u", "event": "E", "integrations": 1}, "integrations",
     "must be a JSON object"),
    ("track", {"event": "E"}, "userId", "userId or an anonymousId"),
    ("track", {"event": "E", "userId": None, "anonymousId": None}, "userId",
     "userId or an anonymousId"),
    ("track", {"event": "E", "userId": ""}, "userId", "1 to 256"),
    ("track", {"event": "E", "userId": "u" * 257}, "userId", "1 to 256"),
    ("track", {"event": "E", "userId": True}, "userId", "must be a string, got bool"),
    ("track", {"event": "E", "userId": 1.5}, "userId", "must be a string, got float"),
    ("track", {"event": "E", "anonymousId": {"id": 1}}, "anonymousId", "must be a string"),
    ("track", {"event": "E", "userId": "u", "messageId": 7}, "messageId", "must be a string"),
    ("track", {"event": "E", "userId": "u", "timestamp": "last tuesday"}, "timestamp",
     "ISO 8601"),
    ("track", {"event": "E", "userId": "u", "timestamp": [2026]}, "timestamp", "ISO 8601"),
    ("track", {"event": "E", "userId": "u", "sentAt": "soon"}, "sentAt", "ISO 8601"),
    ("track", {"userId": "u", "event": "E", "type": "identify"}, "type", "this endpoint"),
    ("identify", {"userId": "u", "traits": "vip"}, "traits", "must be a JSON object, got str"),
    ("identify", {"userId": "u", "traits": ["vip"]}, "traits", "must be a JSON object"),
    ("identify", {"traits": {"plan": "pro"}}, "userId", "userId or an anonymousId"),
    ("identify", {"userId": "u", "context": {"traits": "vip"}}, "context.traits",
     "JSON object"),
    ("page", {"userId": "u", "name": 3}, "name", "must be a string"),
    ("page", {"userId": "u", "category": "c" * 300}, "category", "256"),
    ("screen", {"userId": "u", "properties": 1}, "properties", "must be a JSON object"),
    ("group", {"userId": "u"}, "groupId", "required"),
    ("group", {"userId": "u", "groupId": ""}, "groupId", "1 to 256"),
    ("group", {"userId": "u", "groupId": "g", "traits": 5}, "traits", "JSON object"),
    ("alias", {"userId": "u"}, "previousId", "required"),
    ("alias", {"userId": "u", "previousId": None}, "previousId", "required"),
    ("alias", {"userId": "u", "previousId": ["a"]}, "previousId", "must be a string"),
    ("alias", {"previousId": "a"}, "userId", "required"),
]


@pytest.mark.usefixtures("unchanged")
def test_bad_message_single_call(api: Api) -> None:
    for call, message, field, reason in BAD_MESSAGES:
        case = (call, message)
        error = assert_error(api.send(call, message), 400, field, reason, case=case)
        assert error["message"].startswith(f"{field}: "), case


def test_bad_messages_in_one_batch(api: Api, store: Store) -> None:
    # Every bad message in one batch, around good ones: each is listed by index with its own
    # field and reason, and only the good ones are stored.
    good = {"type": "track", "userId": "good", "event": "Good"}
    batch: list[dict[str, Any]] = [good]
    expected: dict[int, tuple[str, str]] = {}
    for call, message, field, reason in BAD_MESSAGES:
        if "type" in message:
            continue  # a batch message's own type decides what it is
        expected[len(batch)] = (field, reason)
        batch.append({"type": call, **message})
    batch.append({**good, "event": "Good too"})
    response = api.ok("batch", {"batch": batch})
    assert response["accepted"] == 2
    assert [r["index"] for r in response["rejected"]] == sorted(expected)
    for rejected in response["rejected"]:
        field, reason = expected[rejected["index"]]
        assert rejected["field"] == field, (batch[rejected["index"]], rejected)
        assert reason.lower() in rejected["reason"].lower(), (batch[rejected["index"]],
                                                              rejected)
    assert [e["name"] for e in stored_events(store)] == ["Good", "Good too"]
    assert count(store, schema.contacts) == 1


@pytest.mark.usefixtures("unchanged")
def test_unknown_type_in_batch(api: Api) -> None:
    kinds: list[Any] = ["Track", "purchase", "", None, 5, ["track"], {"t": 1}, True]
    response = api.ok("batch", {"batch": [{"type": kind, "userId": "u", "event": "E"}
                                          for kind in kinds]})
    assert response["accepted"] == 0
    assert [(r["index"], r["field"]) for r in response["rejected"]] == [
        (i, "type") for i in range(len(kinds))]
    for rejected in response["rejected"]:
        assert "must be one of identify, track, page, screen, group, alias" in rejected[
            "reason"], rejected


def test_message_without_type_in_batch(api: Api, store: Store) -> None:
    response = api.ok("batch", {"batch": [{"userId": "u", "event": "E"}]})
    assert [r["field"] for r in response["rejected"]] == ["type"]
    assert count(store, schema.events) == 0


# --- Sizes and encodings -----------------------------------------------------------------


def _padded(size: int) -> dict[str, Any]:
    """A track message whose compact JSON is about `size` bytes."""
    message: dict[str, Any] = {"type": "track", "userId": "big", "event": "Big",
                               "properties": {"pad": ""}}
    base = len(httpx.Request("POST", "/", json=message).content)
    message["properties"]["pad"] = "x" * (size - base)
    return message


@pytest.mark.usefixtures("unchanged")
def test_single_message_over_32_kb(api: Api) -> None:
    message = _padded(MAX_MESSAGE_BYTES + 10)
    error = assert_error(api.send("track", message), 400, "body", str(MAX_MESSAGE_BYTES))
    assert error["code"] == "input.too_large"


def test_single_message_at_the_limit_is_accepted(api: Api, store: Store) -> None:
    message = _padded(MAX_MESSAGE_BYTES - 200)
    assert api.ok("track", message)["accepted"] == 1
    [event] = stored_events(store)
    assert event["properties"] == message["properties"]


def test_message_over_32_kb_in_batch(api: Api, store: Store) -> None:
    big = _padded(MAX_MESSAGE_BYTES + 100)
    response = api.ok("batch", {"batch": [
        {"type": "track", "userId": "a", "event": "Small"}, big,
        {"type": "track", "userId": "a", "event": "Small too"}]})
    assert response["accepted"] == 2
    [rejected] = response["rejected"]
    assert rejected["index"] == 1
    assert "32 KB" in rejected["reason"]
    assert [e["name"] for e in stored_events(store)] == ["Small", "Small too"]


@pytest.mark.usefixtures("unchanged")
def test_batch_over_500_kb_by_content_length(api: Api) -> None:
    messages = [_padded(20_000) for _ in range(30)]  # each fine, 600 KB together
    error = assert_error(api.send("batch", {"batch": messages}), 400, "body",
                         str(MAX_BATCH_BYTES))
    assert error["code"] == "input.too_large"


@pytest.mark.usefixtures("unchanged")
def test_batch_over_500_kb_streamed_without_length(api: Api) -> None:
    piece = httpx.Request("POST", "/", json=_padded(20_000)).content

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"batch": ['
        for i in range(30):
            yield (b"," if i else b"") + piece
        yield b"]}"

    response = api.client.post("/v1/batch", auth=(api.write_key, ""), content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 400, "body", "over the limit", str(MAX_BATCH_BYTES))


def test_batch_streamed_under_the_limit_is_accepted(api: Api, store: Store) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"batch": ['
        yield b'{"type": "track", "userId": "s", "event": "Streamed"}'
        yield b"]}"

    response = api.client.post("/v1/batch", auth=(api.write_key, ""), content=chunks())
    assert response.status_code == 200, response.text
    assert count(store, schema.events) == 1


@pytest.mark.usefixtures("unchanged")
def test_gzip_bomb(api: Api) -> None:
    # 100 MB of spaces inside valid JSON compresses to about 100 KB; it must be refused
    # after inflating just over 500 KB, not after allocating 100 MB.
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = squeezer.compress(b'{"batch": [')
    spaces = b" " * 1_000_000
    for _ in range(100):
        bomb += squeezer.compress(spaces)
    bomb += squeezer.compress(b"]}") + squeezer.flush()
    assert len(bomb) < MAX_BATCH_BYTES
    response = api.send_raw("batch", bomb, {"Content-Encoding": "gzip"})
    error = assert_error(response, 400, "body", "once decompressed")
    assert error["code"] == "input.too_large"


@pytest.mark.usefixtures("unchanged")
def test_gzip_single_call_over_32_kb_once_inflated(api: Api) -> None:
    body = httpx.Request("POST", "/", json=_padded(MAX_MESSAGE_BYTES + 10)).content
    response = api.send_raw("track", gzip.compress(body), {"Content-Encoding": "gzip"})
    assert_error(response, 400, "body", "once decompressed")


@pytest.mark.usefixtures("unchanged")
def test_invalid_gzip(api: Api) -> None:
    whole = gzip.compress(b'{"batch": [{"type": "track", "userId": "u", "event": "E"}]}')
    for content, reason in [
        (b'{"batch": []}', "not valid gzip"),
        (b"\x1f\x8b\x08\x00garbage-after-the-magic", "not valid gzip"),
        (whole[:-12], "truncated"),
        (whole[:12], "truncated"),
        (gzip.compress(b"not json at all"), "not valid JSON"),
        (gzip.compress(b""), "empty"),
        (b"", "empty"),
    ]:
        response = api.send_raw("batch", content, {"Content-Encoding": "gzip"})
        assert_error(response, 400, "body", reason, case=content)


@pytest.mark.usefixtures("unchanged")
def test_unsupported_content_encoding(api: Api) -> None:
    body = zlib.compress(b'{"batch": []}')
    response = api.send_raw("batch", body, {"Content-Encoding": "deflate"})
    assert_error(response, 400, "Content-Encoding", "not supported")


# --- Time ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("offset", "reason"), [
    (2 * DAY, "in the future"),
    (3650 * DAY, "in the future"),
    (-6 * 365 * DAY, "in the past"),
])
def test_timestamp_out_of_range(api: Api, clock: FakeClock, offset: int, reason: str) -> None:
    message = {"userId": "u", "event": "E", "timestamp": iso(clock.now_ms() + offset)}
    assert_error(api.send("track", message), 400, "timestamp", reason)
    response = api.ok("batch", {"batch": [{"type": "track", **message}]})
    assert [(r["field"], reason in r["reason"]) for r in response["rejected"]] == [
        ("timestamp", True)]


def test_extreme_timestamps_are_rejected_not_crashing(api: Api) -> None:
    for stamp in ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", -1e300, 1e300, 0,
                  -(2**63), 2**64 - 1]:
        message = {"userId": "u", "event": "E", "timestamp": stamp}
        assert_error(api.send("track", message), 400, "timestamp", "in the", case=message)
        # With an extreme sentAt too, skew correction may bring the time back into range
        # (both are equally absurd); it must never crash.
        for sent_at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59Z"):
            response = api.send("track", {**message, "sentAt": sent_at})
            if response.status_code != 200:
                assert_error(response, 400, "timestamp", "in the", case=(stamp, sent_at))


def test_timestamps_within_the_limits_are_kept(api: Api, store: Store, clock: FakeClock) -> None:
    now = clock.now_ms()
    api.ok("track", {"userId": "u", "event": "Soon", "timestamp": iso(now + DAY - 1000)})
    api.ok("track", {"userId": "u", "event": "Old", "timestamp": iso(now - 4 * 365 * DAY)})
    assert [e["timestamp"] for e in stored_events(store)] == [now + DAY - 1000,
                                                              now - 4 * 365 * DAY]


def test_skewed_client_clock_is_corrected(api: Api, store: Store, clock: FakeClock) -> None:
    now = clock.now_ms()
    skew = 3 * DAY  # the client's clock runs three days fast
    # Stamped 5 minutes before sending by the client's clock: without correction it would be
    # 3 days in the future and rejected.
    api.ok("track", {"userId": "u", "event": "Single", "timestamp": iso(now + skew - 300_000),
                     "sentAt": iso(now + skew)})
    # The batch's sentAt applies to messages without their own.
    api.ok("batch", {"sentAt": iso(now - skew), "batch": [
        {"type": "track", "userId": "u", "event": "Slow clock",
         "timestamp": iso(now - skew - 60_000)},
        {"type": "track", "userId": "u", "event": "Own sentAt",
         "timestamp": iso(now + 3_600_000), "sentAt": iso(now + 3_600_000 + 1000)},
        {"type": "track", "userId": "u", "event": "Original", "originalTimestamp":
         iso(now - skew - 2000)}]})
    stored = {e["name"]: e["timestamp"] for e in stored_events(store)}
    assert stored == {"Single": now - 300_000, "Slow clock": now - 60_000,
                      "Own sentAt": now - 1000, "Original": now - 2000}


@pytest.mark.usefixtures("unchanged")
def test_skewed_client_still_in_the_future_after_correction(api: Api, clock: FakeClock) -> None:
    now = clock.now_ms()
    # sentAt says "now" but the event claims to happen two days after sending.
    message = {"userId": "u", "event": "E", "timestamp": iso(now + 2 * DAY),
               "sentAt": iso(now)}
    assert_error(api.send("track", message), 400, "timestamp", "after clock-skew correction")


# --- Traits -----------------------------------------------------------------------------------


BAD_TRAITS: list[tuple[dict[str, Any], str, str]] = [
    ({"email": "not-an-email"}, "traits.email", "not a valid email"),
    ({"email": "a@b"}, "traits.email", "not a valid email"),
    ({"email": 12}, "traits.email", "must be a string"),
    ({"email": "x" * 400 + "@example.com"}, "traits.email", "at most 320"),
    ({"phone": "call me"}, "traits.phone", "not a phone number"),
    ({"phone": "+1 555"}, "traits.phone", "phone number"),
    ({"phone": "+1 555 555 5555 5555"}, "traits.phone", "phone number"),
    ({"phone": ["+14155550100"]}, "traits.phone", "must be a string"),
    ({"timezone": "Mars/Olympus"}, "traits.timezone", "IANA time zone"),
    ({"timezone": 2}, "traits.timezone", "IANA time zone"),
]


@pytest.mark.usefixtures("unchanged")
def test_invalid_identify_traits(api: Api) -> None:
    # A brand-new user, so that a half-written identify would leave a contact behind.
    for traits, field, reason in BAD_TRAITS:
        message = {"userId": "fresh-user", "traits": {"plan": "pro", **traits}}
        assert_error(api.send("identify", message), 400, field, reason, case=traits)
    response = api.ok("batch", {"batch": [
        {"type": "identify", "userId": "fresh-user", "traits": {"plan": "pro", **traits}}
        for traits, _, _ in BAD_TRAITS]})
    assert [(r["index"], r["field"]) for r in response["rejected"]] == [
        (i, field) for i, (_, field, _) in enumerate(BAD_TRAITS)]
    assert api.get_ok("/contacts", user_id="fresh-user")["items"] == []


@pytest.mark.usefixtures("unchanged")
def test_trait_breaking_a_declared_field(api: Api) -> None:
    for body in ({"name": "age", "type": "number"},
                 {"name": "tier", "type": "enum", "values": ["gold", "silver"],
                  "entity": "company"}):
        assert api.post("/fields", body).status_code == 201
    error = assert_error(api.send("identify", {"userId": "existing",
                                               "traits": {"age": "thirty", "plan": "free"}}),
                         400, "traits.age", "not a valid number", "'age'")
    assert error["code"] in ("input.type_mismatch", "input.invalid")
    assert_error(api.send("group", {"userId": "existing", "groupId": "g-1",
                                    "traits": {"tier": "bronze"}}), 400, "traits.tier", "enum")
    api.delete("/fields/age")
    api.delete("/fields/tier")


def test_declared_field_values_are_coerced(api: Api) -> None:
    assert api.post("/fields", {"name": "age", "type": "number"}).status_code == 201
    assert api.post("/fields", {"name": "born", "type": "date"}).status_code == 201
    api.ok("identify", {"userId": "typed", "traits": {"age": "42", "born": "1990-02-03T10:00"}})
    assert api.contact_by("user_id", "typed")["attributes"] == {"age": 42, "born": "1990-02-03"}


# --- Duplicates ------------------------------------------------------------------------------


def test_duplicate_message_ids_in_one_batch(api: Api, store: Store) -> None:
    message = {"type": "track", "userId": "d", "event": "Paid", "messageId": "dup-1"}
    response = api.ok("batch", {"batch": [message, {**message, "event": "Paid again"},
                                          {**message, "messageId": "dup-2"}]})
    assert (response["accepted"], response["duplicates"], response["rejected"]) == (2, 1, [])
    assert [(e["message_id"], e["name"]) for e in stored_events(store)] == [
        ("dup-1", "Paid"), ("dup-2", "Paid")]


def test_duplicate_message_ids_across_requests(api: Api, store: Store) -> None:
    message = {"userId": "d", "event": "Paid", "messageId": "dup-x"}
    assert api.ok("track", message)["accepted"] == 1
    before = snapshot(store)
    assert api.ok("track", message) == {"success": True, "accepted": 0, "duplicates": 1,
                                        "rejected": []}
    again = api.ok("batch", {"batch": [{"type": "track", **message},
                                       {"type": "identify", "userId": "d",
                                        "messageId": "dup-x", "traits": {"plan": "x"}}]})
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    # A duplicate changes nothing, not even the traits its copy carries.
    assert snapshot(store) == before


def test_valid_copy_of_a_rejected_message_is_not_a_duplicate(api: Api, store: Store) -> None:
    response = api.ok("batch", {"batch": [
        {"type": "identify", "userId": "x", "messageId": "same", "traits": {"email": "bad"}},
        {"type": "identify", "userId": "x", "messageId": "same",
         "traits": {"email": "x@example.com"}}]})
    assert [r["index"] for r in response["rejected"]] == [0]
    assert (response["accepted"], response["duplicates"]) == (1, 0)
    assert [e["message_id"] for e in stored_events(store)] == ["same"]


def test_duplicates_in_concurrent_requests(base_url: str, keys: Keys, store: Store) -> None:
    # Concurrent requests share a group commit; the same messageId in many of them is still
    # stored once, and every request hears which of its messages were duplicates.
    def send(number: int) -> dict[str, Any]:
        with httpx.Client(base_url=base_url, timeout=10) as http:
            response = http.post("/v1/batch", auth=(keys.write, ""), json={"batch": [
                {"type": "track", "userId": f"c-{number % 5}", "event": "Shared",
                 "messageId": "shared"},
                {"type": "track", "userId": f"c-{number % 5}", "event": "Own",
                 "messageId": f"own-{number}"}]})
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(send, range(48)))
    assert sum(r["accepted"] for r in results) == 49
    assert sum(r["duplicates"] for r in results) == 47
    assert all(r["rejected"] == [] for r in results)
    names = [e["name"] for e in stored_events(store)]
    assert (names.count("Shared"), names.count("Own")) == (1, 48)
    assert count(store, schema.contacts) == 5


# --- Mixed batches -------------------------------------------------------------------------------


def test_mixed_batch_stores_the_valid_and_lists_the_rest(api: Api, store: Store,
                                                         clock: FakeClock) -> None:
    batch = [
        {"type": "track", "userId": "m-1", "event": "Good 0"},                       # 0
        {"type": "purchase", "userId": "m-2", "event": "Bad type"},                  # 1
        {"type": "identify", "userId": "m-3", "traits": {"email": "nope"},
         "messageId": "bad-2"},                                                      # 2
        {"type": "track", "anonymousId": "m-anon", "event": "Good 3"},               # 3
        _padded(MAX_MESSAGE_BYTES + 1),                                              # 4
        "not an object",                                                             # 5
        {"type": "track", "userId": "m-6", "event": "Future",
         "timestamp": iso(clock.now_ms() + 30 * DAY)},                               # 6
        {"type": "group", "userId": "m-7"},                                          # 7
        {"type": "identify", "userId": "m-1", "traits": {"plan": "ok"},
         "messageId": "good-8"},                                                     # 8
        {"type": "alias", "userId": "m-9"},                                          # 9
    ]
    response = api.ok("batch", {"batch": batch})
    assert response["accepted"] == 3
    assert response["duplicates"] == 0
    rejected = {r["index"]: r for r in response["rejected"]}
    assert [r["index"] for r in response["rejected"]] == sorted(rejected)
    assert {i: r["field"] for i, r in rejected.items()} == {
        1: "type", 2: "traits.email", 4: "", 5: "", 6: "timestamp", 7: "groupId",
        9: "previousId"}
    assert all(r["reason"] for r in rejected.values())
    assert rejected[2]["messageId"] == "bad-2"
    assert rejected[1]["messageId"] is None
    assert [e["name"] for e in stored_events(store)] == ["Good 0", "Good 3", "identify"]
    assert api.get_ok("/contacts", user_id="m-3")["items"] == []
    assert api.get_ok("/contacts", user_id="m-6")["items"] == []
    assert api.contact_by("user_id", "m-1")["attributes"] == {"plan": "ok"}
    assert count(store, schema.contacts) == 2
    assert count(store, schema.companies) == 0


# --- Hostile strings ------------------------------------------------------------------------------

HOSTILE = [
    "Robert'); DROP TABLE events;--",
    "' OR '1'='1",
    "\"; DELETE FROM contacts WHERE \"\" = \"",
    "名前 🎉 émoji ﷽ \u202eoverride",
    "line\nbreak\ttab\r\n",
    "\\u0000 not a nul, just text",
    "<script>alert(1)</script>",
    "%s %d {0} $1 ?",
    "\U0010ffff\uffff",
]


def test_hostile_strings_stored_verbatim(api: Api, store: Store) -> None:
    for number, text in enumerate(HOSTILE, start=1):
        api.ok("identify", {"userId": text, "anonymousId": text,
                            "traits": {text: text, "nested": {text: [text]}}})
        api.ok("track", {"userId": text, "event": text, "messageId": text,
                         "properties": {text: text}, "context": {"page": {"title": text}}})
        api.ok("group", {"userId": text, "groupId": text, "traits": {"name": text}})
        profile = api.contact_by("user_id", text)
        assert profile["attributes"] == {text: text, "nested": {text: [text]}}, text
        assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
            ("user_id", text), ("anonymous_id", text)}, text
        assert profile["companies"][0]["group_id"] == text
        assert profile["companies"][0]["name"] == text
        [track] = api.all_events(name=text)
        assert (track["message_id"], track["properties"]) == (text, {text: text})
        assert track["context"] == {"page": {"title": text}}
        assert count(store, schema.events) == 3 * number
        assert count(store, schema.contacts) == number


def test_long_event_names(api: Api, store: Store) -> None:
    longest = "E" * 256
    assert api.ok("track", {"userId": "u", "event": longest})["accepted"] == 1
    before = snapshot(store)
    assert_error(api.send("track", {"userId": "u", "event": longest + "E"}), 400, "event",
                 "1 to 256")
    assert_error(api.send("track", {"userId": "u", "event": "E" * 30_000}), 400, "event",
                 "1 to 256")
    assert snapshot(store) == before
    assert [e["name"] for e in stored_events(store)] == [longest]


NUL_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"userId": "u", "event": "Sign\x00ed Up"}, "event"),
    ({"userId": "u\x00", "event": "E"}, "userId"),
    ({"anonymousId": "\x00", "event": "E"}, "anonymousId"),
    ({"userId": "u", "event": "E", "messageId": "m\x00"}, "messageId"),
    ({"userId": "u", "event": "E", "properties": {"note": "a\x00b"}}, "properties.note"),
    ({"userId": "u", "event": "E", "properties": {"a\x00": 1}}, "properties"),
    ({"userId": "u", "event": "E", "properties": {"list": [1, {"deep": "\x00"}]}},
     "properties.list[1].deep"),
    ({"userId": "u", "event": "E", "context": {"ua": "\x00"}}, "context.ua"),
]


def test_nul_characters_are_rejected_on_every_dialect(api: Api, store: Store) -> None:
    # PostgreSQL can store a NUL neither in text nor in jsonb; SQLite could. Both refuse it
    # the same way, naming where it was.
    for message, field in NUL_MESSAGES:
        assert_error(api.send("track", message), 400, field, "NUL", case=message)
    assert count(store, schema.events) == 0
    response = api.ok("batch", {"batch": [{"type": "track", "userId": "ok", "event": "Fine"}]
                                + [{"type": "track", **m} for m, _ in NUL_MESSAGES]})
    assert response["accepted"] == 1
    assert [(r["index"], r["field"]) for r in response["rejected"]] == [
        (i, field) for i, (_, field) in enumerate(NUL_MESSAGES, start=1)]
    assert all("NUL" in r["reason"] for r in response["rejected"])
    assert [e["name"] for e in stored_events(store)] == ["Fine"]
    assert count(store, schema.contacts) == 1
    # Text that merely spells the escape is not a NUL.
    assert api.ok("track", {"userId": "ok", "event": "\\u0000"})["accepted"] == 1


def test_big_numbers_in_properties(api: Api, store: Store) -> None:
    api.ok("track", {"userId": "n", "event": "Numbers", "properties": {
        "u64": 18446744073709551615, "i64": -9223372036854775808, "tiny": 5e-324,
        "huge": 1.7976931348623157e308}})
    [event] = stored_events(store)
    assert event["properties"]["i64"] == -9223372036854775808
    assert event["properties"]["huge"] == 1.7976931348623157e308


def test_deeply_nested_properties(api: Api, store: Store) -> None:
    deep: Any = "bottom"
    for _ in range(300):
        deep = {"d": deep}
    message = {"userId": "u", "event": "Deep", "properties": deep}
    before = snapshot(store)
    assert_error(api.send("track", message), 400, "body", "")
    assert snapshot(store) == before
    response = api.ok("batch", {"batch": [{"type": "track", **message},
                                          {"type": "track", "userId": "u", "event": "Flat"}]})
    assert [r["index"] for r in response["rejected"]] == [0]
    assert [e["name"] for e in stored_events(store)] == ["Flat"]
