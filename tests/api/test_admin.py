"""The admin API's read side and consent: search, profile, cursor pagination, consent history,
and its bad-input cases (unknown ids, tampered cursors, limits out of range)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error, iso, snapshot

MINUTE = 60_000


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


@pytest.fixture
def people(api: Api) -> dict[str, int]:
    """Three contacts, a company and a merge; their ids by user id."""
    api.ok("batch", {"batch": [
        {"type": "identify", "userId": "u-1", "anonymousId": "a-1", "traits": {
            "email": "Ada@Example.com", "phone": "+1 415 555 0100", "plan": "pro", "age": 36,
            "vip": True, "tier": "gold"}},
        {"type": "identify", "userId": "u-2", "traits": {"email": "bob@example.com",
                                                         "plan": "free", "age": "36"}},
        {"type": "identify", "userId": "u-3", "traits": {"email": "adam@example.org",
                                                         "plan": "pro"}},
        {"type": "group", "userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}},
        {"type": "group", "userId": "u-3", "groupId": "acme"},
        {"type": "track", "anonymousId": "visitor-9", "event": "Viewed Pricing"},
    ]})
    api.ok("alias", {"previousId": "visitor-9", "userId": "u-2"})
    return {uid: api.contact_by("user_id", uid)["id"] for uid in ("u-1", "u-2", "u-3")}


def ids_of(page: dict[str, Any]) -> list[int]:
    """The contact ids of a search page."""
    return [item["id"] for item in page["items"]]


# --- Search -------------------------------------------------------------------------------


def test_search_by_each_identity_kind(api: Api, people: dict[str, int]) -> None:
    ada = people["u-1"]
    for params in ({"user_id": "u-1"}, {"anonymous_id": "a-1"},
                   {"email": "ada@example.com"}, {"email": "  ADA@Example.COM "},
                   {"phone": "+14155550100"}, {"phone": "+1 (415) 555-0100"}):
        assert ids_of(api.get_ok("/contacts", **params)) == [ada], params
    # The alias made visitor-9 an identity of u-2.
    assert ids_of(api.get_ok("/contacts", anonymous_id="visitor-9")) == [people["u-2"]]
    assert api.get_ok("/contacts", user_id="nobody")["items"] == []
    assert api.get_ok("/contacts", email="nobody@example.com")["items"] == []


def test_search_by_email_prefix(api: Api, people: dict[str, int]) -> None:
    assert ids_of(api.get_ok("/contacts", q="ada")) == [people["u-3"], people["u-1"]]
    assert ids_of(api.get_ok("/contacts", q="ADA@")) == [people["u-1"]]
    assert ids_of(api.get_ok("/contacts", q="b")) == [people["u-2"]]
    assert api.get_ok("/contacts", q="zed")["items"] == []
    # Characters that mean something to LIKE are plain text here.
    assert api.get_ok("/contacts", q="%")["items"] == []
    assert api.get_ok("/contacts", q="_da")["items"] == []


def test_search_by_attribute_and_company(api: Api, people: dict[str, int]) -> None:
    assert ids_of(api.get_ok("/contacts", attr="plan:pro")) == [people["u-3"], people["u-1"]]
    assert ids_of(api.get_ok("/contacts", attr=["plan:pro", "tier:gold"])) == [people["u-1"]]
    assert api.get_ok("/contacts", attr=["plan:free", "tier:gold"])["items"] == []
    assert ids_of(api.get_ok("/contacts", attr="plan:free")) == [people["u-2"]]
    assert ids_of(api.get_ok("/contacts", attr="age:36", q="bob")) == [people["u-2"]]
    assert api.get_ok("/contacts", attr="plan:enterprise")["items"] == []
    company = api.contact_by("user_id", "u-1")["companies"][0]["id"]
    assert ids_of(api.get_ok("/contacts", company_id=company)) == [people["u-3"], people["u-1"]]
    assert ids_of(api.get_ok("/contacts", company_id=company, attr="plan:pro",
                             q="adam")) == [people["u-3"]]


def test_search_by_numeric_and_boolean_attributes(api: Api, people: dict[str, int]) -> None:
    # `attr=age:36` must find the contact whose age is the number 36 on every dialect, as it
    # finds the one whose age is the string "36".
    assert ids_of(api.get_ok("/contacts", attr="age:36")) == [people["u-2"], people["u-1"]]
    assert ids_of(api.get_ok("/contacts", attr="vip:true")) == [people["u-1"]]


def test_search_pagination(api: Api, people: dict[str, int]) -> None:
    first = api.get_ok("/contacts", limit=2)
    assert ids_of(first) == [people["u-3"], people["u-2"]]
    second = api.get_ok("/contacts", limit=2, cursor=first["next_cursor"])
    assert ids_of(second) == [people["u-1"]]
    assert second["next_cursor"] is None


@pytest.mark.usefixtures("people")
def test_search_bad_input(api: Api) -> None:
    assert_error(api.get("/contacts", email="a@example.com", user_id="u-1"), 400, "user_id",
                 "one identity at a time")
    assert_error(api.get("/contacts", email="not an email"), 400, "email", "not a valid email")
    assert_error(api.get("/contacts", phone="call me"), 400, "phone", "not a phone number")
    assert_error(api.get("/contacts", attr="plan"), 400, "attr", "name:value")
    assert_error(api.get("/contacts", attr=":pro"), 400, "attr", "name:value")
    assert_error(api.get("/contacts", company_id="acme"), 400, "company_id", "integer")


# --- Profile -----------------------------------------------------------------------------


def test_profile(api: Api, people: dict[str, int], clock: FakeClock) -> None:
    ada = people["u-1"]
    clock.advance(MINUTE)
    api.ok("track", {"userId": "u-1", "event": "Logged In"})
    assert api.post(f"/contacts/{ada}/consent", {"channel": "email", "purpose": "marketing",
                                                 "status": "opted_in"}).status_code == 200
    assert api.post("/suppressions", {"kind": "phone", "address": "+14155550100",
                                      "reason": "complaint"}).status_code == 201
    profile = api.get_ok(f"/contacts/{ada}")
    assert (profile["id"], profile["user_id"], profile["email"], profile["phone"]) == (
        ada, "u-1", "ada@example.com", "+14155550100")
    assert profile["attributes"] == {"plan": "pro", "age": 36, "vip": True, "tier": "gold"}
    assert {(i["kind"], i["value"]) for i in profile["identities"]} == {
        ("user_id", "u-1"), ("anonymous_id", "a-1"), ("email", "ada@example.com"),
        ("phone", "+14155550100")}
    assert [(c["group_id"], c["name"]) for c in profile["companies"]] == [("acme", "Acme")]
    assert [(c["channel"], c["purpose"], c["status"]) for c in profile["consent"]] == [
        ("email", "marketing", "opted_in")]
    assert [(s["kind"], s["reason"]) for s in profile["suppressions"]] == [
        ("phone", "complaint")]
    assert profile["merges"] == []
    # The timeline is newest first.
    assert [e["name"] for e in profile["timeline"]["items"]] == ["Logged In", "group",
                                                                "identify"]
    short = api.get_ok(f"/contacts/{ada}", events_limit=1)["timeline"]
    assert [e["name"] for e in short["items"]] == ["Logged In"]
    assert short["next_cursor"] is not None


def test_profile_shows_merges(api: Api, people: dict[str, int]) -> None:
    bob = api.get_ok(f"/contacts/{people['u-2']}")
    [merge] = bob["merges"]
    assert (merge["winner_id"], merge["reason"], merge["outcome"], merge["identity_value"]) == (
        people["u-2"], "alias", "merged", "visitor-9")
    assert {e["name"] for e in bob["timeline"]["items"]} == {"identify", "Viewed Pricing",
                                                              "alias"}
    # The merged-away contact answers with the winner's profile.
    loser = api.get_ok(f"/contacts/{merge['loser_id']}")
    assert (loser["id"], loser["requested_id"]) == (people["u-2"], merge["loser_id"])


@pytest.mark.usefixtures("people")
def test_unknown_contact_and_company(api: Api) -> None:
    for path in ("/contacts/999999", "/contacts/999999/events",
                 "/contacts/999999/consent/history", "/companies/999999"):
        error = assert_error(api.get(path), 404, None, "not found", case=path)
        assert error["code"] == "not_found"
        assert error["key"] == "999999"
    response = api.post("/contacts/999999/consent", {"channel": "email",
                                                     "purpose": "marketing",
                                                     "status": "opted_in"})
    assert_error(response, 404, None, "contact 999999 not found")


@pytest.mark.usefixtures("people")
def test_ids_that_are_not_ids(api: Api) -> None:
    for path, field in (("/contacts/abc", "contact_id"), ("/contacts/1.5", "contact_id"),
                        ("/companies/acme", "company_id"), ("/contacts/0", "contact_id"),
                        ("/contacts/-3/events", "contact_id"),
                        ("/contacts/99999999999999999999999", "contact_id"),
                        ("/companies/99999999999999999999", "company_id")):
        assert_error(api.get(path), 400, field, "", case=path)
    assert_error(api.get("/events", contact_id=2**70), 400, "contact_id", "")
    assert_error(api.get("/contacts", company_id=2**70), 400, "company_id", "")


# --- Cursor pagination over events ---------------------------------------------------------


@pytest.fixture
def many_events(api: Api, clock: FakeClock) -> list[dict[str, Any]]:
    """137 events over three contacts, many sharing a timestamp (ties broken by id)."""
    now = clock.now_ms()
    batch = []
    for i in range(137):
        batch.append({"type": "track", "userId": f"p-{i % 3}", "event": f"E{i % 4}",
                      "messageId": f"pm-{i}", "timestamp": iso(now - (i // 10) * MINUTE),
                      "properties": {"i": i}})
    assert api.ok("batch", {"batch": batch[:70]})["accepted"] == 70
    assert api.ok("batch", {"batch": batch[70:]})["accepted"] == 67
    return api.all_events()


def walk(api: Api, path: str, limit: int, cursor: str | None = None,
         **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing from `cursor` on, page by page, checking each page's size."""
    items: list[dict[str, Any]] = []
    while True:
        page = api.get_ok(path, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit


@pytest.mark.parametrize("limit", [1, 7, 10, 136, 137, 500])
def test_event_pages_walk_every_event_once(api: Api, many_events: list[dict[str, Any]],
                                           limit: int) -> None:
    walked = walk(api, "/events", limit)
    assert len(many_events) == 137
    assert [e["id"] for e in walked] == [e["id"] for e in many_events]
    assert len({e["id"] for e in walked}) == 137
    keys = [(e["timestamp"], e["id"]) for e in walked]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id


def test_event_pages_with_filters(api: Api, many_events: list[dict[str, Any]],
                                  clock: FakeClock) -> None:
    now = clock.now_ms()
    for params in ({"name": "E1"}, {"type": "track"}, {"since": iso(now - 5 * MINUTE)},
                   {"until": str(now - 3 * MINUTE)}, {"name": "E2", "since": now - 9 * MINUTE,
                                                      "until": iso(now)}):
        expected = [e["id"] for e in many_events if _matches(e, params, now)]
        assert [e["id"] for e in walk(api, "/events", 4, **params)] == expected, params
        assert expected, params
    contact = many_events[0]["contact_id"]
    mine = [e["id"] for e in many_events if e["contact_id"] == contact]
    assert [e["id"] for e in walk(api, f"/contacts/{contact}/events", 5)] == mine
    assert [e["id"] for e in walk(api, "/events", 6, contact_id=contact)] == mine


def _matches(event: dict[str, Any], params: dict[str, Any], now: int) -> bool:
    def ms(value: Any) -> int:
        text = str(value)
        return int(text) if text.lstrip("-").isdigit() else _iso_ms(text)

    return ((params.get("name") in (None, event["name"]))
            and (params.get("type") in (None, event["type"]))
            and ("since" not in params or event["timestamp"] >= ms(params["since"]))
            and ("until" not in params or event["timestamp"] < ms(params["until"])))


def _iso_ms(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_events_arriving_during_a_walk(api: Api, many_events: list[dict[str, Any]],
                                       clock: FakeClock) -> None:
    # Keyset pages are stable: events stored mid-walk (newer, or older than the cursor) never
    # shift the pages, so nothing is seen twice and nothing already listed is skipped.
    first = api.get_ok("/events", limit=50)
    api.ok("track", {"userId": "p-0", "event": "Newer", "timestamp": iso(clock.now_ms() + 1)})
    rest = walk(api, "/events", 50, cursor=first["next_cursor"])
    walked = [e["id"] for e in first["items"] + rest]
    assert walked == [e["id"] for e in many_events]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.usefixtures("people")
def test_tampered_cursors(api: Api, store: Store) -> None:
    page = api.get_ok("/events", limit=1)
    assert page["next_cursor"]
    contact = page["items"][0]["contact_id"]
    before = snapshot(store)
    tampered = ["garbage", "!!!!", "", page["next_cursor"] + "x", _cursor("1.2.3"),
                _cursor("abc.def"), _cursor("1"), _cursor("1.-"), _cursor("1..2"),
                _cursor("1.2."), _cursor("1.x2")]
    for cursor in tampered:
        for path in ("/events", f"/contacts/{contact}/events"):
            response = api.get(path, cursor=cursor)
            assert_error(response, 400, "cursor", "not a cursor this API returned",
                         case=(path, cursor))
    for cursor in ("garbage", _cursor("1.2"), _cursor("x")):
        assert_error(api.get("/contacts", cursor=cursor), 400, "cursor", "not a cursor",
                     case=cursor)
    assert snapshot(store) == before


@pytest.mark.usefixtures("people")
def test_tampered_cursor_with_out_of_range_numbers(api: Api) -> None:
    for cursor in (_cursor("99999999999999999999999.1"), _cursor("1.99999999999999999999999"),
                   _cursor("-99999999999999999999999.1")):
        assert_error(api.get("/events", cursor=cursor), 400, "cursor", "not a cursor",
                     case=cursor)
    assert_error(api.get("/contacts", cursor=_cursor("99999999999999999999")), 400, "cursor",
                 "not a cursor")


@pytest.mark.usefixtures("people")
def test_limits_out_of_range(api: Api, people: dict[str, int]) -> None:
    contact = people["u-1"]
    for path, field in (("/events", "limit"), ("/contacts", "limit"),
                        (f"/contacts/{contact}/events", "limit"), ("/suppressions", "limit"),
                        (f"/contacts/{contact}", "events_limit")):
        for value in (0, -1, 501, 10**30, "ten", ""):
            assert_error(api.get(path, **{field: value}), 400, field, "", case=(path, value))
        assert api.get(path, **{field: 500}).status_code == 200
        assert api.get(path, **{field: 1}).status_code == 200


@pytest.mark.usefixtures("people")
def test_bad_time_filters(api: Api) -> None:
    for value in ("yesterday", "2026-13-01", "--5", "5-", "²", "1e3", "99999999999999999999999",
                  "-99999999999999999999999", "0x10"):
        for field in ("since", "until"):
            assert_error(api.get("/events", **{field: value}), 400, field, "", case=value)
    assert api.get("/events", since="-5").status_code == 200
    assert api.get("/events", since="2026-01-01T00:00:00+02:00").status_code == 200


# --- Consent -----------------------------------------------------------------------------------


def test_consent_and_history(api: Api, people: dict[str, int], clock: FakeClock) -> None:
    ada = people["u-1"]
    first = {"channel": "email", "purpose": "marketing", "status": "opted_in",
             "source": "signup_form", "text_version": "v3", "ip": "203.0.113.7"}
    assert api.post(f"/contacts/{ada}/consent", first).json() == {"changed": True}
    at_first = clock.now_ms()
    clock.advance(MINUTE)
    assert api.post(f"/contacts/{ada}/consent", first).json() == {"changed": False}
    second = {"channel": "email", "purpose": "marketing", "status": "opted_out",
              "source": "preference_center", "ip": "2001:db8::1"}
    assert api.post(f"/contacts/{ada}/consent", second).json() == {"changed": True}
    api.post(f"/contacts/{ada}/consent", {"channel": "sms", "purpose": "alerts",
                                          "status": "pending"})
    history = api.get_ok(f"/contacts/{ada}/consent/history")["items"]
    assert [(h["channel"], h["purpose"], h["status"], h["previous_status"], h["source"],
             h["text_version"], h["ip"]) for h in history] == [
        ("email", "marketing", "opted_in", None, "signup_form", "v3", "203.0.113.7"),
        ("email", "marketing", "opted_out", "opted_in", "preference_center", None,
         "2001:db8::1"),
        ("sms", "alerts", "pending", None, "api", None, None)]
    assert history[0]["at"] == at_first
    assert history[1]["at"] == at_first + MINUTE
    current = api.get_ok(f"/contacts/{ada}")["consent"]
    assert [(c["channel"], c["purpose"], c["status"]) for c in current] == [
        ("email", "marketing", "opted_out"), ("sms", "alerts", "pending")]


def test_consent_on_a_merged_contact_lands_on_the_winner(api: Api,
                                                         people: dict[str, int]) -> None:
    [merge] = api.get_ok(f"/contacts/{people['u-2']}")["merges"]
    response = api.post(f"/contacts/{merge['loser_id']}/consent",
                        {"channel": "email", "purpose": "news", "status": "opted_in"})
    assert response.json() == {"changed": True}
    assert [c["purpose"] for c in api.get_ok(f"/contacts/{people['u-2']}")["consent"]] == [
        "news"]
    assert len(api.get_ok(f"/contacts/{merge['loser_id']}/consent/history")["items"]) == 1


def test_consent_bad_input(api: Api, people: dict[str, int], store: Store) -> None:
    ada = people["u-1"]
    good = {"channel": "email", "purpose": "marketing", "status": "opted_in"}
    before = snapshot(store)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"channel": "emial"}, "channel", "did you mean 'email'"),
        ({"channel": "carrier-pigeon"}, "channel", "not a channel"),
        ({"purpose": "Marketing!"}, "purpose", "lower-case slug"),
        ({"purpose": ""}, "purpose", "slug"),
        ({"status": "maybe"}, "status", ""),
        ({"status": None}, "status", ""),
        ({"ip": "1" * 46}, "ip", "45"),
        ({"source": "s" * 65}, "source", "64"),
        ({"text_version": 3}, "text_version", "string"),
        ({"surprise": 1}, "surprise", "extra"),
    ]
    for change, field, reason in cases:
        response = api.post(f"/contacts/{ada}/consent", {**good, **change})
        assert_error(response, 400, field, reason, case=change)
    missing = {"channel": "email", "status": "opted_in"}
    assert_error(api.post(f"/contacts/{ada}/consent", missing), 400, "purpose", "required")
    not_json = api.client.post(f"/api/contacts/{ada}/consent", content=b"{oops",
                               headers={**api.admin_headers,
                                        "Content-Type": "application/json"})
    assert_error(not_json, 400, None, "")
    assert snapshot(store) == before
