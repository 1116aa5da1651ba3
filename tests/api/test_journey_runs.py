"""The engine inside the server: an event sent to /v1 reaches its journey at once; API
entries; journey statistics; a contact's journeys explained."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error
from tests.engine.conftest import REFERENCE, insert_live_journey

API_JOURNEY = """
journey: vip-call
entry: {api: true}
steps:
  - id: call
    task: {title: Call this VIP, queue: sales}
"""


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def eventually(check: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Poll `check` until it returns something truthy (the engine runs on its own thread)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def outbox_nodes(store: Store) -> list[str]:
    with store.read() as conn:
        return [n for n, in conn.exec_driver_sql("SELECT node FROM outbox ORDER BY id")]


def test_an_event_reaches_its_journey_without_polling(
        api: Api, store: Store, clock: FakeClock) -> None:
    insert_live_journey(store, clock, REFERENCE)
    api.ok("identify", {"userId": "u-1", "traits": {"plan": "pro"}})
    started = time.monotonic()
    api.ok("track", {"userId": "u-1", "event": "signed_up"})
    assert eventually(lambda: outbox_nodes(store)) == ["welcome"]
    # Woken by the commit, not by the 1 s idle round.
    assert time.monotonic() - started < 0.9
    contact = api.contact_by("user_id", "u-1")
    journeys = api.get_ok(f"/contacts/{contact['id']}/journeys")["enrollments"]
    assert [(j["journey"], j["step"], j["status"]) for j in journeys] == [
        ("reference", "settle", "waiting")]
    assert journeys[0]["history"][0]["steps"][0]["step"] == "welcome"
    stats = api.get_ok("/journeys/reference/stats")["versions"][0]
    assert list(stats["steps"]) == ["welcome", "settle"]  # the journey's order, as written
    assert stats["steps"]["welcome"] == {"entered": 1, "left": 1, "here": 0}
    assert stats["steps"]["settle"]["here"] == 1


def test_api_entry_enrolls_once_and_refuses_bad_requests(
        api: Api, store: Store, clock: FakeClock) -> None:
    insert_live_journey(store, clock, API_JOURNEY)
    insert_live_journey(store, clock, REFERENCE)
    api.ok("identify", {"userId": "u-1", "traits": {"plan": "pro"}})
    cid = api.contact_by("user_id", "u-1")["id"]
    body = {"contact_ids": [cid], "payload": {"reason": "big deal"}}
    first = api.post("/journeys/vip-call/enroll", body)
    assert first.status_code == 200, first.text
    assert first.json()["enrolled"] == 1
    again = api.post("/journeys/vip-call/enroll", body).json()
    assert again["enrolled"] == 0
    assert again["skipped"] == 1
    with store.read() as conn:
        payloads = [p for p, in conn.exec_driver_sql(
            "SELECT payload FROM outbox WHERE channel = 'task'")]
    assert len(payloads) == 1
    assert "big deal" in str(payloads[0])
    assert_error(api.post("/journeys/nope/enroll", body), 404, None)
    assert_error(api.post("/journeys/reference/enroll", body), 400, "journey")
    assert_error(api.post("/journeys/vip-call/enroll", {"contact_ids": [999_999]}),
                 404, None)
    assert_error(api.post("/journeys/vip-call/enroll", {"contact_ids": []}), 400,
                 "contact_ids")
    assert api.post("/journeys/vip-call/enroll", {"contact_ids": [cid], "x": 1}
                    ).status_code == 400
