"""Segment use cases: define, preview, compute, static lists, history and members.

Every state change happens in one transaction: a refused definition, an unknown contact in a
list call or a cycle leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import list_fields, normalize_email
from cadenza.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from cadenza.segments.conditions import parse_condition
from cadenza.segments.matching import count_matching, referenced_segments, sample_matching
from cadenza.segments.membership import Change, write_changes
from cadenza.segments.models import (
    MAX_LIST,
    Drift,
    Estimate,
    ListReport,
    Segment,
    SegmentInput,
    check_key,
)
from cadenza.segments.nodes import Condition
from cadenza.segments.queries import (
    all_segments,
    contact_segments,
    drift_rows,
    find_segment,
    history_page,
    member_ids,
    members_page,
)
from cadenza.segments.realtime import follow_dependents
from cadenza.segments.recompute import compute, recompute_all
from cadenza.store import Page, Store, check_limit, decode_cursor, encode_cursor, select_in
from cadenza.store import schema as _schema

MAX_SAMPLE = 100
"""Largest preview sample."""
_NO_ENTRY = ("prop", "event_prop")


class SegmentService:
    """Segments of the workspace."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # --- definitions -------------------------------------------------------------------------

    def create(self, document: Any) -> Segment:
        """Save a new segment and fill it (a 409 Conflict when the key is taken)."""
        wanted = SegmentInput.parse(document)
        now = self.clock.now_ms()

        def work(conn: Connection) -> Segment:
            if find_segment(conn, wanted.key) is not None:
                raise Conflict(f"segment {wanted.key!r} already exists; update it with PUT "
                               f"/api/segments/{wanted.key} or pick another key")
            definition, depends = self._checked(conn, wanted)
            conn.execute(_schema.segments.insert().values(
                key=wanted.key, name=wanted.name, description=wanted.description,
                kind=wanted.kind, definition=definition, depends_on=sorted(depends),
                status="active", member_count=0, created_at=now, updated_at=now))
            segment = _get(conn, wanted.key)
            if segment.dynamic:
                compute(conn, segment, now, "edit", first=True)
            return _get(conn, wanted.key)

        return self.store.retry(work)

    def update(self, key: str, document: Any) -> Segment:
        """Replace a segment's definition; members follow the new one at once."""
        wanted = SegmentInput.parse(document, key=key)
        now = self.clock.now_ms()

        def work(conn: Connection) -> Segment:
            old = _get(conn, key)
            if old.status != "active":
                raise Conflict(f"segment {key!r} is archived; create a new one instead")
            if old.kind != wanted.kind:
                raise ValidationFailed("kind", f"segment {key!r} is {old.kind}; a segment "
                                               "cannot change kind (create a new one)")
            definition, depends = self._checked(conn, wanted)
            conn.execute(_schema.segments.update().where(_schema.segments.c.id == old.id)
                         .values(name=wanted.name, description=wanted.description,
                                 definition=definition, depends_on=sorted(depends),
                                 updated_at=max(now, old.updated_at + 1)))
            segment = _get(conn, key)
            if segment.dynamic and definition != old.definition:
                compute(conn, segment, now, "edit")
                for dependent in _dependents(conn, key):
                    compute(conn, dependent, now, "edit")
            return _get(conn, key)

        return self.store.retry(work)

    def archive(self, key: str) -> Segment:
        """Archive a segment no active segment references; members are kept as they were."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> Segment:
            segment = _get(conn, key)
            users = sorted(s.key for s in all_segments(conn, "active") if key in s.depends_on)
            if users:
                raise Conflict(f"segment {key!r} is referenced by {', '.join(users)}; change "
                               "or archive those first")
            conn.execute(_schema.segments.update().where(_schema.segments.c.id == segment.id)
                         .values(status="archived",
                                 updated_at=max(now, segment.updated_at + 1)))
            return _get(conn, key)

        return self.store.retry(work)

    def get(self, key: str) -> Segment:
        """One segment."""
        with self.store.read() as conn:
            return _get(conn, key)

    def all(self, status: str | None = "active") -> list[Segment]:
        """Segments with their member counts (all statuses when `status` is None)."""
        if status is not None and status not in ("active", "archived"):
            raise ValidationFailed("status", f"{status!r} is not a status; use active or "
                                             "archived")
        with self.store.read() as conn:
            return all_segments(conn, status)

    def estimate(self, condition: Any, sample: int = 10) -> Estimate:
        """How many contacts `condition` matches now, and a sample of them; saves nothing."""
        if isinstance(sample, bool) or not isinstance(sample, int) \
                or not 0 <= sample <= MAX_SAMPLE:
            raise ValidationFailed("sample", f"must be a whole number from 0 to {MAX_SAMPLE}")
        now = self.clock.now_ms()
        with self.store.read() as conn:
            parsed = self._condition(conn, condition)
            _check_references(conn, "", referenced_segments(parsed))
            count = count_matching(conn, parsed, now)
            ids = sample_matching(conn, parsed, now, sample)
            rows = select_in(conn, "SELECT id, email, user_id, attributes FROM contacts "
                             "WHERE id IN ({marks})", ids)
        found = [{"contact_id": int(cid), "email": email, "user_id": user,
                  "name": _name(attrs)} for cid, email, user, attrs in rows]
        return Estimate(count, sorted(found, key=lambda r: r["contact_id"]))

    def recompute(self, key: str | None = None) -> list[Drift]:
        """Recompute one dynamic segment and those referencing it (or every one) now and
        report the drift."""
        keys = None
        if key is not None:
            segment = self.get(key)
            if not segment.dynamic or segment.status != "active":
                raise ValidationFailed("segment", f"{key!r} is not an active dynamic "
                                                  "segment; only those are computed")
            with self.store.read() as conn:
                keys = [key, *(s.key for s in _dependents(conn, key))]
        return recompute_all(self.store, self.clock.now_ms(), keys)

    def drift(self, key: str | None = None, limit: int = 50) -> list[Drift]:
        """The latest recomputes and what they corrected, newest first."""
        check_limit(limit)
        with self.store.read() as conn:
            sid = _get(conn, key).id if key is not None else None
            return drift_rows(conn, sid, limit)

    # --- static lists ------------------------------------------------------------------------

    def add(self, key: str, *, contact_ids: Sequence[Any] = (), emails: Sequence[Any] = (),
            user_ids: Sequence[Any] = (), source: str = "api") -> ListReport:
        """Add contacts (by id, email or user id) to a static segment."""
        return self._change_list(key, True, contact_ids, emails, user_ids, source)

    def remove(self, key: str, *, contact_ids: Sequence[Any] = (), emails: Sequence[Any] = (),
               user_ids: Sequence[Any] = (), source: str = "api") -> ListReport:
        """Remove contacts (by id, email or user id) from a static segment."""
        return self._change_list(key, False, contact_ids, emails, user_ids, source)

    def upload(self, key: str, data: bytes, *, remove: bool = False) -> ListReport:
        """Add (or remove) the contacts named by a CSV file: a header row, then a column
        `email`, `user_id` or `contact_id`. Rows naming nobody are reported, not fatal."""
        from cadenza.segments.upload import read_list

        listed = read_list(data)
        return self._change_list(key, not remove, listed.contact_ids, listed.emails,
                                 listed.user_ids, "upload", rows=listed.rows,
                                 bad=listed.bad, limit=None)

    def _change_list(self, key: str, entering: bool, contact_ids: Sequence[Any],
                     emails: Sequence[Any], user_ids: Sequence[Any], source: str, *,
                     rows: Mapping[tuple[str, Any], int] | None = None,
                     bad: Sequence[dict[str, Any]] = (), limit: int | None = MAX_LIST
                     ) -> ListReport:
        total = len(contact_ids) + len(emails) + len(user_ids)
        if limit is not None and total > limit:
            raise PayloadTooLarge("contacts", f"names {total} contacts; at most {limit} per "
                                              "call (upload a CSV for more)")
        if not total and not bad:
            raise ValidationFailed("contacts", "names no contact; give contact_ids, emails "
                                               "or user_ids")
        ids = _ints(contact_ids, "contact_ids")
        mails = [(value, normalize_email(value, f"emails.{i}")) if rows is None
                 else (value, value) for i, value in enumerate(emails)]
        users = [_text(value, f"user_ids.{i}") for i, value in enumerate(user_ids)]
        now = self.clock.now_ms()

        def work(conn: Connection) -> ListReport:
            segment = _get(conn, key)
            if segment.dynamic:
                raise ValidationFailed("segment", f"{key!r} is dynamic: its condition decides "
                                                  "who is in; only static segments take lists")
            if segment.status != "active":
                raise Conflict(f"segment {key!r} is archived")
            unknown = list(bad)
            found: list[int] = []
            live = {int(r[0]) for r in select_in(
                conn, "SELECT id FROM contacts WHERE id IN ({marks}) AND merged_into IS NULL",
                ids)}
            for value in ids:
                _resolve(found, unknown, rows, "contact_id", value, value if value in live
                         else None)
            for kind, pairs in (("email", mails), ("user_id", [(u, u) for u in users])):
                held = _identities(conn, kind, [n for _, n in pairs])
                for raw, norm in pairs:
                    _resolve(found, unknown, rows, kind, raw, held.get(norm))
            distinct = sorted(set(found))
            already = member_ids(conn, segment.id, distinct)
            moving = [c for c in distinct if (c in already) != entering]
            changes = [Change(segment.id, segment.key, c, entering) for c in moving]
            write_changes(conn, changes, source, source, now)
            follow_dependents(conn, changes, source, now)
            return ListReport(len(moving), len(distinct) - len(moving),
                              sorted(unknown, key=lambda u: u.get("row") or 0))

        return self.store.retry(work)

    # --- members, history, export ------------------------------------------------------------

    def export(self, key: str, attributes: Sequence[str] = ()) -> Iterator[str]:
        """The members as CSV text chunks (formula cells neutralised)."""
        from cadenza.segments.export import check_attributes, csv_chunks, export_rows

        columns = check_attributes(attributes)
        segment = self.get(key)
        return csv_chunks(export_rows(self.store, segment.id, columns))

    def members(self, key: str, cursor: str | None = None, limit: int = 100) -> Page:
        """A page of members by contact id."""
        check_limit(limit)
        after = decode_cursor(cursor, 1)[0] if cursor else 0
        with self.store.read() as conn:
            rows = members_page(conn, _get(conn, key).id, after, limit + 1)
        items = [{"contact_id": int(c), "since": int(s), "source": src, "email": e,
                  "user_id": u} for c, s, src, e, u in rows[:limit]]
        nxt = encode_cursor(items[-1]["contact_id"]) if len(rows) > limit else None
        return Page(items, nxt)

    def history(self, key: str | None = None, contact_id: int | None = None,
                cursor: str | None = None, limit: int = 100) -> Page:
        """Entries and exits, newest first, of a segment or of a contact (or both)."""
        check_limit(limit)
        before = decode_cursor(cursor, 1)[0] if cursor else None
        with self.store.read() as conn:
            sid = _get(conn, key).id if key is not None else None
            if contact_id is not None:
                _require_contact(conn, contact_id)
            rows = history_page(conn, segment_id=sid, contact_id=contact_id, before=before,
                                limit=limit + 1)
        items = [{"id": int(h), "segment": s, "contact_id": int(c), "change": ch,
                  "cause": cause, "at": int(at)} for h, s, c, ch, cause, at in rows[:limit]]
        nxt = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
        return Page(items, nxt)

    def contact_segments(self, contact_id: int) -> list[dict[str, Any]]:
        """The active segments a contact belongs to."""
        with self.store.read() as conn:
            _require_contact(conn, contact_id)
            return [{"key": k, "name": n, "kind": kind, "since": int(s), "source": src}
                    for k, n, kind, s, src in contact_segments(conn, contact_id)]

    # --- checks ------------------------------------------------------------------------------

    def _condition(self, conn: Connection, raw: Any) -> Condition:
        declared = list_fields(conn)
        condition = parse_condition(
            raw, "condition",
            fields={f.name: f.type for f in declared if f.entity == "contact"},
            company_fields={f.name: f.type for f in declared if f.entity == "company"})
        kind = _first_key(condition.to_json(), _NO_ENTRY)
        if kind is not None:
            raise ValidationFailed(f"condition.{kind[1]}" if kind[1] else "condition",
                                   f"{kind[0]!r} conditions read the event being handled; a "
                                   "segment has none (use count or attr instead)")
        return condition

    def _checked(self, conn: Connection, wanted: SegmentInput
                 ) -> tuple[dict[str, Any] | None, set[str]]:
        if wanted.kind == "static":
            return None, set()
        condition = self._condition(conn, wanted.condition)
        depends = referenced_segments(condition)
        _check_references(conn, wanted.key, depends)
        return condition.to_json(), depends


def _get(conn: Connection, key: str | None) -> Segment:
    segment = find_segment(conn, key) if key is not None else None
    if segment is None:
        raise NotFound("segment", key)
    return segment


def _dependents(conn: Connection, key: str) -> list[Segment]:
    """Active dynamic segments that reference `key`, directly or not, in dependency order."""
    from cadenza.segments.recompute import dependency_order

    active = [s for s in all_segments(conn, "active") if s.dynamic]
    reached = {key}
    changed = True
    while changed:
        changed = False
        for s in active:
            if s.key not in reached and reached & set(s.depends_on):
                reached.add(s.key)
                changed = True
    return [s for s in dependency_order(active) if s.key in reached and s.key != key]


def _check_references(conn: Connection, key: str, depends: set[str]) -> None:
    """Referenced segments exist and are active, and `key` is on no cycle through them."""
    segments = {s.key: s for s in all_segments(conn)}
    for ref in sorted(depends - {key}):  # a self-reference is reported as a cycle below
        found = segments.get(ref)
        if found is None:
            raise ValidationFailed("condition", f"references segment {ref!r}, which does not "
                                                "exist; create it first or fix the key")
        if found.status != "active":
            raise ValidationFailed("condition", f"references segment {ref!r}, which is "
                                                "archived")
    if not key:
        return
    graph = {k: set(s.depends_on) for k, s in segments.items() if s.status == "active"}
    graph[key] = set(depends)
    path = _cycle(graph, key)
    if path:
        raise ValidationFailed("condition", f"segment references form a cycle: "
                                            f"{' -> '.join(path)}; a segment cannot contain "
                                            "itself")


def _cycle(graph: Mapping[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start through `graph`, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _first_key(shape: Any, wanted: Sequence[str], where: str = "") -> tuple[str, str] | None:
    if isinstance(shape, Mapping):
        for name in wanted:
            if name in shape:
                return name, where
        for name, value in shape.items():
            found = _first_key(value, wanted, f"{where}.{name}" if where else str(name))
            if found:
                return found
    elif isinstance(shape, list):
        for i, item in enumerate(shape):
            found = _first_key(item, wanted, f"{where}.{i}" if where else str(i))
            if found:
                return found
    return None


def _ints(values: Sequence[Any], field: str) -> list[int]:
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationFailed(f"{field}.{i}", f"must be a contact id (a positive whole "
                                                   f"number), not {value!r}")
        out.append(value)
    return out


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise ValidationFailed(field, "must be a non-empty string of at most 256 characters")
    return value.strip()


def _identities(conn: Connection, kind: str, values: list[str]) -> dict[str, int]:
    if not values:
        return {}
    return {v: int(c) for v, c in select_in(
        conn, "SELECT i.value, i.contact_id FROM identities i JOIN contacts c ON "
        "c.id = i.contact_id WHERE c.merged_into IS NULL AND i.kind = {p} AND i.value IN "
        "({marks})", sorted(set(values)), before=[kind])}


def _resolve(found: list[int], unknown: list[dict[str, Any]],
             rows: Mapping[tuple[str, Any], int] | None, kind: str, value: Any,
             contact: int | None) -> None:
    if contact is not None:
        found.append(contact)
        return
    entry: dict[str, Any] = {"kind": kind, "value": value,
                             "reason": f"no contact has this {kind.replace('_', ' ')}"}
    if rows is not None:
        entry["row"] = rows.get((kind, value))
    unknown.append(entry)


def _require_contact(conn: Connection, contact_id: int) -> None:
    if not select_in(conn, "SELECT id FROM contacts WHERE id IN ({marks})", [contact_id]):
        raise NotFound("contact", contact_id)


def _name(raw: Any) -> str | None:
    from cadenza.store import loads

    attrs = loads(raw) or {}
    for key in ("name", "full_name"):
        if isinstance(attrs.get(key), str):
            return str(attrs[key])
    first, last = attrs.get("first_name"), attrs.get("last_name")
    parts = [p for p in (first, last) if isinstance(p, str) and p]
    return " ".join(parts) or None


__all__ = ["MAX_SAMPLE", "SegmentService", "check_key"]
