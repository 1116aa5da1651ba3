"""The outbox and templates under /api: list, inspect, replay; save, read, preview; their
bad input and admin-key auth."""

from __future__ import annotations

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error
from tests.channels.support import add_contact, add_outbox


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def put(api: Api, key: str, body: dict[str, object]) -> httpx.Response:
    return api.client.put(f"/api/templates/{key}", json=body, headers=api.admin_headers)


def test_templates_save_read_preview(api: Api, store: Store, clock: FakeClock) -> None:
    created = put(api, "welcome", {"channel": "email", "subject": "Hi {{ contact.email }}",
                                   "body": "<p>{{ entry.note }}</p>"})
    assert created.status_code == 201, created.text
    again = put(api, "welcome", {"channel": "email", "body": "<p>{{ entry.note }}!</p>"})
    assert again.status_code == 200
    assert api.get_ok("/templates/welcome")["body"] == "<p>{{ entry.note }}!</p>"
    assert [t["key"] for t in api.get_ok("/templates")["items"]] == ["welcome"]
    contact = add_contact(store, clock.now_ms(), email="ann@example.com")
    preview = api.post("/templates/welcome/preview", {"contact_id": contact,
                                                      "entry": {"note": "<b>"}})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {"body": "<p>&lt;b&gt;!</p>", "html": True, "text": "<b>!\n",
                              "locale": None}


def test_template_errors(api: Api, store: Store, clock: FakeClock) -> None:
    assert_error(put(api, "bad", {"channel": "email", "body": "{{ oops"}), 400, "template",
                 "line 1")
    assert_error(put(api, "bad", {"channel": "fax", "body": "x"}), 400, "channel",
                 "not a channel")
    assert_error(put(api, "Bad Key", {"body": "x"}), 400, "key", "slug")
    assert_error(api.get("/templates/nope"), 404, None)
    put(api, "strict", {"body": "{{ contact.attributes.tier }}"})
    contact = add_contact(store, clock.now_ms())
    assert_error(api.post("/templates/strict/preview", {"contact_id": contact}), 400,
                 "template", "tier")


def test_outbox_list_show_replay(api: Api, store: Store, clock: FakeClock) -> None:
    contact = add_contact(store, clock.now_ms())
    rows = add_outbox(store, clock.now_ms(), [{"contact_id": contact, "channel": "log"}] * 3)
    with store.begin() as conn:
        import sqlalchemy as sa

        from cadenza.store import schema
        conn.execute(sa.update(schema.outbox).where(schema.outbox.c.id == rows[0])
                     .values(status="dead", attempts=8, last_error="HTTP 400"))
    page = api.get_ok("/outbox", limit=2)
    assert [r["id"] for r in page["items"]] == [rows[2], rows[1]]
    rest = api.get_ok("/outbox", limit=2, cursor=page["next_cursor"])
    assert [r["id"] for r in rest["items"]] == [rows[0]]
    assert rest["next_cursor"] is None
    assert [r["id"] for r in api.get_ok("/outbox", status="dead")["items"]] == [rows[0]]
    assert api.get_ok("/outbox/counts")["dead"] == 1
    shown = api.get_ok(f"/outbox/{rows[0]}")
    assert shown["last_error"] == "HTTP 400"
    assert shown["payload"]["journey"] == "test-journey"
    replay = api.post("/outbox/replay", {"ids": [rows[0], rows[1], 999]})
    assert replay.json() == {"replayed": [rows[0]],
                             "unchanged": [{"id": rows[1], "status": "pending"}],
                             "missing": [999]}
    assert api.post("/outbox/replay", {"ids": [rows[0]]}).json()["replayed"] == []


def test_outbox_bad_input_and_auth(api: Api) -> None:
    assert_error(api.get("/outbox", status="lost"), 400, "status")
    assert_error(api.get("/outbox", cursor="garbage!"), 400, "cursor")
    assert_error(api.get("/outbox/0"), 400, "outbox_id")
    assert_error(api.get("/outbox/5"), 404, None)
    assert_error(api.post("/outbox/replay", {"ids": []}), 400, "ids")
    assert_error(api.post("/outbox/replay", {"ids": ["x"]}), 400, "ids.0")
    assert api.client.get("/api/outbox").status_code == 401
    assert api.client.get("/api/templates",
                          auth=(api.write_key, "")).status_code in (401, 403)
