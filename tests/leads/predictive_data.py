"""Generated workspaces with a known signal for the predictive-model tests.

Every contact has a latent interest; interested contacts view the pricing page more in the
30 days before the snapshot and convert (Order Completed with plan=pro) more often after it.
Employees and plan carry no signal. A model must find `count:Pricing Viewed:30d`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from cadenza.store import Store, allocate_ids, dumps, insert_rows, schema

DAY = 86_400_000
PLANS = ("free", "team", "business")


@dataclass(frozen=True)
class World:
    """What was generated."""

    contacts: list[int]
    converted: set[int]
    now: int


def definition(key: str = "buyers", **overrides: Any) -> dict[str, Any]:
    """A model definition over the generated data."""
    document: dict[str, Any] = {
        "key": key, "name": "Likely buyers",
        "outcome": {"event": "Order Completed", "where": {"plan": "pro"}},
        "horizon_days": 30,
        "features": [
            {"attr": "employees", "type": "number"},
            {"attr": "plan", "type": "enum", "values": ["free", "team"]},
            {"attr": "signup_date", "type": "date"},
            {"count": "Pricing Viewed", "windows": [7, 30, 90]},
            {"days_since": "Logged In", "cap": 60},
            {"sum": "Order Completed", "property": "total", "windows": [90]},
        ],
    }
    document.update(overrides)
    return document


def generate(store: Store, now: int, *, contacts: int = 1500, seed: int = 3,
             strength: float = 1.6, base: float = -2.6, horizon_days: int = 30,
             start_id: int = 1) -> World:
    """Contacts created 200 days before `now`, their events, and conversions in the
    `horizon_days` before `now` driven by pricing views (`strength` 0: no signal)."""
    rng = random.Random(seed)
    t0 = now - horizon_days * DAY
    contact_rows, event_rows = [], []
    converted: set[int] = set()
    ids = list(range(start_id, start_id + contacts))
    for cid in ids:
        interest = rng.gauss(0, 1)
        signup = t0 - rng.randint(100, 190) * DAY
        attributes = {"employees": rng.randint(1, 500), "plan": rng.choice(PLANS),
                      "signup_date": _iso(signup)}
        if rng.random() < 0.1:
            del attributes["employees"]
        contact_rows.append((cid, dumps(attributes), signup, signup))
        views = max(0, round(rng.gauss(2 + 2 * interest, 1)))
        for _ in range(views):
            event_rows.append((cid, "Pricing Viewed", {}, t0 - rng.randint(1, 29 * DAY)))
        for _ in range(rng.randint(0, 3)):  # older views carry no signal
            event_rows.append((cid, "Pricing Viewed", {}, t0 - rng.randint(31 * DAY, 89 * DAY)))
        for _ in range(rng.randint(0, 4)):
            event_rows.append((cid, "Logged In", {}, t0 - rng.randint(1, 80 * DAY)))
        if rng.random() < 0.2:
            event_rows.append((cid, "Order Completed", {"plan": "team", "total": 20},
                               t0 - rng.randint(1, 80 * DAY)))
        chance = 1 / (1 + math.exp(-(base + strength * interest)))
        if rng.random() < chance:
            converted.add(cid)
            event_rows.append((cid, "Order Completed", {"plan": "pro", "total": 99},
                               t0 + rng.randint(1, horizon_days * DAY - 1)))
        elif rng.random() < 0.05:  # a conversion of the wrong plan does not count
            event_rows.append((cid, "Order Completed", {"plan": "team", "total": 20},
                               t0 + rng.randint(1, horizon_days * DAY - 1)))
    with store.begin() as conn:
        insert_rows(conn, schema.contacts, ("id", "attributes", "created_at", "updated_at"),
                    contact_rows)
        if conn.dialect.name == "postgresql":  # explicit ids: move the sequence past them
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('contacts', 'id'), "
                                 "(SELECT max(id) FROM contacts))")
        event_ids = allocate_ids(conn, schema.events, len(event_rows))
        insert_rows(conn, schema.events,
                    ("id", "message_id", "contact_id", "type", "name", "properties",
                     "context", "source", "timestamp", "received_at"),
                    [(eid, f"m{seed}-{eid}", cid, "track", name, dumps(props), "{}", "test",
                      ts, ts)
                     for eid, (cid, name, props, ts) in zip(event_ids, event_rows, strict=True)])
    return World(ids, converted, now)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date().isoformat()
