"""Lifecycle stages in real time: the "lifecycle" listener.

In every engine pass it takes the contacts queued for "lifecycle" (scores, segments and
journeys queue the contacts they change, `cadenza.store.changes`) and the contacts of new
events the rules can react to (events counted by a rule's condition; identify and group calls
when a rule reads attributes), read after its cursors `lifecycle:<part>`. It loads their
facts once, evaluates the transition rules and applies the moves set-wise, in the pass's
transaction (`cadenza.leads.lifecycle_moves`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.leads.lifecycle_moves import (
    Router,
    apply_moves,
    current_stages,
    decide,
    live_contacts,
)
from cadenza.leads.lifecycle_stages import (
    StageConfig,
    StageRows,
    condition_refs,
    config_from_rows,
    default_config,
    stage_rows,
)
from cadenza.leads.routing_assign import RoutingOptions, route_contacts
from cadenza.segments import load_facts
from cadenza.store import fetch, schema
from cadenza.store.changes import take_changed
from cadenza.store.cursors import cursor_positions, log_end, move_cursors

READER = "lifecycle"
ANY_EVENT = "*"


def stage_router(options: RoutingOptions) -> Router:
    """A router for `apply_moves` that uses the routing rules with `options`."""
    return partial(_route, options=options)


def _route(conn: Connection, contact_ids: Sequence[int], now: int, cause: str, *,
           options: RoutingOptions) -> Any:
    return route_contacts(conn, contact_ids, now, options, cause=cause)


class LifecycleListener:
    """Evaluates transition rules for changed contacts inside the engine's pass."""

    name = READER

    def __init__(self, options: RoutingOptions | None = None) -> None:
        self.router = stage_router(options or RoutingOptions())
        self._rows: StageRows | None = None
        self._config = default_config()

    def config(self, conn: Connection) -> StageConfig:
        """The stages, parsed again only when their rows changed."""
        rows = stage_rows(conn)
        if rows != self._rows:
            self._config = config_from_rows(rows)
            self._rows = rows
        return self._config

    def apply(self, conn: Connection, parts: Sequence[int], now: int, limit: int) -> int:
        """Re-evaluate up to `limit` queued contacts and the contacts of up to `limit` new
        events of `parts`; return how many of either were read."""
        config = self.config(conn)
        queued = take_changed(conn, READER, parts, limit)
        read, touched = self._read_events(conn, config, parts, now, limit)
        ids = set(queued) | touched
        if ids and any(True for _ in config.rules()):
            evaluate_contacts(conn, config, sorted(ids), now, self.router)
        return max(len(queued), read)

    def _read_events(self, conn: Connection, config: StageConfig, parts: Sequence[int],
                     now: int, limit: int) -> tuple[int, set[int]]:
        if not parts:
            return 0, set()
        positions = cursor_positions(conn, READER, parts, now)
        low = min(positions.values())
        top = log_end(conn)
        if top <= low:
            return 0, set()
        names, types = _interesting(config)
        if not names and not types:
            move_cursors(conn, READER, parts, top, now)  # nothing to react to: skip unread
            return 0, set()
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        tests = []
        if ANY_EVENT in names:  # a rule looks at the latest event of any name
            names, types = [], []
            tests.append("1 = 1")
        if names:
            tests.append(f"name IN ({', '.join([mark] * len(names))})")
        if types:
            tests.append(f"type IN ({', '.join([mark] * len(types))})")
        rows = fetch(conn, f"SELECT id, contact_id FROM events WHERE id > {mark} AND "
                     f"id <= {mark} AND ({' OR '.join(tests)}) ORDER BY id "
                     f"LIMIT {int(limit)}", (low, top, *names, *types))
        held = set(parts)
        touched = {int(cid) for eid, cid in rows
                   if int(cid) % schema.PARTITIONS in held
                   and eid > positions[int(cid) % schema.PARTITIONS]}
        end = int(rows[-1][0]) if len(rows) >= limit else top
        move_cursors(conn, READER, parts, end, now)
        return len(rows), touched


def _interesting(config: StageConfig) -> tuple[list[str], list[str]]:
    """Event names and types whose arrival may change a rule's answer."""
    names: set[str] = set()
    attributes = False
    for _, rule in config.rules():
        events, _, reads = condition_refs(rule.condition.to_json())
        names |= events
        attributes = attributes or reads or rule.condition.needs().attributes
    return sorted(names), (["group", "identify"] if attributes else [])


def evaluate_contacts(conn: Connection, config: StageConfig, contact_ids: Sequence[int],
                      now: int, router: Router | None, cause: str = "rule") -> int:
    """Evaluate the rules for `contact_ids` (facts loaded once) and apply the moves; return
    how many contacts moved."""
    ids = live_contacts(conn, contact_ids)
    if not ids:
        return 0
    facts = load_facts(conn, ids, config.needs(), now)
    moves = decide(config, facts, current_stages(conn, ids), cause)
    return len(apply_moves(conn, config, moves, now, router))


def lifecycle_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """Lifecycle listeners (transition rules on changed contacts) and jobs."""
    return [LifecycleListener(RoutingOptions.from_settings(settings))], []
