"""Entries that time brings: a date relative to a contact's date attribute, and broadcasts on
a recurring schedule.

Each trigger keeps a window cursor in `engine_cursors`: entries whose moment falls in
(start, now] are made, then start moves to now. A trigger seen for the first time starts at
now, so publishing a journey never enters contacts for moments already past. Every entry
carries an entry key naming its moment (`date:2026-12-01`, `schedule:<ms>`), and the
database keeps (journey, contact, entry key) unique, so a moment enters a contact once.
Broadcasts sweep the contacts in chunks across passes (a progress cursor), so a schedule over
a million contacts never holds them all in one transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cadenza.engine.batch import PARTITIONS, Batch
from cadenza.engine.catalog import Target
from cadenza.engine.timecalc import DAY_MS, date_attribute_instant, local_instant, zone
from cadenza.journeys.spec import DateTrigger, ScheduleTrigger
from cadenza.segments import Facts, Needs, load_facts
from cadenza.store import insert_rows, schema

SCAN_EVERY_MS = 60_000
"""Date and schedule triggers are checked at most this often."""

SWEEP_CHUNK = 5_000
"""Contacts a broadcast enters per pass."""


class _Cursors:
    """Named integer positions in `engine_cursors`, read and written in the pass."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        mark = "%s" if batch.conn.dialect.name == "postgresql" else "?"
        self.values: dict[str, int] = {
            name: int(pos) for name, pos in batch.conn.exec_driver_sql(
                f"SELECT name, position FROM engine_cursors WHERE name LIKE {mark}",
                ("scan:%",))}
        self.dirty: set[str] = set()

    def get(self, name: str) -> int | None:
        return self.values.get(name)

    def set(self, name: str, value: int) -> None:
        self.values[name] = value
        self.dirty.add(name)

    def drop(self, *names: str) -> None:
        for name in names:
            self.values.pop(name, None)
            self.dirty.discard(name)
        mark = "%s" if self.batch.conn.dialect.name == "postgresql" else "?"
        self.batch.conn.exec_driver_sql(f"DELETE FROM engine_cursors WHERE name = {mark}",
                                        [(n,) for n in names])

    def save(self) -> None:
        rows = [(n, self.values[n], self.batch.now) for n in sorted(self.dirty)]
        insert_rows(self.batch.conn, schema.engine_cursors, ("name", "position", "updated_at"),
                    rows, upsert_on=("name",), update=("position", "updated_at"))


def scan_entries(batch: Batch, parts: set[int]) -> None:
    """Make the date and schedule entries that are due, for contacts in `parts`."""
    catalog = batch.catalog
    if not catalog.entry_dates and not catalog.entry_schedules:
        return
    cursors = _Cursors(batch)
    for number, (target, trigger) in enumerate(catalog.entry_dates):
        name = f"scan:{target.version_id}:{int(target.shadow)}:date:{number}"
        start = cursors.get(name)
        if start is None:
            cursors.set(name, batch.now)
        elif batch.now - start >= SCAN_EVERY_MS:
            _date_entries(batch, target, trigger, start, parts)
            cursors.set(name, batch.now)
    for number, (target, strigger) in enumerate(catalog.entry_schedules):
        name = f"scan:{target.version_id}:{int(target.shadow)}:schedule:{number}"
        _sweep(batch, cursors, name, target, strigger, parts)
    cursors.save()


