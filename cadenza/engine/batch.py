"""One pass of the engine inside one transaction: load runs, move them, write everything.

`Batch` is the `StepContext` the step kinds see. It groups runs by (version, step), runs
each step once per group, and repeats until every run waits or ends; then `write` puts every
transition, history row, outbox row and counter in the database with one statement per
table. No statement is issued per contact.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.contacts import ProfileUpdate, apply_profile_updates
from cadenza.engine.catalog import Catalog, Target
from cadenza.engine.nodes import KINDS
from cadenza.engine.runs import Effects, Run
from cadenza.errors import Conflict
from cadenza.events import lock_event_log
from cadenza.journeys.spec import END, EXIT
from cadenza.segments import Facts, Needs, load_facts
from cadenza.store import allocate_ids, dumps, insert_rows, schema, select_in
from cadenza.store.changes import mark_changed

PARTITIONS = schema.PARTITIONS

MAX_STEPS_PER_PASS = 200
"""A run that moves this many steps in one pass without waiting is failed (a safety net:
publish refuses cycles without a wait)."""

RUN_COLUMNS = ("id, journey_id, version_id, contact_id, part, shadow, node, status, wake_at, "
               "wait_event, wait_key, seq, context, entered_at, active_slot, entry_key")


_PSEUDO = {"completed": END, "exited": EXIT, "failed": "$failed"}


def partition(contact_id: int) -> int:
    """The partition of a contact."""
    return contact_id % PARTITIONS


def run_from_row(row: Sequence[Any], cause: str) -> Run:
    """A run from a row selected with `RUN_COLUMNS`."""
    context = row[12]
    if context is None:
        context = {}
    return Run(id=row[0], journey_id=row[1], version_id=row[2], contact_id=row[3], part=row[4],
               shadow=bool(row[5]), node=row[6], status=row[7], wake_at=row[8],
               wait_event=row[9], wait_key=row[10], seq=row[11], context=context,
               entered_at=row[13], active_slot=row[14], entry_key=row[15], new=False,
               cause=cause)


def _update_runs(conn: Connection, moved: list[Run], now: int) -> None:
    """Write moved runs back, checking that nobody else moved them since they were read.

    Runs still in the journey and runs that ended go in two statements: only an ending
    changes `active_slot`, and leaving it out of the SET spares SQLite rewriting the unique
    index on it for every other move."""
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    going = [r for r in moved if r.active]
    ended = [r for r in moved if not r.active]
    written = 0
    if going:
        written += conn.exec_driver_sql(
            f"UPDATE enrollments SET node = {mark}, status = {mark}, wake_at = {mark}, "
            f"wait_event = {mark}, wait_key = {mark}, seq = {mark}, updated_at = {mark} "
            f"WHERE id = {mark} AND seq = {mark}",
            [(r.node, r.status, r.wake_at, r.wait_event, r.wait_key, r.seq, now, r.id,
              r.old_seq) for r in going]).rowcount
    if ended:
        written += conn.exec_driver_sql(
            f"UPDATE enrollments SET node = {mark}, status = {mark}, wake_at = NULL, "
            f"wait_event = NULL, wait_key = NULL, seq = {mark}, active_slot = NULL, "
            f"updated_at = {mark}, ended_at = {mark}, outcome = {mark} "
            f"WHERE id = {mark} AND seq = {mark}",
            [(r.node, r.status, r.seq, now, r.ended_at, r.outcome, r.id, r.old_seq)
             for r in ended]).rowcount
    if written != len(moved):
        # Someone else moved one of these enrollments since this pass read it: write nothing,
        # the next pass starts from what is in the database.
        raise Conflict(f"{len(moved) - written} enrollment(s) changed under this engine "
                       "pass; it was rolled back and will be retried")


class Batch:
    """A pass's runs, its effects, and the context step kinds run in."""

    def __init__(self, conn: Connection, catalog: Catalog, now: int) -> None:
        self.conn = conn
        self.catalog = catalog
        self.now = now
        self.effects = Effects(now)
        self.runs: list[Run] = []
        self._zones: dict[int, str | None] = {}
        self._next_id: int | None = None

    # --- StepContext ---------------------------------------------------------------------

    def facts(self, runs: Sequence[Run], needs: Needs) -> dict[int, Facts]:
        """Facts per run id: contact facts loaded for the group, plus the run's entry."""
        by_contact = load_facts(self.conn, sorted({r.contact_id for r in runs}), needs,
                                self.now)
        out: dict[int, Facts] = {}
        for run in runs:
            base = by_contact.get(run.contact_id) or Facts(run.contact_id)
            event = run.resume_event or {}
            out[run.id] = dataclasses.replace(base, entry=run.context.get("entry", {}),
                                              event=event.get("properties", {}))
        return out

    def journey_key(self, journey_id: int) -> str:
        """The key of a journey."""
        return self.catalog.keys[journey_id]

    def timezones(self, runs: Sequence[Run]) -> dict[int, str | None]:
        """Each run's contact's time zone, loaded once per pass."""
        missing = sorted({r.contact_id for r in runs} - self._zones.keys())
        if missing:
            for cid, tz in select_in(self.conn, "SELECT id, timezone FROM contacts "
                                     "WHERE id IN ({marks})", missing):
                self._zones[cid] = tz
            for cid in missing:
                self._zones.setdefault(cid, None)
        return self._zones

    # --- moving ----------------------------------------------------------------------------

    def admit(self, target: Target, candidates: Iterable[tuple[int, dict[str, Any], str | None,
                                                               int]],
              cause: str) -> list[Run]:
        """New runs for the candidates (contact id, context, entry key, born-from event id)
        that the journey's entry rules let in; the rest are dropped silently."""
        spec = target.spec
        wanted = list(candidates)
        if not wanted:
            return []
        ids = sorted({c[0] for c in wanted})
        history: dict[int, tuple[int, int]] = {}
        keys: set[tuple[int, str]] = set()
        for cid, last, active, entry_key in select_in(
                self.conn,
                "SELECT contact_id, entered_at, CASE WHEN status IN ('ready', 'waiting') "
                "THEN 1 ELSE 0 END, entry_key FROM enrollments WHERE journey_id = {p} "
                "AND shadow = {p} AND contact_id IN ({marks})",
                ids, before=[target.journey_id, target.shadow]):
            prev = history.get(cid, (0, 0))
            history[cid] = (max(prev[0], last), prev[1] + active)
            if entry_key is not None:
                keys.add((cid, entry_key))
        for run in self.runs:  # entries earlier in this same pass count too
            if run.journey_id == target.journey_id and run.shadow == target.shadow:
                prev = history.get(run.contact_id, (0, 0))
                history[run.contact_id] = (max(prev[0], run.entered_at),
                                           prev[1] + (1 if run.active else 0))
                if run.entry_key is not None:
                    keys.add((run.contact_id, run.entry_key))
        policy = spec.re_entry
        admitted: list[tuple[int, dict[str, Any], str | None, int]] = []
        for cid, context, entry_key, after in wanted:
            if entry_key is not None and (cid, entry_key) in keys:
                continue
            last, active = history.get(cid, (0, 0))
            if last:
                if active and not spec.allow_multiple:
                    continue
                if policy.policy == "never":
                    continue
                if policy.policy == "cooldown" and self.now - last < policy.cooldown_ms:
                    continue
            history[cid] = (self.now, active + 1)
            if entry_key is not None:
                keys.add((cid, entry_key))
            admitted.append((cid, context, entry_key, after))
        new_ids = self._allocate(len(admitted))
        runs = []
        first = spec.first
        for rid, (cid, context, entry_key, after) in zip(new_ids, admitted, strict=True):
            run = Run(id=rid, journey_id=target.journey_id, version_id=target.version_id,
                      contact_id=cid, part=partition(cid), shadow=target.shadow, node=first,
                      status="ready", wake_at=None, wait_event=None, wait_key=None, seq=0,
                      context=context, entered_at=self.now,
                      active_slot=None if spec.allow_multiple else 0, entry_key=entry_key,
                      new=True, cause=cause)
            run.after_event = after
            runs.append(run)
        self.runs.extend(runs)
        return runs

    def _allocate(self, count: int) -> list[int]:
        """Ids for new enrollments. On SQLite `allocate_ids` reads max(id), which does not
        see the runs this pass has not written yet: continue from the last id handed out."""
        if self.conn.dialect.name != "sqlite":
            return allocate_ids(self.conn, schema.enrollments, count)
        if self._next_id is None:
            self._next_id = allocate_ids(self.conn, schema.enrollments, 1)[0]
        first = self._next_id
        self._next_id += count
        return list(range(first, first + count))

    def load(self, runs: list[Run]) -> None:
        """Take runs loaded from rows into this pass (they will be written back)."""
        self.runs.extend(runs)

    def advance(self, runs: list[Run]) -> None:
        """Move `runs` step by step (grouped by version and step) until each waits or ends."""
        catalog = self.catalog
        effects = self.effects
        moving = [r for r in runs if r.active]
        rounds = 0
        while moving:
            rounds += 1
            groups: dict[tuple[int, bool, str, bool], list[Run]] = defaultdict(list)
            for run in moving:
                groups[(run.version_id, run.shadow, run.node, run.resume is not None)
                       ].append(run)
            for (version_id, shadow, node, resuming), group in groups.items():
                step = catalog.spec(version_id).steps[node]
                kind = KINDS[type(step)]
                effects.steps += len(group)
                if resuming:
                    kind.resume(step, group, self)
                else:
                    kind.enter(step, group, self)
                    effects.entered[(version_id, shadow, node)] += len(group)
                self._count(version_id, shadow, node, group)
            moving = [r for r in moving if r.status == "ready"]
            if rounds >= MAX_STEPS_PER_PASS:
                for run in moving:
                    effects.finish(run, "failed", "failed:too-many-steps")
                break

    def _count(self, version_id: int, shadow: bool, node: str, group: list[Run]) -> None:
        """Departures and edges of a group that has just run `node`."""
        targets = Counter(r.node if r.status == "ready" else _PSEUDO.get(r.status, "")
                          for r in group)
        held = targets.pop("", 0)
        effects = self.effects
        effects.departed[(version_id, shadow, node)] += len(group) - held
        for target, count in targets.items():
            effects.edges[(version_id, shadow, node, target)] += count

    # --- writing ---------------------------------------------------------------------------

    def write(self) -> None:
        """Write every run, history row, outbox row, counter and side table of the pass."""
        conn = self.conn
        now = self.now
        fresh = [r for r in self.runs if r.new]
        moved = [r for r in self.runs if not r.new and r.seq != r.old_seq]
        insert_rows(conn, schema.enrollments, (
            "id", "journey_id", "version_id", "contact_id", "part", "shadow", "node", "status",
            "wake_at", "wait_event", "wait_key", "seq", "context", "active_slot", "entry_key",
            "entered_at", "updated_at", "ended_at", "outcome"), [
            (r.id, r.journey_id, r.version_id, r.contact_id, r.part, r.shadow, r.node, r.status,
             r.wake_at, r.wait_event, r.wait_key, r.seq, dumps(r.context), r.active_slot,
             r.entry_key, r.entered_at, now, r.ended_at, r.outcome) for r in fresh])
        if moved:
            _update_runs(conn, moved, now)
        insert_rows(conn, schema.journey_history, (
            "enrollment_id", "seq", "contact_id", "version_id", "at", "cause", "steps"), [
            (r.id, r.old_seq, r.contact_id, r.version_id, now, r.cause, dumps(r.path))
            for r in self.runs if r.path])
        effects = self.effects
        insert_rows(conn, schema.outbox, (
            "idempotency_key", "contact_id", "enrollment_id", "journey_id", "version_id", "node",
            "part", "shadow", "channel", "template", "payload", "status", "attempts",
            "next_attempt_at", "created_at"), [
            (key, cid, eid, jid, vid, node, part, shadow, channel, template, payload,
             "pending", 0, at, at)
            for key, cid, eid, jid, vid, node, part, shadow, channel, template, payload, at
            in effects.outbox], ignore_conflicts_on=("idempotency_key",))
        self._write_counters()
        self._write_contact_changes()


    def _write_counters(self) -> None:
        effects = self.effects
        conn = self.conn
        steps: dict[tuple[int, bool, str], list[int]] = {}
        for key, count in effects.entered.items():
            steps.setdefault(key, [0, 0])[0] += count
        for key, count in effects.departed.items():
            steps.setdefault(key, [0, 0])[1] += count
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        if steps:
            conn.exec_driver_sql(
                "INSERT INTO journey_step_stats (version_id, shadow, node, entered, departed) "
                f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) "
                "ON CONFLICT (version_id, shadow, node) DO UPDATE SET "
                "entered = journey_step_stats.entered + excluded.entered, "
                "departed = journey_step_stats.departed + excluded.departed",
                [(v, s, n, e, d) for (v, s, n), (e, d) in sorted(steps.items())])
        if effects.edges:
            conn.exec_driver_sql(
                "INSERT INTO journey_edge_stats (version_id, shadow, source, target, count) "
                f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) "
                "ON CONFLICT (version_id, shadow, source, target) DO UPDATE SET "
                "count = journey_edge_stats.count + excluded.count",
                [(v, s, a, b, c) for (v, s, a, b), c in sorted(effects.edges.items())])
        if effects.conversions:
            insert_rows(conn, schema.conversions, (
                "enrollment_id", "journey_id", "version_id", "contact_id", "shadow", "goal",
                "event_id", "at"), [
                (r.id, r.journey_id, r.version_id, r.contact_id, r.shadow, goal, event_id,
                 self.now) for r, goal, event_id in effects.conversions],
                ignore_conflicts_on=("enrollment_id", "goal"))

    def _write_contact_changes(self) -> None:
        effects = self.effects
        conn = self.conn
        now = self.now
        if effects.attribute_updates:
            apply_profile_updates(conn, [ProfileUpdate(cid, now, attributes=attrs)
                                         for cid, attrs in effects.attribute_updates])
        insert_rows(conn, schema.contact_tags, ("contact_id", "tag", "created_at"),
                    [(cid, tag, now) for cid, tag in effects.tags_add],
                    ignore_conflicts_on=("contact_id", "tag"))
        if effects.tags_remove:
            mark = "%s" if conn.dialect.name == "postgresql" else "?"
            conn.exec_driver_sql(
                f"DELETE FROM contact_tags WHERE contact_id = {mark} AND tag = {mark}",
                effects.tags_remove)
        # Segments, scores and stages re-evaluate the contacts a journey changed.
        mark_changed(conn, [cid for cid, _ in effects.attribute_updates]
                     + [cid for cid, _ in effects.tags_add]
                     + [cid for cid, _ in effects.tags_remove], now)
        if effects.events:
            lock_event_log(conn)  # event ids must commit in order for the engine's cursor
            insert_rows(conn, schema.events, (
                "message_id", "contact_id", "type", "name", "properties", "context", "source",
                "timestamp", "received_at"), [
                (mid, cid, "track", name, dumps(props), "{}", "journey", now, now)
                for mid, cid, name, props in effects.events],
                ignore_conflicts_on=("message_id",))
