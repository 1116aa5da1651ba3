"""The Segment HTTP Tracking API contract, checked with the real client libraries and by hand.

The official Segment library (`segment.analytics`) and RudderStack's (`rudderstack.analytics`)
are pointed at the test server and send every call; the admin API must then show what they
said. Their timestamps are the real wall clock while the server's clock is the test's
FakeClock, set a month behind the wall clock: a server that did not correct clock skew from
`sentAt` would see every event a month in the future and reject it (the limit is 24 h), and
one that corrected it wrongly would store times far from the server's receive time.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import pytest
import rudderstack.analytics.client as rudder_client  # type: ignore[import-untyped]
import rudderstack.analytics.request as rudder_request  # type: ignore[import-untyped]
import segment.analytics.client as segment_client  # type: ignore[import-untyped]
import segment.analytics.request as segment_request  # type: ignore[import-untyped]

from cadenza.clock import FakeClock
from cadenza.store import Store, schema
from tests.api.conftest import Keys
from tests.api.support import Api, count, iso, snapshot, stored_events

HOUR = 3_600_000
DAY = 24 * HOUR
SKEW_TOLERANCE_MS = 10_000
"""Real time that may pass between a library stamping an event and stamping `sentAt`."""


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def wall_ms() -> int:
    """The real wall clock (what the client libraries stamp events with)."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


class Analytics(Protocol):
    """What the Segment and RudderStack clients have in common."""

    def identify(self, *args: Any, **kwargs: Any) -> Any: ...
    def track(self, *args: Any, **kwargs: Any) -> Any: ...
    def page(self, *args: Any, **kwargs: Any) -> Any: ...
    def screen(self, *args: Any, **kwargs: Any) -> Any: ...
    def group(self, *args: Any, **kwargs: Any) -> Any: ...
    def alias(self, *args: Any, **kwargs: Any) -> Any: ...


class Library:
    """One client library configured against the test server, in one delivery mode."""

    def __init__(self, name: str, client: Any, flush: Callable[[], None],
                 errors: list[Exception]) -> None:
        self.name = name
        self.client: Analytics = client
        self.flush = flush
        self.errors = errors


LIBRARIES = ("segment-sync", "segment-gzip-sync", "rudderstack-gzip-flush")


def make_library(variant: str, base_url: str, write_key: str) -> tuple[Library, Callable[[], None]]:
    """A configured client and a function that shuts it down."""
    errors: list[Exception] = []

    def on_error(exc: Exception, _batch: Any) -> None:
        errors.append(exc)

    if variant.startswith("segment"):
        seg = segment_client.Client(write_key, host=base_url, sync_mode=True,
                                    gzip="gzip" in variant, max_retries=0, timeout=10,
                                    on_error=on_error)
        return Library(variant, seg, lambda: None, errors), lambda: None
    # RudderStack in its default mode: a consumer thread batches the queue (gzip on by
    # default); flush() waits until the queue is empty.
    rud = rudder_client.Client(write_key, host=base_url, sync_mode=False, max_retries=0,
                               timeout=10, upload_interval=0.05, on_error=on_error)

    def stop() -> None:
        for consumer in rud.consumers or []:
            consumer.pause()
            consumer.join(timeout=10)

    return Library(variant, rud, rud.flush, errors), stop


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest, base_url: str, keys: Keys) -> Iterator[Library]:
    """Each client library, pointed at the test server with the write key."""
    lib, stop = make_library(request.param, base_url, keys.write)
    try:
        yield lib
    finally:
        stop()


@pytest.fixture
def behind(clock: FakeClock) -> int:
    """Set the server's clock 30 days behind the wall clock; return the server's now."""
    clock.set(wall_ms() - 30 * DAY)
    return clock.now_ms()


