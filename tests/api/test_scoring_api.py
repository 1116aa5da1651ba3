"""/api/scores over a real server: models, score now, top, distribution, explanations,
and errors that name the field."""

from __future__ import annotations

import httpx

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.leads.scoring_support import NOW, add_contacts, add_events, declare

FIT = {"key": "fit", "name": "Fit", "rules": [
    {"id": "pro", "when": {"attr": "plan", "eq": "pro"}, "points": 30},
    {"id": "free", "when": {"attr": "plan", "eq": "free"}, "points": -10}],
    "grades": [{"grade": "A", "min": 20}, {"grade": "B", "min": 0}, {"grade": "C"}]}
ENGAGEMENT = {"key": "engagement", "rules": [
    {"id": "demo", "event": "Demo Requested", "points": 25}],
    "grades": [{"grade": "1", "min": 20}, {"grade": "2"}]}


def test_models_scores_and_explanations(client: httpx.Client, keys: Keys, store: Store,
                                        clock: FakeClock) -> None:
    clock.set(NOW)
    declare(store, plan="string")
    add_contacts(store, {1: {"plan": "pro"}, 2: {"plan": "free"}})
    add_events(store, [(1, "Demo Requested", NOW, {})])
    h = keys.admin_headers
    assert client.get("/api/scores/models").status_code == 401
    created = client.post("/api/scores/models", json=FIT, headers=h)
    assert created.status_code == 201, created.text
    assert client.post("/api/scores/models", json=FIT, headers=h).status_code == 409
    assert client.put("/api/scores/models/engagement", json=ENGAGEMENT,
                      headers=h).status_code == 201
    matrix = {"key": "lead", "kind": "matrix", "rows": "fit", "columns": "engagement"}
    assert client.post("/api/scores/models/validate", json=matrix, headers=h).json()["valid"]
    assert client.post("/api/scores/models", json=matrix, headers=h).status_code == 201
    listed = client.get("/api/scores/models", headers=h).json()["items"]
    assert [m["key"] for m in listed] == ["fit", "engagement", "lead"]
    scored = client.post("/api/scores/models/fit/score", headers=h).json()["items"]
    assert {s["model"] for s in scored} == {"fit", "lead"}
    client.post("/api/scores/score", headers=h)
    top = client.get("/api/scores/models/lead/top", params={"limit": 5}, headers=h).json()
    assert [(t["contact_id"], t["grade"]) for t in top["items"]] == [(1, "A1"), (2, "C2")]
    spread = client.get("/api/scores/models/fit/distribution", params={"buckets": 2},
                        headers=h).json()
    assert spread["contacts"] == 2
    assert [b["contacts"] for b in spread["buckets"]] == [1, 1]
    explained = client.get("/api/contacts/1/scores", headers=h).json()
    fit = next(m for m in explained["models"] if m["model"] == "fit")
    assert fit["score"] == 30.0
    assert fit["rules"][0]["matched"] is True
    one = client.get("/api/scores/models/engagement/contacts/1", headers=h).json()
    assert one["score"] == 25.0
    assert one["rules"][0]["events"] == 1
    assert client.get("/api/contacts/99/scores", headers=h).status_code == 404
    assert client.post("/api/scores/models/fit/archive", headers=h).status_code == 409
    assert client.post("/api/scores/models/lead/archive", headers=h).json()["status"] == \
        "archived"


def test_bad_models_are_refused_with_the_field(client: httpx.Client, keys: Keys,
                                               store: Store) -> None:
    declare(store, plan="string")
    h = keys.admin_headers
    overlapping = {"key": "fit", "rules": [
        {"id": "a", "when": {"attr": "plan", "eq": "pro"}, "points": 5},
        {"id": "b", "when": {"attr": "plan", "in": ["pro", "team"]}, "points": 5}]}
    for body, field in ((overlapping, "rules.1"),
                        ({**FIT, "half_life": "0s"}, "half_life"),
                        ({**FIT, "colour": 1}, "colour"),
                        ([1, 2], "model")):
        answer = client.post("/api/scores/models", json=body, headers=h)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == field
    answer = client.put("/api/scores/models/other", json=FIT, headers=h)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "key"
    assert client.get("/api/scores/models/nope", headers=h).status_code == 404
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM score_models").scalar_one() == 0
