"""/api/leads: stages, a contact's stage, reps, rules, routing, assignments and touch over a
real server; bad input and admin-key auth."""

from __future__ import annotations

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error
from tests.leads.lifecycle_support import contact, declare

HOUR = 3_600_000


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def put(api: Api, path: str, body: object) -> httpx.Response:
    return api.client.put(f"/api/leads{path}", json=body, headers=api.admin_headers)


def test_stages_and_contact_stage(api: Api, store: Store, clock: FakeClock) -> None:
    declare(store, clock.now_ms(), "fit", kind="number")
    shown = api.get_ok("/leads/stages")
    assert shown["stored"] is False
    assert shown["stages"][2]["key"] == "mql"
    saved = put(api, "/stages", {"stages": [
        {"key": "lead"}, {"key": "mql", "rules": [{"name": "fit",
                                                  "when": {"attr": "fit", "gte": 60}}]},
        {"key": "customer"}]})
    assert saved.status_code == 200, saved.text
    assert [s["key"] for s in saved.json()["stages"]] == ["lead", "mql", "customer"]
    hot = contact(store, clock.now_ms(), fit=75)
    applied = api.post("/leads/stages/apply", {})
    assert applied.json() == {"evaluated": 1, "moved": 1}
    moved = put(api, f"/contacts/{hot}/stage", {"stage": "customer", "reason": "signed"})
    assert moved.json() == {"moved": [{"contact_id": hot, "from": "mql", "to": "customer"}]}
    detail = api.get_ok(f"/leads/contacts/{hot}")
    assert detail["stage"] == "customer"
    assert [(h["from_stage"], h["to_stage"], h["cause"]) for h in detail["history"]] == [
        ("mql", "customer", "api"), (None, "mql", "apply")]
    counts = {s["key"]: s["contacts"] for s in api.get_ok("/leads/stages")["stages"]}
    assert counts == {"lead": 0, "mql": 0, "customer": 1}

    assert_error(put(api, "/stages", {"stages": [{"key": "a"}, {"key": "a"}]}), 400,
                 "stages[1].key", "unique")
    assert_error(put(api, "/stages", {"stages": [{"key": "lead"}]}), 409, None)
    assert_error(put(api, f"/contacts/{hot}/stage", {"stage": "nope", "reason": "x"}), 400,
                 "stage", "not a lifecycle stage")
    assert_error(api.get("/leads/contacts/999999"), 404, None)


def test_reps_rules_route_touch(api: Api, store: Store, clock: FakeClock) -> None:
    created = put(api, "/reps/ann", {"name": "Ann", "capacity": 2,
                                     "attributes": {"territory": "DE"}})
    assert created.status_code == 201, created.text
    assert put(api, "/reps/bob", {"name": "Bob"}).status_code == 201
    assert put(api, "/reps/ann", {"weight": 3}).json()["weight"] == 3
    assert_error(put(api, "/reps/cy", {"weight": 0}), 400, "weight", "1 to 1000")
    assert_error(put(api, "/reps/cy", {"capacity": -1}), 400, "capacity", "at least 0")
    away = api.post("/leads/reps/bob/away", {"until": clock.now_ms() + HOUR})
    assert away.json()["status"] == "away"

    assert_error(put(api, "/rules/r", {"pool": {"reps": ["ann", "zed"]}}), 400,
                 "pool.reps[1]", "not a sales rep")
    checked = api.post("/leads/rules/r/validate", {"pool": {"reps": ["ann", "bob"]},
                                                   "sla": "4h"})
    assert checked.json()["rule"]["sla"] == "4h"
    assert api.get_ok("/leads/rules")["items"] == []  # validate saves nothing
    saved = put(api, "/rules/r", {"pool": {"reps": ["ann", "bob"]}, "sla": "4h"})
    assert saved.status_code == 201, saved.text

    ids = [contact(store, clock.now_ms()) for _ in range(3)]
    routed = api.post("/leads/route", {"contact_ids": ids}).json()
    assert [a["rep"] for a in routed["assigned"]] == ["ann", "ann"]  # bob away, ann full
    assert routed["unassigned"][0]["reason"]["reason"].startswith("no eligible rep")
    again = api.post("/leads/route", {"contact_ids": ids[:1]}).json()
    assert again["already_assigned"][0]["contact_id"] == ids[0]
    assert_error(api.post("/leads/route", {}), 400, "contact_ids", "segment")

    queue = api.get_ok("/leads/assignments", rep="ann")["items"]
    assert [a["sla_state"] for a in queue] == ["on_time", "on_time"]
    first = queue[-1]["id"]
    touched = api.post(f"/leads/assignments/{first}/touch", {"note": "called"}).json()
    assert touched["status"] == "touched"
    assert touched["changed"] is True
    assert api.post(f"/leads/assignments/{first}/touch", {}).json()["changed"] is False
    clock.advance(5 * HOUR)
    lapsed = api.get_ok("/leads/assignments", sla="lapsed")["items"]
    assert [a["id"] for a in lapsed] == [queue[0]["id"]]
    report = api.post("/leads/sla/check", {}).json()
    assert report["lapsed"] == [queue[0]["id"]]
    assert [r["from"] for r in report["reassigned"]] == [queue[0]["id"]]  # to bob, back
    assert api.get_ok("/leads/reps/bob")["open_assignments"] == 1
    assert_error(api.get("/leads/assignments", sla="late"), 400, "sla", "on_time")
    assert_error(api.client.delete("/api/leads/reps/ann", headers=api.admin_headers), 409,
                 None)


def test_leads_routes_need_the_admin_key(api: Api) -> None:
    for path in ("/api/leads/stages", "/api/leads/reps", "/api/leads/assignments"):
        assert api.client.get(path).status_code == 401
        assert api.client.get(path, auth=(api.write_key, "")).status_code in (401, 403)
