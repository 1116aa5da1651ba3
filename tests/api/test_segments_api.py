"""/api/segments: define, preview, lists, members, history, drift, export; bad input and
admin-key auth."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.events import EventService
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error
from tests.segments.segment_support import declare, identify

PROS = {"key": "pros", "name": "Pros", "condition": {"attr": "plan", "eq": "pro"}}


@pytest.fixture
def api(client: httpx.Client, keys: Keys, store: Store, clock: FakeClock) -> Api:
    """Calls against the test server, with `plan` and `name` declared."""
    declare(store, clock, plan="string", name="string")
    return Api(client, keys.write, keys.admin)


def test_define_preview_and_read(api: Api, events: EventService) -> None:
    ann = identify(events, "ann", plan="pro", email="ann@example.com", name="Ann")
    identify(events, "bob", plan="basic")
    preview = api.post("/segments/estimate", {"condition": PROS["condition"], "sample": 3})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {"count": 1, "sample": [{"contact_id": ann,
                                                      "email": "ann@example.com",
                                                      "user_id": "ann", "name": "Ann"}]}
    assert api.get_ok("/segments")["items"] == []
    created = api.post("/segments", PROS)
    assert created.status_code == 201, created.text
    assert created.json()["member_count"] == 1
    assert_error(api.post("/segments", PROS), 409, None, "already exists")
    assert api.get_ok("/segments/pros")["condition"] == {"attr": "plan", "eq": "pro"}
    assert [s["key"] for s in api.get_ok("/segments")["items"]] == ["pros"]
    members = api.get_ok("/segments/pros/members", limit=10)
    assert [m["contact_id"] for m in members["items"]] == [ann]
    assert api.get_ok(f"/contacts/{ann}/segments")["items"][0]["key"] == "pros"
    updated = api.client.put("/api/segments/pros", json={"condition": {"attr": "plan",
                                                                       "eq": "basic"}},
                             headers=api.admin_headers)
    assert updated.status_code == 200, updated.text
    assert updated.json()["member_count"] == 1
    history = api.get_ok("/segments/pros/history")["items"]
    assert sorted((h["change"], h["cause"]) for h in history) == [
        ("entered", "edit"), ("entered", "edit"), ("exited", "edit")]
    assert [h["change"] for h in api.get_ok(f"/contacts/{ann}/segment-history")["items"]] \
        == ["exited", "entered"]
    drift = api.post("/segments/pros/recompute", {})
    assert drift.status_code == 200, drift.text
    assert drift.json()["entered"] == 0
    assert [d["segment"] for d in api.get_ok("/segments/drift")["items"]] == ["pros"]
    assert api.post("/segments/pros/archive", {}).json()["status"] == "archived"
    assert api.get_ok("/segments", status="archived")["items"][0]["key"] == "pros"


def test_static_lists_upload_and_export(api: Api, events: EventService) -> None:
    ann = identify(events, "ann", email="ann@example.com", name="=1+2")
    bob = identify(events, "bob", name="Bob")
    assert api.post("/segments", {"key": "vips", "kind": "static"}).status_code == 201
    added = api.post("/segments/vips/members", {"contact_ids": [ann], "user_ids": ["bob",
                                                                                 "ghost"]})
    assert added.status_code == 200, added.text
    assert added.json()["changed"] == 2
    assert added.json()["unknown"][0]["value"] == "ghost"
    removed = api.post("/segments/vips/members/remove", {"emails": ["ann@example.com"]})
    assert removed.json()["changed"] == 1
    upload = api.client.post("/api/segments/vips/upload", content=b"email\nann@example.com\n"
                             b"nobody@example.com\n", headers={**api.admin_headers,
                                                               "Content-Type": "text/csv"})
    assert upload.status_code == 200, upload.text
    assert upload.json()["changed"] == 1
    assert upload.json()["unknown"] == [{"row": 3, "kind": "email",
                                         "value": "nobody@example.com",
                                         "reason": "no contact has this email"}]
    export = api.get("/segments/vips/export", attributes="name")
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(export.text, newline="")))
    assert rows == [["contact_id", "email", "user_id", "name"],
                    [str(ann), "ann@example.com", "ann", "'=1+2"],
                    [str(bob), "", "bob", "Bob"]]


def test_bad_input(api: Api, client: httpx.Client) -> None:
    assert_error(api.post("/segments", {"key": "x", "condition": {"attr": "paln", "eq": 1}}),
                 400, "condition.attr", "plan")
    assert_error(api.post("/segments", {"key": "x", "condition": {"prop": "a", "eq": 1}}),
                 400, "condition", "segment has none")
    assert_error(api.post("/segments", {"key": "x", "condition": {"segment": "x"}}), 400,
                 "condition", "cycle")
    assert_error(api.post("/segments", [1, 2]), 400, None)
    bad_json = client.post("/api/segments", content=b"{not json",
                           headers={**api.admin_headers, "Content-Type": "application/json"})
    assert bad_json.status_code in (400, 422)
    assert_error(api.post("/segments/estimate", {"condition": {"tag": "x"}, "oops": 1}), 400,
                 "oops", "unknown field")
    assert_error(api.get("/segments/nope"), 404, None)
    assert api.post("/segments", {"key": "l", "kind": "static"}).status_code == 201
    assert_error(api.post("/segments/l/members", {"contact_ids": list(range(1, 10_010))}),
                 400, "contacts", "at most 10000")
    assert_error(api.post("/segments/l/members", {"contact_ids": ["x"]}), 400,
                 "contact_ids.0")
    assert_error(api.get("/segments/l/members", cursor="zzz"), 400, "cursor")
    unauthenticated = client.get("/api/segments")
    assert unauthenticated.status_code == 401
