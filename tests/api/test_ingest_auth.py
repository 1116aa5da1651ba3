"""Credentials on /v1 and /api: every wrong key is a 401 that says what is needed, and writes
nothing. The server here trusts a checked key for a minute (as in production), so revoking
through the API must take effect at once anyway."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from cadenza.settings import Settings
from cadenza.store import Store
from tests.api.conftest import SECRET, Keys
from tests.api.support import Api, assert_error, snapshot

TRACK = {"userId": "u", "event": "E"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    """Settings with the production-like key cache (overrides the API conftest's)."""
    return Settings.load(database_url=store_url, secret_key=SECRET, key_cache_seconds=60)


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


@pytest.fixture
def unchanged(store: Store) -> Iterator[None]:
    """The test must not change any state table."""
    before = snapshot(store)
    yield
    assert snapshot(store) == before


def basic(raw: bytes) -> dict[str, str]:
    """An Authorization header carrying `raw` as Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.usefixtures("unchanged")
def test_no_credentials(client: httpx.Client) -> None:
    response = client.post("/v1/track", json=TRACK)
    assert_error(response, 401, None, "no API key was sent")
    assert response.headers["www-authenticate"].startswith("Basic")
    assert_error(client.post("/v1/batch", json={"batch": [TRACK]}), 401, None, "no API key")
    assert_error(client.get("/api/contacts"), 401, None, "no API key")


@pytest.mark.usefixtures("unchanged")
def test_unknown_write_key(client: httpx.Client) -> None:
    for call, body in (("track", TRACK), ("batch", {"batch": [{"type": "track", **TRACK}]})):
        error = assert_error(client.post(f"/v1/{call}", json=body, auth=("cdz_w_nope", "")),
                             401, None, "unknown API key")
        assert error["code"] == "auth.invalid"
    in_body = client.post("/v1/batch", json={"writeKey": "cdz_w_nope", "batch": [TRACK]})
    assert_error(in_body, 401, None, "unknown API key")


@pytest.mark.usefixtures("unchanged")
def test_auth_is_checked_before_the_body(client: httpx.Client) -> None:
    response = client.post("/v1/track", content=b"{not json", auth=("cdz_w_nope", ""))
    assert_error(response, 401, None, "unknown API key")


@pytest.mark.usefixtures("unchanged")
def test_header_key_wins_over_body_key(client: httpx.Client, keys: Keys) -> None:
    response = client.post("/v1/batch", auth=("cdz_w_nope", ""),
                           json={"writeKey": keys.write, "batch": [TRACK]})
    assert_error(response, 401, None, "unknown API key")


def test_empty_basic_username_falls_back_to_body_key(client: httpx.Client, keys: Keys) -> None:
    response = client.post("/v1/batch", headers=basic(b":"),
                           json={"writeKey": keys.write, "batch": [{"type": "track", **TRACK}]})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


def test_revoked_write_key_stops_at_once(api: Api, client: httpx.Client, store: Store) -> None:
    created = api.post("/keys", {"kind": "write", "name": "website"})
    assert created.status_code == 201, created.text
    key = created.json()
    # Used once, so the server now trusts it for a minute...
    ok = client.post("/v1/track", json=TRACK, auth=(key["key"], ""))
    assert ok.status_code == 200, ok.text
    revoked = api.post(f"/keys/{key['id']}/revoke", {})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    before = snapshot(store)
    # ...but a revocation through the API is honoured on the very next request.
    error = assert_error(client.post("/v1/track", json=TRACK, auth=(key["key"], "")), 401,
                         None, "was revoked")
    assert error["code"] == "auth.revoked"
    assert key["prefix"] in error["message"]
    assert_error(client.post("/v1/batch", json={"writeKey": key["key"], "batch": [TRACK]}),
                 401, None, "was revoked")
    assert snapshot(store) == before
    # The fixture's own write key is untouched.
    assert api.ok("track", TRACK)["accepted"] == 1


def test_revoked_admin_key(api: Api, client: httpx.Client) -> None:
    key = api.post("/keys", {"kind": "admin", "name": "ops"}).json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert client.get("/api/keys", headers=headers).status_code == 200
    assert api.post(f"/keys/{key['id']}/revoke", {}).status_code == 200
    assert_error(client.get("/api/keys", headers=headers), 401, None, "was revoked")


@pytest.mark.usefixtures("unchanged")
def test_admin_key_on_v1(client: httpx.Client, keys: Keys) -> None:
    as_basic = client.post("/v1/track", json=TRACK, auth=(keys.admin, ""))
    as_bearer = client.post("/v1/track", json=TRACK,
                            headers={"Authorization": f"Bearer {keys.admin}"})
    for response in (as_basic, as_bearer):
        error = assert_error(response, 401, None, "needs a write key")
        assert "admin key" in error["message"]
    response = client.post("/v1/batch", json={"writeKey": keys.admin, "batch": [TRACK]})
    assert_error(response, 401, None, "needs a write key")


@pytest.mark.usefixtures("unchanged")
def test_write_key_on_api(client: httpx.Client, keys: Keys) -> None:
    for path in ("/api/contacts", "/api/events", "/api/keys", "/api/fields"):
        response = client.get(path, headers={"Authorization": f"Bearer {keys.write}"})
        error = assert_error(response, 401, None, "admin key")
        assert "write key" in error["message"], error
    response = client.post("/api/keys", headers={"Authorization": f"Bearer {keys.write}"},
                           json={"kind": "admin", "name": "escalate"})
    assert_error(response, 401, None, "admin key")


@pytest.mark.usefixtures("unchanged")
def test_garbage_authorization_headers(client: httpx.Client, keys: Keys) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"Authorization": "Basic !!!not-base64!!!"}, "base64"),
        ({"Authorization": "Basic " + keys.write}, "base64"),
        (basic(b"\xff\xfe\xfd:"), "base64"),
        ({"Authorization": "Basic"}, "no API key"),
        ({"Authorization": "Bearer"}, "no API key"),
        ({"Authorization": keys.write}, "must be 'Basic"),
        ({"Authorization": "Token abc"}, "must be 'Basic"),
        (basic(b"cdz_w_guess:" + keys.write.encode()), "unknown API key"),
    ]
    for headers, reason in cases:
        response = client.post("/v1/track", json=TRACK, headers=headers)
        error = assert_error(response, 401, None, reason, case=headers)
        # A presented key never comes back in the error.
        assert keys.write not in response.text, headers
        assert error["code"].startswith("auth."), headers