def test_library_calls_all_arrive(library: Library, api: Api, store: Store, behind: int) -> None:
    lib = library.client
    hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    sent: dict[str, Any] = {}
    sent["page"] = lib.page(anonymous_id="anon-1", category="Marketing", name="Pricing",
                            properties={"path": "/pricing", "referrer": "search"})[1]
    sent["screen"] = lib.screen(anonymous_id="anon-1", name="Home",
                                properties={"variant": "b"})[1]
    sent["viewed"] = lib.track(anonymous_id="anon-1", event="Viewed Plan",
                               properties={"plan": "pro", "price": 49.5}, timestamp=hours_ago)[1]
    sent["identify"] = lib.identify(user_id="u-42", traits={
        "email": "  Ada.Lovelace@Example.COM ", "phone": "+1 415 555 0100", "name": "Ada",
        "plan": "pro", "timezone": "Europe/London", "seats": 3})[1]
    sent["group"] = lib.group(user_id="u-42", group_id="acme", traits={
        "name": "Acme Inc", "website": "https://www.acme.example/about", "employees": 120})[1]
    # Flush first so that both contacts are stored before the alias joins them (a batching
    # library might otherwise put them all in one request).
    library.flush()
    sent["alias"] = lib.alias(previous_id="anon-1", user_id="u-42")[1]
    sent["order"] = lib.track(user_id="u-42", event="Order Completed", properties={
        "order_id": "o-1", "total": 99.9, "items": [{"sku": "a", "qty": 2}], "gift": False})[1]
    library.flush()
    assert library.errors == []

    # One live contact holds everything: the alias merged the anonymous visitor into u-42.
    profile = api.contact_by("user_id", "u-42")
    assert api.get_ok("/contacts", anonymous_id="anon-1")["items"][0]["id"] == profile["id"]
    assert profile["email"] == "ada.lovelace@example.com"
    assert profile["phone"] == "+14155550100"
    assert profile["timezone"] == "Europe/London"
    assert profile["attributes"] == {"name": "Ada", "plan": "pro", "seats": 3}
    identities = {(i["kind"], i["value"]) for i in profile["identities"]}
    assert identities == {("user_id", "u-42"), ("anonymous_id", "anon-1"),
                          ("email", "ada.lovelace@example.com"), ("phone", "+14155550100")}
    [merge] = profile["merges"]
    assert (merge["winner_id"], merge["reason"], merge["outcome"]) == (profile["id"], "alias",
                                                                       "merged")
    assert merge["message_id"] == sent["alias"]["messageId"]
    [company] = profile["companies"]
    assert (company["group_id"], company["name"], company["domain"]) == (
        "acme", "Acme Inc", "acme.example")
    account = api.get_ok(f"/companies/{company['id']}")
    assert account["attributes"]["employees"] == 120
    assert [m["id"] for m in account["members"]["items"]] == [profile["id"]]
    assert account["member_count"] == 1

    # Every call is one event with the library's message id, name and properties.
    assert len(profile["timeline"]["items"]) == len(sent)
    timeline = {e["message_id"]: e for e in api.all_events(contact_id=profile["id"])}
    assert set(timeline) == {m["messageId"] for m in sent.values()}
    by_key = {key: timeline[m["messageId"]] for key, m in sent.items()}
    assert {k: (e["type"], e["name"]) for k, e in by_key.items()} == {
        "page": ("page", "Pricing"), "screen": ("screen", "Home"),
        "viewed": ("track", "Viewed Plan"), "identify": ("identify", "identify"),
        "group": ("group", "group"), "alias": ("alias", "alias"),
        "order": ("track", "Order Completed")}
    assert by_key["page"]["properties"] == {"path": "/pricing", "referrer": "search",
                                            "category": "Marketing"}
    assert by_key["viewed"]["properties"] == {"plan": "pro", "price": 49.5}
    assert by_key["order"]["properties"] == {"order_id": "o-1", "total": 99.9,
                                             "items": [{"sku": "a", "qty": 2}], "gift": False}
    assert by_key["group"]["properties"]["name"] == "Acme Inc"
    assert all(e["source"] == "api" for e in by_key.values())
    rows = {r["message_id"]: r for r in stored_events(store)}
    assert rows[sent["order"]["messageId"]]["context"]["library"]["name"] == "analytics-python"

    # Skew correction: the server received everything at its own `now`; an event stamped
    # "now" by the client lands at the server's now (not a month later), and one stamped three
    # hours before sending lands three hours before the server's now.
    for key, event in by_key.items():
        assert event["received_at"] == behind
        expected = behind - 3 * HOUR if key == "viewed" else behind
        assert expected - SKEW_TOLERANCE_MS <= event["timestamp"] <= expected, (key, event)


