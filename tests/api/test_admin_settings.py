"""The admin API's configuration side: declared fields, the suppression list, API keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cadenza.store import Store, schema
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error, count, snapshot


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


# --- Fields ---------------------------------------------------------------------------------


def test_fields_declare_list_delete(api: Api) -> None:
    age = {"name": "age", "type": "number", "description": "Years"}
    response = api.post("/fields", age)
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "age", "type": "number", "values": [],
                               "item_type": None, "entity": "contact", "description": "Years"}
    tier = {"name": "tier", "type": "enum", "values": ["gold", "silver"], "entity": "company"}
    tags = {"name": "tags", "type": "list", "item_type": "string"}
    assert api.post("/fields", tier).status_code == 201
    assert api.post("/fields", tags).status_code == 201
    listed = api.get_ok("/fields")["items"]
    assert [(f["name"], f["type"], f["entity"]) for f in listed] == [
        ("age", "number", "contact"), ("tags", "list", "contact"), ("tier", "enum", "company")]
    assert listed[2]["values"] == ["gold", "silver"]
    assert listed[1]["item_type"] == "string"
    # Declared types are enforced on ingestion...
    assert_error(api.send("identify", {"userId": "u", "traits": {"tags": ["a", True]}}), 400,
                 "traits.tags[1]", "not a valid string")
    assert api.ok("identify", {"userId": "u", "traits": {"tags": ["a", 2], "age": "3"}})
    assert api.contact_by("user_id", "u")["attributes"] == {"tags": ["a", "2"], "age": 3}
    assert api.delete("/fields/age").json() == {"deleted": True}
    assert api.delete("/fields/age").json() == {"deleted": False}
    assert [f["name"] for f in api.get_ok("/fields")["items"]] == ["tags", "tier"]
    # ...and no longer once the declaration is gone (stored values stay).
    assert api.ok("identify", {"userId": "u", "traits": {"age": "three"}})["accepted"] == 1
    assert api.contact_by("user_id", "u")["attributes"] == {"tags": ["a", "2"], "age": "three"}


def test_conflicting_declaration(api: Api, store: Store) -> None:
    api.ok("identify", {"userId": "u1", "traits": {"plan": "pro", "seats": 5}})
    api.ok("identify", {"userId": "u2", "traits": {"seats": "many"}})
    api.ok("group", {"userId": "u1", "groupId": "g", "traits": {"size": "big"}})
    before = snapshot(store)
    error = assert_error(api.post("/fields", {"name": "seats", "type": "number"}), 409, None,
                         "existing value breaks it", "'many'")
    assert error["code"] == "conflict"
    assert_error(api.post("/fields", {"name": "plan", "type": "enum", "values": ["free"]}),
                 409, None, "'pro'")
    assert_error(api.post("/fields", {"name": "size", "type": "number", "entity": "company"}),
                 409, None, "'big'")
    assert snapshot(store) == before
    assert api.get_ok("/fields")["items"] == []
    # The same declarations that fit the values are accepted.
    assert api.post("/fields", {"name": "plan", "type": "string"}).status_code == 201
    assert api.post("/fields", {"name": "size", "type": "string",
                                "entity": "company"}).status_code == 201
    # Declaring a name twice is a conflict too.
    assert_error(api.post("/fields", {"name": "plan", "type": "string"}), 409, None,
                 "already declared")


def test_field_bad_input(api: Api, store: Store) -> None:
    before = snapshot(store)
    for body, field, reason in [
        ({"name": "email", "type": "string"}, "name", "built-in"),
        ({"name": "1st", "type": "string"}, "name", "letters, digits and underscores"),
        ({"name": "a-b", "type": "string"}, "name", "letters"),
        ({"name": "x" * 129, "type": "string"}, "name", "128"),
        ({"name": "ok", "type": "money"}, "type", ""),
        ({"name": "ok", "type": "enum"}, "values", "at least one value"),
        ({"name": "ok", "type": "list", "item_type": "date"}, "item_type", ""),
        ({"name": "ok", "type": "string", "entity": "deal"}, "entity", ""),
        ({"name": "ok"}, "type", "required"),
        ({"name": "ok", "type": "string", "colour": "red"}, "colour", "extra"),
    ]:
        assert_error(api.post("/fields", body), 400, field, reason, case=body)
    assert snapshot(store) == before


# --- Suppressions -----------------------------------------------------------------------------


def test_suppressions_add_list_delete(api: Api) -> None:
    api.ok("identify", {"userId": "bob", "traits": {"email": "bob@example.com"}})
    added = api.post("/suppressions", {"kind": "email", "address": "  Bob@Example.COM ",
                                       "reason": "hard_bounce", "note": "550 5.1.1"})
    assert added.status_code == 201, added.text
    assert added.json() == {"kind": "email", "address": "bob@example.com",
                            "reason": "hard_bounce"}
    phone = api.post("/suppressions", {"kind": "phone", "address": "+1 (415) 555-0100"})
    assert phone.json() == {"kind": "phone", "address": "+14155550100", "reason": "manual"}
    listed = api.get_ok("/suppressions")
    assert [(s["kind"], s["address"], s["reason"]) for s in listed["items"]] == [
        ("phone", "+14155550100", "manual"), ("email", "bob@example.com", "hard_bounce")]
    assert listed["items"][1]["note"] == "550 5.1.1"
    assert listed["next_cursor"] is None
    # The contact's profile shows it; a second report of the same address updates the reason.
    bob = api.contact_by("user_id", "bob")
    assert [(s["address"], s["reason"]) for s in bob["suppressions"]] == [
        ("bob@example.com", "hard_bounce")]
    api.post("/suppressions", {"kind": "email", "address": "BOB@example.com",
                               "reason": "complaint"})
    assert [(s["address"], s["reason"]) for s in api.get_ok("/suppressions")["items"]
            if s["kind"] == "email"] == [("bob@example.com", "complaint")]
    # Deleting normalises the address the same way.
    assert api.delete("/suppressions/email/BOB@Example.com").json() == {"deleted": True}
    assert api.delete("/suppressions/email/bob@example.com").json() == {"deleted": False}
    assert api.delete("/suppressions/phone/+14155550100").json() == {"deleted": True}
    assert api.get_ok("/suppressions")["items"] == []


def test_suppressions_pagination(api: Api) -> None:
    for i in range(7):
        api.post("/suppressions", {"kind": "email", "address": f"p{i}@example.com"})
    seen: list[str] = []
    cursor: Any = None
    while True:
        page = api.get_ok("/suppressions", limit=3, **({"cursor": cursor} if cursor else {}))
        seen.extend(s["address"] for s in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{i}@example.com" for i in reversed(range(7))]


def test_suppression_bad_input(api: Api, store: Store) -> None:
    before = snapshot(store)
    for body, field, reason in [
        ({"kind": "email", "address": "not-an-email"}, "address", "not a valid email"),
        ({"kind": "phone", "address": "call me"}, "address", "not a phone number"),
        ({"kind": "fax", "address": "+14155550100"}, "kind", ""),
        ({"kind": "email", "address": "a@example.com", "reason": "bored"}, "reason", ""),
        ({"kind": "email"}, "address", "required"),
        ({"kind": "email", "address": "x" * 321}, "address", "320"),
        ({"kind": "email", "address": "a@example.com", "extra": 1}, "extra", "extra"),
    ]:
        assert_error(api.post("/suppressions", body), 400, field, reason, case=body)
    assert_error(api.delete("/suppressions/fax/123"), 400, "kind", "")
    assert_error(api.delete("/suppressions/email/nope"), 400, "address", "not a valid email")
    assert_error(api.get("/suppressions", cursor="abc"), 400, "cursor", "")
    assert_error(api.get("/suppressions", cursor=2**70), 400, "cursor", "")
    assert snapshot(store) == before


# --- Keys ---------------------------------------------------------------------------------


def test_keys_create_list_revoke(api: Api, client: httpx.Client, keys: Keys,
                                 store: Store) -> None:
    created = api.post("/keys", {"kind": "write", "name": "  Website  "})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith("cdz_w_")
    assert key["prefix"] == key["key"][:12]
    assert (key["kind"], key["name"], key["revoked_at"]) == ("write", "Website", None)
    # The secret is shown once: never listed, never stored in plain text.
    listing = api.get("/keys")
    assert key["key"] not in listing.text
    assert keys.write not in listing.text
    assert keys.admin not in listing.text
    items = listing.json()["items"]
    newest = items[0]
    assert (newest["id"], newest["kind"], newest["name"]) == (key["id"], "write", "Website")
    assert {k["kind"] for k in items} == {"write", "admin"}
    assert all("key" not in k and "key_hash" not in k for k in items)
    with store.read() as conn:
        stored = [r.key_hash for r in conn.execute(schema.api_keys.select())]
    assert key["key"] not in stored
    # It works, and stops working once revoked; revoking again is harmless.
    assert client.post("/v1/track", auth=(key["key"], ""), json={
        "userId": "u", "event": "E"}).status_code == 200
    revoked = api.post(f"/keys/{key['id']}/revoke", {})
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    again = api.post(f"/keys/{key['id']}/revoke", {})
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert client.post("/v1/track", auth=(key["key"], ""), json={
        "userId": "u", "event": "E"}).status_code == 401
    listed = {k["id"]: k for k in api.get_ok("/keys")["items"]}
    assert listed[key["id"]]["revoked_at"] == revoked.json()["revoked_at"]
    assert listed[key["id"]]["last_used_at"] is not None


def test_key_bad_input(api: Api, store: Store) -> None:
    before_keys = count(store, schema.api_keys)
    for body, field, reason in [
        ({"kind": "root", "name": "x"}, "kind", ""),
        ({"kind": "write", "name": ""}, "name", ""),
        ({"kind": "write", "name": "   "}, "name", "1 to 128"),
        ({"kind": "write", "name": "n" * 129}, "name", "128"),
        ({"kind": "write"}, "name", "required"),
        ({"kind": "write", "name": "x", "secret": "mine"}, "secret", "extra"),
    ]:
        assert_error(api.post("/keys", body), 400, field, reason, case=body)
    assert count(store, schema.api_keys) == before_keys
    error = assert_error(api.post("/keys/999999/revoke", {}), 404, None, "not found")
    assert error["kind"] == "api key"
    assert_error(api.post("/keys/abc/revoke", {}), 400, "key_id", "")
    assert_error(api.post("/keys/99999999999999999999999/revoke", {}), 400, "key_id", "")
