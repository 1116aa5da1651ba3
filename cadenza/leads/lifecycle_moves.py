"""Moving contacts between lifecycle stages, a batch at a time.

`decide` evaluates the transition rules for a batch of contacts whose facts were loaded once;
`apply_moves` writes every move of the batch with one statement per table: the contacts'
stages, their history, one "Lifecycle Stage Changed" event each (message id
`lifecycle:<history id>`, so a repeat is dropped by the event log's unique key), the change
queue for segments and scores, and routing for stages that route, all in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.events import lock_event_log
from cadenza.leads.lifecycle_stages import StageConfig
from cadenza.segments import Facts
from cadenza.store import allocate_ids, dumps, insert_rows, schema, select_in
from cadenza.store.changes import mark_changed

STAGE_EVENT = "Lifecycle Stage Changed"
"""Event written for every stage change: properties from, to, rule, cause."""

Router = Callable[[Connection, Sequence[int], int, str], Any]
"""Routes contacts (connection, contact ids, now, cause) in the caller's transaction."""


@dataclass(frozen=True)
class Move:
    """One contact's change of stage."""

    contact_id: int
    from_stage: str | None
    to_stage: str
    cause: str
    """rule, api, cli, apply, ..."""
    rule: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def current_stages(conn: Connection, contact_ids: Iterable[int]) -> dict[int, str]:
    """The stage of each contact that has one."""
    return {int(c): str(s) for c, s in select_in(
        conn, "SELECT contact_id, stage FROM contact_stages WHERE contact_id IN ({marks})",
        sorted(set(contact_ids)))}


def live_contacts(conn: Connection, contact_ids: Iterable[int]) -> list[int]:
    """Those of `contact_ids` that exist and were not merged away, in id order."""
    return sorted(int(c) for c, in select_in(
        conn, "SELECT id FROM contacts WHERE merged_into IS NULL AND id IN ({marks})",
        sorted(set(contact_ids))))


def decide_one(config: StageConfig, facts: Facts, current: str | None,
               cause: str = "rule") -> Move | None:
    """The move the rules make for one contact: the furthest stage whose rule holds, forward
    of the current stage, or backward when that rule allows it; None to stay."""
    here = config.position(current)
    for stage, rule in config.rules():
        if stage.key == current or (stage.position < here and not rule.backward):
            continue
        seen: dict[str, Any] = {}
        if rule.condition.evaluate(facts, seen):
            return Move(facts.contact_id, current, stage.key, cause, rule.name,
                        {"seen": _plain(seen)})
    return None


def decide(config: StageConfig, facts: Mapping[int, Facts], current: Mapping[int, str],
           cause: str = "rule") -> list[Move]:
    """The moves the rules make for a batch (facts loaded once for all of it)."""
    moves = []
    for cid in sorted(facts):
        move = decide_one(config, facts[cid], current.get(cid), cause)
        if move is not None:
            moves.append(move)
    return moves


def apply_moves(conn: Connection, config: StageConfig, moves: Sequence[Move], now: int,
                router: Router | None = None) -> list[Move]:
    """Write `moves` (one per contact at most) set-wise; route the contacts entering stages
    that route. Returns the moves written."""
    moves = [m for m in moves if m.from_stage != m.to_stage]
    if not moves:
        return []
    ids = allocate_ids(conn, schema.stage_history, len(moves))
    insert_rows(conn, schema.contact_stages, ("contact_id", "stage", "since"),
                [(m.contact_id, m.to_stage, now) for m in moves],
                upsert_on=("contact_id",), update=("stage", "since"))
    insert_rows(conn, schema.stage_history, (
        "id", "contact_id", "from_stage", "to_stage", "cause", "detail", "at"), [
        (hid, m.contact_id, m.from_stage, m.to_stage, m.cause,
         dumps({"rule": m.rule, **m.detail}), now) for hid, m in zip(ids, moves, strict=True)])
    lock_event_log(conn)  # event ids must commit in order for the log's readers
    insert_rows(conn, schema.events, (
        "message_id", "contact_id", "type", "name", "properties", "context", "source",
        "timestamp", "received_at"), [
        (f"lifecycle:{hid}", m.contact_id, "track", STAGE_EVENT,
         dumps({"from": m.from_stage, "to": m.to_stage, "rule": m.rule, "cause": m.cause}),
         "{}", "lifecycle", now, now) for hid, m in zip(ids, moves, strict=True)],
        ignore_conflicts_on=("message_id",))
    mark_changed(conn, [m.contact_id for m in moves], now, consumers=("segments", "scores"))
    if router is not None:
        entering: dict[str, list[int]] = {}
        for m in moves:
            stage = config.get(m.to_stage)
            if stage is not None and stage.routes:
                entering.setdefault(m.to_stage, []).append(m.contact_id)
        for key, contact_ids in sorted(entering.items()):
            router(conn, contact_ids, now, f"stage:{key}")
    return moves


def _plain(seen: Mapping[str, Any]) -> dict[str, Any]:
    """What a rule looked at, reduced to JSON scalars (for the history's detail)."""
    out: dict[str, Any] = {}
    for key, value in list(seen.items())[:20]:
        out[str(key)] = value if isinstance(value, str | int | float | bool | None) \
            else str(value)[:200]
    return out