def test_library_sees_auth_errors_as_4xx(base_url: str, store: Store, keys: Keys) -> None:
    # A 4xx must reach the library as its APIError with the status (so it does not retry),
    # which needs the error body to carry a top-level `code` and `message`.
    before = snapshot(store)
    seg = segment_client.Client("not-a-key", host=base_url, sync_mode=True, max_retries=0)
    with pytest.raises(segment_request.APIError) as seg_error:
        seg.track(user_id="u1", event="Nope")
    assert seg_error.value.status == 401
    assert seg_error.value.code == "auth.invalid"
    assert "unknown api key" in seg_error.value.message.lower()
    rud = rudder_client.Client("not-a-key", host=base_url, sync_mode=True, max_retries=0)
    with pytest.raises(rudder_request.APIError) as rud_error:
        rud.track(user_id="u1", event="Nope")
    assert rud_error.value.status == 401
    assert rud_error.value.code == "auth.invalid"
    assert snapshot(store) == before


def test_library_batch_of_many_arrives_once(base_url: str, keys: Keys, api: Api,
                                            store: Store, behind: int) -> None:
    rud = rudder_client.Client(keys.write, host=base_url, upload_size=50, upload_interval=0.05,
                               max_retries=0)
    try:
        ids = [rud.track(user_id=f"user-{i % 7}", event="Clicked", properties={"n": i})[1]
               ["messageId"] for i in range(230)]
        rud.flush()
    finally:
        for consumer in rud.consumers or []:
            consumer.pause()
            consumer.join(timeout=10)
    events = api.all_events(name="Clicked")
    assert sorted(e["message_id"] for e in events) == sorted(ids)
    assert sorted(e["properties"]["n"] for e in events) == list(range(230))
    assert count(store, schema.contacts) == 7
    assert all(behind - SKEW_TOLERANCE_MS <= e["timestamp"] <= behind for e in events)


# --- Each call by hand: response body and what was stored --------------------------------


def test_identify_contract(api: Api, store: Store, clock: FakeClock) -> None:
    body = api.ok("identify", {
        "userId": "u-1", "anonymousId": "a-1", "messageId": "m-identify",
        "timestamp": iso(clock.now_ms() - 60_000),
        "traits": {"email": "U1@Example.org", "phone": "+33 6 12 34 56 78", "plan": "free",
                   "timezone": "Europe/Paris", "locale": "fr-FR"},
        "context": {"ip": "203.0.113.9"}})
    assert body == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    profile = api.contact_by("email", "u1@example.org")
    assert (profile["user_id"], profile["email"], profile["phone"], profile["timezone"],
            profile["locale"]) == ("u-1", "u1@example.org", "+33612345678", "Europe/Paris",
                                   "fr-FR")
    assert profile["attributes"] == {"plan": "free"}
    [event] = stored_events(store)
    assert (event["message_id"], event["type"], event["name"]) == ("m-identify", "identify",
                                                                   "identify")
    assert event["timestamp"] == clock.now_ms() - 60_000
    assert event["received_at"] == clock.now_ms()
    assert event["context"] == {"ip": "203.0.113.9"}
    assert event["properties"]["plan"] == "free"
    # A later identify updates traits; null removes one.
    api.ok("identify", {"userId": "u-1", "traits": {"plan": "pro", "seats": 2}})
    api.ok("identify", {"userId": "u-1", "traits": {"seats": None}})
    assert api.contact_by("user_id", "u-1")["attributes"] == {"plan": "pro"}


def test_track_contract(api: Api, store: Store, clock: FakeClock) -> None:
    body = api.ok("track", {"anonymousId": "a-9", "event": "Signed Up", "messageId": "m-track",
                            "properties": {"plan": "pro", "nested": {"x": [1, 2.5, None]}}})
    assert body == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    [event] = stored_events(store)
    assert (event["type"], event["name"], event["properties"]) == (
        "track", "Signed Up", {"plan": "pro", "nested": {"x": [1, 2.5, None]}})
    assert event["timestamp"] == clock.now_ms()  # no timestamp: the receive time
    contact = api.contact_by("anonymous_id", "a-9")
    assert contact["user_id"] is None
    assert event["contact_id"] == contact["id"]


@pytest.mark.parametrize("call", ["page", "screen"])
def test_page_and_screen_contract(api: Api, store: Store, call: str) -> None:
    api.ok(call, {"userId": "u-2", "name": "Checkout", "category": "Shop",
                  "properties": {"url": "https://shop.example/checkout"}})
    api.ok(call, {"userId": "u-2"})
    first, second = stored_events(store)
    assert (first["type"], first["name"], first["properties"]) == (
        call, "Checkout", {"url": "https://shop.example/checkout", "category": "Shop"})
    assert (second["type"], second["name"], second["properties"]) == (call, call, {})
    assert first["contact_id"] == second["contact_id"]