def _date_entries(batch: Batch, target: Target, trigger: DateTrigger, start: int,
                  parts: set[int]) -> None:
    conn = batch.conn
    now = batch.now
    # Which attribute dates can land in (start, now]: shift by the offset, widen by two days
    # for time zones and the time of day.
    shift = dt.timedelta(milliseconds=trigger.offset_ms)
    low = (dt.datetime.fromtimestamp(start / 1000, dt.UTC) - shift - dt.timedelta(days=2))
    high = (dt.datetime.fromtimestamp(now / 1000, dt.UTC) - shift + dt.timedelta(days=2))
    if conn.dialect.name == "postgresql":
        value = "attributes ->> %s"
        mark = "%s"
        path: str = trigger.attr
    else:
        value = "json_extract(attributes, ?)"
        mark = "?"
        path = '$."' + trigger.attr.replace('"', '""') + '"'
    sql = (f"SELECT id, {value}, timezone FROM contacts WHERE merged_into IS NULL "
           f"AND {value} >= {mark} AND {value} <= {mark}")
    rows = conn.exec_driver_sql(sql, (path, path, low.date().isoformat(), path,
                                      high.date().isoformat() + "~")).all()
    candidates = []
    for cid, raw, tz in rows:
        if cid % PARTITIONS not in parts:
            continue
        at = date_attribute_instant(raw, trigger.offset_ms, trigger.at, tz)
        if at is not None and start < at <= now:
            candidates.append((cid, {"entry": {trigger.attr: raw}}, f"date:{raw[:10]}", 0))
    _admit_where(batch, target, trigger.where, candidates, "date")


def _occurrence(trigger: ScheduleTrigger, tz_name: str | None, start: int, now: int
                ) -> int | None:
    """The latest occurrence of the schedule in (start, now], or None."""
    tz = zone(tz_name)
    day = dt.datetime.fromtimestamp(now / 1000, tz).date()
    first = dt.datetime.fromtimestamp(start / 1000, tz).date() - dt.timedelta(days=1)
    while day >= first:
        if trigger.every == "day" or not trigger.weekdays or day.weekday() in trigger.weekdays:
            at = local_instant(day, trigger.at, tz)
            if start < at <= now:
                return at
            if at <= start:
                return None
        day -= dt.timedelta(days=1)
    return None


def _sweep(batch: Batch, cursors: _Cursors, name: str, target: Target,
           trigger: ScheduleTrigger, parts: set[int]) -> None:
    now = batch.now
    start = cursors.get(name)
    if start is None:
        cursors.set(name, now)
        return
    until = cursors.get(name + ":until")
    progress = cursors.get(name + ":progress") or 0
    if until is None:  # no sweep under way: is one due?
        if now - start < SCAN_EVERY_MS:
            return
        until = now
        per_contact = trigger.timezone == "contact"
        if not per_contact and _occurrence(trigger, trigger.timezone, start, until) is None:
            cursors.set(name, until)
            return
        cursors.set(name + ":until", until)
        progress = 0
    conn = batch.conn
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    rows = conn.exec_driver_sql(
        f"SELECT id, timezone FROM contacts WHERE merged_into IS NULL AND id > {mark} "
        f"ORDER BY id LIMIT {SWEEP_CHUNK}", (progress,)).all()
    candidates = []
    for cid, tz in rows:
        if cid % PARTITIONS not in parts:
            continue
        zone_name = tz if trigger.timezone == "contact" else trigger.timezone
        at = _occurrence(trigger, zone_name, start, until)
        if at is not None:
            candidates.append((cid, {"entry": {"schedule": at}}, f"schedule:{at}", 0))
    _admit_where(batch, target, trigger.where, candidates, "schedule")
    if len(rows) < SWEEP_CHUNK:
        cursors.set(name, until)
        cursors.drop(name + ":until", name + ":progress")
    else:
        cursors.set(name + ":progress", int(rows[-1][0]))


def _admit_where(batch: Batch, target: Target, where: Any,
                 candidates: list[tuple[int, dict[str, Any], str, int]], cause: str) -> None:
    if not candidates:
        return
    if where is not None:
        needs: Needs = where.needs()
        facts = load_facts(batch.conn, [c[0] for c in candidates], needs, batch.now)
        candidates = [c for c in candidates
                      if where.evaluate(facts.get(c[0]) or Facts(c[0], entry=c[1]["entry"]))]
    batch.advance(batch.admit(target, candidates, cause))


__all__ = ["DAY_MS", "SCAN_EVERY_MS", "scan_entries"]
