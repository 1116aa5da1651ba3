"""/api/journeys over a real server: the whole cycle, and clear errors for bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cadenza.journeys import journey_schema
from tests.api.conftest import Keys
from tests.api.support import assert_error
from tests.journeys.conftest import minimal

YAML = """\
journey: welcome-flow
entry: {event: signed_up}
steps:
  - {id: welcome, send: {channel: email, template: welcome}}
  - {id: settle, wait: 2d}
  - {id: nudge, send: {channel: email, template: nudge}}
"""


class Api:
    """Admin calls under /api/journeys."""

    def __init__(self, client: httpx.Client, keys: Keys) -> None:
        self.client = client
        self.headers = keys.admin_headers

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, f"/api/journeys{path}", headers=headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    return Api(client, keys)


def test_the_whole_cycle(api: Api, templates: None) -> None:
    draft = api.ok("POST", "", 201, content=YAML,
                   headers={"content-type": "application/yaml"})
    assert (draft["journey"], draft["number"], draft["status"]) == ("welcome-flow", 1, "draft")
    assert draft["definition"]["steps"][1] == {"id": "settle", "wait": "2d"}
    # {"yaml": text} and a JSON definition are the other two ways in.
    assert api.ok("POST", "", 201, json={"yaml": YAML})["number"] == 1
    assert api.ok("POST", "", 201, json=minimal())["number"] == 1
    published = api.ok("POST", "/welcome-flow/publish")
    assert (published["number"], published["status"], published["live"]) == \
        (1, "published", True)
    assert len(published["content_hash"]) == 64
    api.ok("POST", "", 201, json={"yaml": YAML.replace("2d", "3d")})
    shadow = api.ok("POST", "/welcome-flow/publish", json={"version": 2, "shadow": True})
    assert (shadow["shadow"], shadow["live"]) == (True, False)
    listed = api.ok("GET", "")["items"]
    assert [(j["key"], j["status"], j["live_version"], j["shadow_version"]) for j in listed] \
        == [("welcome-flow", "live", 1, 2)]
    shown = api.ok("GET", "/welcome-flow")
    assert (shown["status"], shown["version"]["number"]) == ("live", 1)
    assert api.ok("GET", "/welcome-flow", params={"version": 2})["version"]["definition"][
        "steps"][1]["wait"] == "3d"
    versions = api.ok("GET", "/welcome-flow/versions")["items"]
    assert [(v["number"], v["live"], v["shadow"]) for v in versions] == [
        (1, True, False), (2, False, True)]
    assert "definition" not in versions[0]
    diff = api.ok("GET", "/welcome-flow/diff", params={"a": 1, "b": 2})["diff"]
    assert "-  wait: 2d\n+  wait: 3d\n" in diff
    assert api.ok("POST", "/welcome-flow/shadow", json={"version": None})[
        "shadow_version"] is None
    assert api.ok("POST", "/welcome-flow/rollback", json={"to": 2})["live_version"] == 2
    assert api.ok("POST", "/welcome-flow/migrate", json={
        "from": 1, "to": 2, "mapping": {"settle": "settle"}}) == {"moved": {}, "total": 0}
    assert api.ok("POST", "/welcome-flow/pause")["status"] == "paused"
    assert api.ok("POST", "/welcome-flow/resume")["status"] == "live"
    archived = api.ok("POST", "/welcome-flow/archive")
    assert (archived["status"], archived["ended_enrollments"]) == ("archived", 0)
    assert api.ok("POST", "/validate", json=minimal("other")) == {
        "valid": True, "journey": "other", "steps": 3}


def test_the_schema_is_public(client: httpx.Client) -> None:
    response = client.get("/api/journeys/schema")
    assert response.status_code == 200
    assert response.json() == journey_schema()


def test_admin_key_required(client: httpx.Client, keys: Keys) -> None:
    assert client.get("/api/journeys").status_code == 401
    response = client.get("/api/journeys", headers={"Authorization": f"Basic {keys.write}"})
    assert response.status_code == 401


def test_invalid_journeys_list_every_problem(api: Api) -> None:
    bad = minimal(steps=[{"id": "a", "send": {"channel": "emial"}, "goto": "bb"},
                         {"id": "b", "wait": "2x"}])
    response = api.call("POST", "", json=bad)
    error = assert_error(response, 400, "steps.a.goto", "names no step")
    assert error["code"] == "journey.invalid"
    assert error["journey"] == "welcome-flow"
    assert [(p["step"], p["field"]) for p in error["problems"]] == [
        ("a", "goto"), ("a", "send.channel"), ("b", "wait")]
    assert api.ok("GET", "") == {"items": []}


@pytest.mark.parametrize(("body", "field", "words"), [
    (b"journey: [x\n", "yaml", ["line 2"]),
    (b'{"journey": "x", "journey": "y"}', "json", ["appears twice"]),
    (b"[1, 2]", "file", ["must be a mapping"]),
    (b'{"yaml": 5}', "yaml", ["unknown key 'yaml'"]),
])
def test_unreadable_bodies(api: Api, body: bytes, field: str, words: list[str]) -> None:
    response = api.call("POST", "", content=body,
                        headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    text = response.text.lower()
    for word in words:
        assert word.lower() in text


def test_a_body_over_the_cap(api: Api) -> None:
    response = api.call("POST", "", content=b"a" * (3 * 1024 * 1024),
                        headers={"content-type": "application/yaml"})
    assert_error(response, 400, None, "at most 1 mb")


def test_errors_map_to_statuses(api: Api, add_templates: Callable[..., None]) -> None:
    assert_error(api.call("GET", "/nope"), 404, None, "journey 'nope' not found")
    assert_error(api.call("POST", "/nope/publish"), 404, None, "not found")
    api.ok("POST", "", 201, json=minimal())
    error = assert_error(api.call("POST", "/welcome-flow/publish"), 400, None,
                         "names no template")
    assert len(error["problems"]) == 2
    add_templates(("welcome", "email"), ("nudge", "email"))
    api.ok("POST", "/welcome-flow/publish")
    assert_error(api.call("POST", "/welcome-flow/publish", json={"version": 1}), 409, None,
                 "already published")
    assert_error(api.call("POST", "/welcome-flow/publish", json={"version": 0}), 400,
                 "version", "greater than or equal to 1")
    assert_error(api.call("POST", "/welcome-flow/rollback", json={"to": 5}), 404, None,
                 "welcome-flow v5")
    assert_error(api.call("POST", "/welcome-flow/rollback", json={"too": 1}), 400, None)
    assert_error(api.call("POST", "/welcome-flow/migrate", json={"from": 1, "to": 1,
                                                                  "mapping": {}}),
                 400, "to", "itself")
    assert_error(api.call("GET", "/welcome-flow/diff", params={"a": 1}), 400, "b")