def test_group_contract(api: Api, store: Store) -> None:
    api.ok("group", {"userId": "u-3", "groupId": 1234,
                     "traits": {"name": "Initech", "domain": "Initech.example", "tier": "gold"}})
    api.ok("group", {"userId": "u-4", "groupId": "1234", "traits": {"tier": "platinum"}})
    profile = api.contact_by("user_id", "u-3")
    [company] = profile["companies"]
    assert (company["group_id"], company["name"], company["domain"]) == (
        "1234", "Initech", "initech.example")
    account = api.get_ok(f"/companies/{company['id']}")
    assert account["attributes"] == {"name": "Initech", "domain": "Initech.example",
                                     "tier": "platinum"}
    assert account["member_count"] == 2
    assert count(store, schema.companies) == 1


def test_alias_contract(api: Api, store: Store) -> None:
    api.ok("track", {"anonymousId": "visitor-7", "event": "Viewed"})
    api.ok("identify", {"userId": "u-7", "traits": {"email": "seven@example.net"}})
    assert count(store, schema.contacts) == 2
    body = api.ok("alias", {"previousId": "visitor-7", "userId": "u-7", "messageId": "m-a"})
    assert body["accepted"] == 1
    profile = api.contact_by("user_id", "u-7")
    assert {e["name"] for e in profile["timeline"]["items"]} == {"Viewed", "identify", "alias"}
    [merge] = profile["merges"]
    assert (merge["outcome"], merge["message_id"], merge["identity_kind"]) == (
        "merged", "m-a", "anonymous_id")
    # The loser is a tombstone that still resolves to the winner.
    loser = api.get_ok(f"/contacts/{merge['loser_id']}")
    assert loser["id"] == profile["id"]
    assert loser["requested_id"] == merge["loser_id"]


def test_batch_contract_and_import_alias(api: Api, store: Store, clock: FakeClock) -> None:
    now = clock.now_ms()
    batch = {"batch": [
        {"type": "identify", "userId": "b-1", "traits": {"email": "b1@example.com"}},
        {"type": "track", "userId": "b-1", "event": "Upgraded", "messageId": "bm-1",
         "timestamp": iso(now - 10 * 60_000)},
        {"type": "page", "userId": "b-1", "name": "Docs"},
    ], "context": {"library": {"name": "hand-written"}}, "sentAt": iso(now)}
    assert api.ok("batch", batch) == {"success": True, "accepted": 3, "duplicates": 0,
                                      "rejected": []}
    again = api.ok("import", {"batch": [
        {"type": "track", "userId": "b-1", "event": "Upgraded", "messageId": "bm-1"},
        {"type": "track", "userId": "b-1", "event": "Downgraded"}]})
    assert again == {"success": True, "accepted": 1, "duplicates": 1, "rejected": []}
    events = stored_events(store)
    assert [e["name"] for e in events] == ["identify", "Upgraded", "Docs", "Downgraded"]
    assert events[1]["timestamp"] == now - 10 * 60_000
    # The batch context fills in messages that have none of their own.
    assert events[0]["context"] == {"library": {"name": "hand-written"}}
    assert events[3]["context"] == {}
    assert len({e["contact_id"] for e in events}) == 1


def test_write_key_in_batch_body(client: httpx.Client, keys: Keys, store: Store) -> None:
    response = client.post("/v1/batch", json={
        "writeKey": keys.write, "batch": [{"type": "track", "userId": "w", "event": "E"}]})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert count(store, schema.events) == 1


def test_gzip_body_accepted(api: Api, store: Store) -> None:
    body = b'{"batch": [{"type": "track", "userId": "z", "event": "Zipped"}]}'
    response = api.send_raw("batch", gzip.compress(body), {"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert [e["name"] for e in stored_events(store)] == ["Zipped"]


def test_numeric_ids_are_strings(api: Api) -> None:
    api.ok("identify", {"userId": 42, "anonymousId": 7, "traits": {"plan": "x"}})
    profile = api.contact_by("user_id", "42")
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("user_id", "42"), ("anonymous_id", "7")}
