"""Predictive models under /api/models: define, train, report, promote (and the guard's 409),
rollback, score, explain; bad input and admin-key auth."""

from __future__ import annotations

import httpx
import pytest

from cadenza.clock import FakeClock
from cadenza.store import Store
from tests.api.conftest import Keys
from tests.api.support import Api, assert_error
from tests.leads.predictive_data import definition, generate


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def put(api: Api, key: str, body: dict[str, object]) -> httpx.Response:
    return api.client.put(f"/api/models/{key}", json=body, headers=api.admin_headers)


def test_define_train_promote_score_explain(api: Api, store: Store, clock: FakeClock) -> None:
    generate(store, clock.now_ms(), contacts=1200)
    document = {k: v for k, v in definition().items() if k != "key"}
    created = put(api, "buyers", document)
    assert created.status_code == 201, created.text
    assert created.json()["live"] is None
    assert put(api, "buyers", document).status_code == 200
    assert [m["key"] for m in api.get_ok("/models")["items"]] == ["buyers"]

    trained = api.post("/models/buyers/train", {})
    assert trained.status_code == 201, trained.text
    report = trained.json()
    assert report["status"] == "candidate"
    assert report["metrics"]["auc"] > 0.7
    assert len(report["metrics"]["lift"]) == 10
    assert report["metrics"]["importances"][0]["feature"] == "count:Pricing Viewed:30d"
    full = api.get_ok("/models/buyers/versions/1")
    assert full["metrics"]["calibration"] == report["metrics"]["calibration"]
    assert full["spec"]["horizon_days"] == 30

    promoted = api.post("/models/buyers/versions/1/promote", {})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "live"
    assert api.get_ok("/models/buyers")["live"]["version"] == 1
    scored = api.post("/models/buyers/score", {})
    assert scored.status_code == 200, scored.text
    assert scored.json()["contacts"] == 1200
    explained = api.get_ok("/models/buyers/contacts/7/explanation")
    assert explained["contact_id"] == 7
    assert explained["stored"]["explanation"]["version"] == 1
    assert len(explained["features"]) == len(full["metrics"]["importances"])

    blind = [{"attr": "employees", "type": "number"}, {"attr": "plan", "type": "enum"}]
    put(api, "buyers", {**document, "features": blind})
    assert api.post("/models/buyers/train", {}).status_code == 201
    refused = api.post("/models/buyers/versions/2/promote", {})
    error = assert_error(refused, 409, None, "holdout auc", "live version 1")
    assert error["code"] == "model.promotion_refused"
    assert error["live"] == 1
    assert error["candidate"] == 2
    forced = api.post("/models/buyers/versions/2/promote", {"force": True, "note": "why not"})
    assert forced.status_code == 200
    assert "forced" in forced.json()["note"]
    versions = api.get_ok("/models/buyers/versions")["items"]
    assert [(v["version"], v["status"]) for v in versions] == [(2, "live"), (1, "retired")]
    back = api.post("/models/buyers/rollback", {})
    assert back.status_code == 200
    assert back.json()["version"] == 1


def test_bad_input_and_auth(api: Api, store: Store, clock: FakeClock) -> None:
    generate(store, clock.now_ms(), contacts=100)
    assert_error(put(api, "buyers", definition(horizon_days=0)), 400, "horizon_days",
                 "1..365")
    assert_error(put(api, "buyers", definition(outcome={"event": "Nope"})), 400,
                 "outcome.event", "no event named 'Nope'")
    assert_error(put(api, "Bad Key", definition(key="Bad Key")), 400, "key", "slug")
    assert_error(api.get("/models/nope"), 404, None)
    assert_error(api.post("/models/nope/train", {}), 404, None)
    put(api, "buyers", definition())
    assert_error(api.post("/models/buyers/train", {}), 400, "training", "at least 200")
    assert_error(api.post("/models/buyers/score", {}), 409, None, "no live version")
    assert_error(api.post("/models/buyers/versions/1/promote", {}), 404, None)
    assert_error(api.post("/models/buyers/versions/1/promote", {"forse": True}), 400, None)
    unauthorised = api.client.get("/api/models",
                                  headers={"Authorization": f"Bearer {api.write_key}"})
    assert unauthorised.status_code in (401, 403)
