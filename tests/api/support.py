"""Helpers shared by the API tests: the app on a real server, posting Segment calls,
checking error bodies, and snapshots of every table that ingestion may write (to prove
nothing was half-written)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from cadenza.store import Store, schema

# Every table a request under /v1 or /api may change, except api_keys (last_used_at moves on
# every authenticated request, by design).
STATE_TABLES = (
    schema.contacts,
    schema.identities,
    schema.contact_merges,
    schema.companies,
    schema.company_members,
    schema.events,
    schema.consents,
    schema.consent_history,
    schema.fields,
    schema.suppressions,
)


@contextmanager
def serving_app(app: FastAPI) -> Iterator[str]:
    """Run `app` on a real uvicorn server (loopback, a free port, lifespan on) while the
    block runs; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every state table, in primary-key order (compare two for equality)."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    with store.read() as conn:
        for table in STATE_TABLES:
            order = list(table.primary_key.columns)
            rows = conn.execute(sa.select(table).order_by(*order)).all()
            state[table.name] = [tuple(repr(v) for v in row) for row in rows]
    return state


def count(store: Store, table: sa.Table) -> int:
    """Rows in `table`."""
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def stored_events(store: Store) -> list[dict[str, Any]]:
    """Every stored event, oldest id first."""
    e = schema.events
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(e).order_by(e.c.id)).mappings()]


def assert_error(response: httpx.Response, status: int, field: str | None,
                 *reason_parts: str, case: object = None) -> dict[str, Any]:
    """The response is the JSON error body with this status, field, and a reason (or message)
    containing every one of `reason_parts` (case-insensitive); returns the `error` object.
    `case` is shown when an assertion fails (for tests that loop over a table of cases)."""
    shown = (case, response.text) if case is not None else response.text
    assert response.status_code == status, shown
    body = response.json()
    assert body["success"] is False, shown
    error: dict[str, Any] = body["error"]
    assert error["code"], shown
    assert error["message"], shown
    if field is not None:
        assert error["field"] == field, shown
        assert error["reason"], shown
    text = (error.get("reason") or error["message"]).lower()
    for part in reason_parts:
        assert part.lower() in text, shown
    return error


def iso(ms: int) -> str:
    """ISO 8601 (UTC, millisecond precision) of epoch milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def ms_of(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 time."""
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class Api:
    """Short calls against the test server with the fixture keys."""

    def __init__(self, client: httpx.Client, write_key: str, admin_key: str) -> None:
        self.client = client
        self.write_key = write_key
        self.admin_headers = {"Authorization": f"Bearer {admin_key}"}

    def send(self, call: str, body: Any, **kwargs: Any) -> httpx.Response:
        """POST a JSON body to /v1/<call> with the write key as Basic username."""
        return self.client.post(f"/v1/{call}", auth=(self.write_key, ""), json=body, **kwargs)

    def send_raw(self, call: str, content: bytes,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        """POST raw bytes to /v1/<call> with the write key."""
        return self.client.post(f"/v1/{call}", auth=(self.write_key, ""), content=content,
                                headers={"Content-Type": "application/json", **(headers or {})})

    def ok(self, call: str, body: Any) -> dict[str, Any]:
        """Send and require a 200; the JSON body."""
        response = self.send(call, body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET under /api as admin."""
        return self.client.get(f"/api{path}", params=params, headers=self.admin_headers)

    def get_ok(self, path: str, **params: Any) -> dict[str, Any]:
        """GET under /api as admin, requiring a 200."""
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def post(self, path: str, body: Any) -> httpx.Response:
        """POST JSON under /api as admin."""
        return self.client.post(f"/api{path}", json=body, headers=self.admin_headers)

    def delete(self, path: str) -> httpx.Response:
        """DELETE under /api as admin."""
        return self.client.delete(f"/api{path}", headers=self.admin_headers)

    def contact_by(self, kind: str, value: str) -> dict[str, Any]:
        """The one contact found by an identity, as its full profile."""
        found = self.get_ok("/contacts", **{kind: value})["items"]
        assert len(found) == 1, found
        return self.get_ok(f"/contacts/{found[0]['id']}", events_limit=500)

    def all_events(self, **params: Any) -> list[dict[str, Any]]:
        """Every event through /api/events, walking the cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self.get_ok("/events", **query)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items
