"""Identity resolution and merge, for a whole batch of messages at once.

Every identity (user id, anonymous id, email, phone, external id) belongs to exactly one live
contact (a unique key in the database). A batch is resolved in memory in message order with a
union-find over contact ids, then written with one statement per kind of change:

- a message whose identities are all unknown creates a contact;
- identities that point at several contacts merge them into one (the winner keeps its id; the
  losers become tombstones with `merged_into`) unless two of them carry different user ids:
  then the merge is refused, the event goes to the contact of its user id, and the refusal is
  recorded beside the merges so that both are explainable;
- a contact holds at most one user id.

Why a hand-written resolver: Segment/RudderStack identity graphs are hosted services; the
open-source anchors resolve one message at a time with a query each. Doing it per batch is what
lets ingestion stay set-oriented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import MergeRefused, NotFound
from cadenza.store import allocate_ids, dialect_insert, insert_rows, schema, select_in

USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"
EMAIL = "email"
PHONE = "phone"
_CHUNK = 400

Key = tuple[str, str]


@dataclass
class Claim:
    """What one message says about who sent it."""

    message_id: str
    timestamp: int
    reason: str
    """identify, track, alias, import, ... (recorded on merges)"""
    user_id: str | None = None
    keys: list[Key] = field(default_factory=list)
    """Other identities (anonymous id, email, phone, external ids)."""
    previous: str | None = None
    """alias: the id being joined into `user_id` (a user id or an anonymous id)."""
    source: str | None = None
    """Where the message came from, recorded on new identities (default: the batch's)."""


@dataclass
class Merge:
    """A merge done (or refused) while resolving a batch."""

    winner: int
    loser: int
    reason: str
    outcome: str
    key: Key | None
    message_id: str
    at: int
    detail: str = ""


@dataclass
class Resolution:
    """Where each claim landed, and what changed on the way."""

    contact_ids: list[int]
    created: set[int]
    merges: list[Merge]


class _Batch:
    """In-memory view of the identity graph for the keys one batch touches."""

    def __init__(self, owner: dict[Key, int], users: dict[int, str | None]) -> None:
        self.owner = owner
        self.users = users
        self.parent: dict[int, int] = {}
        self.next_temp = -1
        self.created_at: dict[int, int] = {}
        self.new_keys: dict[Key, tuple[int, int, str | None]] = {}
        self.merges: list[Merge] = []

    def find(self, cid: int) -> int:
        root = cid
        while root in self.parent:
            root = self.parent[root]
        while cid != root:
            nxt = self.parent[cid]
            self.parent[cid] = root
            cid = nxt
        return root

    def owner_of(self, key: Key) -> int | None:
        cid = self.owner.get(key)
        return None if cid is None else self.find(cid)

    def new_contact(self, user_id: str | None, at: int) -> int:
        cid = self.next_temp
        self.next_temp -= 1
        self.users[cid] = user_id
        self.created_at[cid] = at
        return cid

    def attach(self, key: Key, cid: int, at: int, source: str | None = None) -> None:
        self.owner[key] = cid
        self.new_keys[key] = (cid, at, source)
        if key[0] == USER_ID:
            self.users[cid] = key[1]

    def join(self, winner: int, loser: int, claim: Claim, key: Key | None) -> None:
        """Merge `loser` into `winner` unless their user ids differ."""
        if winner == loser:
            return
        uw, ul = self.users.get(winner), self.users.get(loser)
        if uw and ul and uw != ul:
            self.merges.append(
                Merge(winner, loser, claim.reason, "refused", key, claim.message_id,
                      claim.timestamp, f"different user ids {uw!r} and {ul!r}")
            )
            return
        self.parent[loser] = winner
        self.users[winner] = uw or ul
        self.merges.append(
            Merge(winner, loser, claim.reason, "merged", key, claim.message_id, claim.timestamp)
        )


def _older_first(cid: int) -> tuple[int, int]:
    # Stored contacts (positive ids) before new ones; then by age.
    return (0, cid) if cid > 0 else (1, -cid)


def _resolve_one(batch: _Batch, claim: Claim) -> int:
    uid_key: Key | None = (USER_ID, claim.user_id) if claim.user_id else None
    others: list[tuple[Key, int]] = []
    keys = list(claim.keys)
    if claim.previous is not None:
        previous = [(USER_ID, claim.previous), (ANONYMOUS_ID, claim.previous)]
        known = [k for k in previous if batch.owner_of(k) is not None]
        keys.extend(known or [(ANONYMOUS_ID, claim.previous)])
    for key in keys:
        cid = batch.owner_of(key)
        if cid is not None:
            others.append((key, cid))

    winner = batch.owner_of(uid_key) if uid_key else None
    if winner is None:
        # No contact holds this user id yet: adopt the oldest candidate without another one.
        candidates = sorted(
            {cid for _, cid in others if not (uid_key and batch.users.get(cid) not in
                                                 (None, claim.user_id))},
            key=_older_first,
        )
        winner = (candidates[0] if candidates
                  else batch.new_contact(claim.user_id, claim.timestamp))
        if uid_key:
            batch.attach(uid_key, winner, claim.timestamp, claim.source)
    for key, cid in others:
        batch.join(winner, batch.find(cid), claim, key)
    winner = batch.find(winner)
    for key in keys:
        if batch.owner_of(key) is None:
            batch.attach(key, winner, claim.timestamp, claim.source)
    return winner


def resolve(conn: Connection, claims: Sequence[Claim], source: str) -> Resolution:
    """Resolve every claim of a batch to a contact id, writing new contacts and merges."""
    keys: set[Key] = set()
    for claim in claims:
        if claim.user_id:
            keys.add((USER_ID, claim.user_id))
        keys.update(claim.keys)
        if claim.previous is not None:
            keys.add((USER_ID, claim.previous))
            keys.add((ANONYMOUS_ID, claim.previous))
    owner = _load_owners(conn, keys)
    users = _load_user_ids(conn, set(owner.values()))
    batch = _Batch(owner, users)
    landed = [_resolve_one(batch, claim) for claim in claims]
    real, merges = _write(conn, batch, source)
    ids = [real(batch.find(cid)) for cid in landed]
    created = {real(cid) for cid in batch.created_at if batch.find(cid) == cid}
    return Resolution(ids, created, merges)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_owners(conn: Connection, keys: set[Key]) -> dict[Key, int]:
    by_kind: dict[str, list[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, []).append(value)
    owner: dict[Key, int] = {}
    for kind, values in by_kind.items():
        rows = select_in(conn, "SELECT value, contact_id FROM identities "
                         "WHERE kind = {p} AND value IN ({marks})", values, before=[kind])
        for value, cid in rows:
            owner[(kind, value)] = cid
    return owner


def _load_user_ids(conn: Connection, ids: set[int]) -> dict[int, str | None]:
    rows = select_in(conn, "SELECT id, user_id FROM contacts WHERE id IN ({marks})",
                     sorted(ids))
    return dict(rows)


def _write(
    conn: Connection, batch: _Batch, source: str
) -> tuple[Callable[[int], int], list[Merge]]:
    """Insert new contacts, apply merges, insert new identities; map temp ids to real ones.

    Returns the mapping and the merges as recorded (with real contact ids).
    """
    # Only new contacts that survived the batch (were not merged away) are created.
    survivors = [cid for cid in sorted(batch.created_at, reverse=True) if batch.find(cid) == cid]
    mapping: dict[int, int] = {}
    if survivors:
        ids = allocate_ids(conn, schema.contacts, len(survivors))
        mapping = dict(zip(survivors, ids, strict=True))
        insert_rows(
            conn, schema.contacts, ("id", "user_id", "attributes", "created_at", "updated_at"),
            [(mapping[cid], batch.users.get(cid), "{}", batch.created_at[cid],
              batch.created_at[cid]) for cid in survivors],
        )

    def real(cid: int) -> int:
        return mapping.get(cid, cid)

    recorded: list[Merge] = []
    for merge in batch.merges:
        # Merge into where the winner finally ended up (it may itself have lost later on).
        winner = real(batch.find(merge.winner))
        if merge.outcome == "merged":
            if merge.loser < 0:
                continue  # a contact born and merged inside this batch never reached the store
            loser = merge.loser
            merge_contacts(conn, winner, loser, merge.at)
        else:
            # A refusal keeps both contacts, so it is recorded even when one of them was born
            # in this batch: name each by where it stands after the batch.
            loser = real(batch.find(merge.loser))
        recorded.append(Merge(winner, loser, merge.reason, merge.outcome, merge.key,
                              merge.message_id, merge.at, merge.detail))
        conn.execute(
            sa.insert(schema.contact_merges).values(
                winner_id=winner,
                loser_id=loser,
                reason=merge.reason,
                outcome=merge.outcome,
                identity_kind=merge.key[0] if merge.key else None,
                identity_value=merge.key[1] if merge.key else None,
                message_id=merge.message_id,
                details={"detail": merge.detail} if merge.detail else {},
                at=merge.at,
            )
        )
    if batch.new_keys:
        insert_rows(
            conn, schema.identities, ("kind", "value", "contact_id", "source", "created_at"),
            [(kind, value, real(batch.find(cid)), key_source or source, at)
             for (kind, value), (cid, at, key_source) in batch.new_keys.items()],
        )
    # Stored contacts that gained a user id in this batch.
    gained = [
        {"cid": cid, "uid": uid}
        for cid, uid in batch.users.items()
        if cid > 0 and uid and batch.find(cid) == cid
        and (USER_ID, uid) in batch.new_keys
    ]
    if gained:
        t = schema.contacts
        conn.execute(
            sa.update(t).where(t.c.id == sa.bindparam("cid")).values(user_id=sa.bindparam("uid")),
            gained,
        )
    return real, recorded


# Tables whose rows follow a contact when it is merged into another. Later domains add theirs
# with `register_merge_table` (one explicit line each, no signals).
_MERGE_TABLES: list[sa.Table] = [schema.identities, schema.events, schema.consent_history]


def register_merge_table(table: sa.Table) -> None:
    """Make rows of `table` (which has a `contact_id` column) follow merges."""
    if table not in _MERGE_TABLES:
        _MERGE_TABLES.append(table)


def merge_contacts(conn: Connection, winner: int, loser: int, at: int) -> None:
    """Move everything of `loser` to `winner`; the loser stays as a tombstone.

    Raises `NotFound` when either contact does not exist, and `MergeRefused` when they are the
    same contact, either is already merged, or they hold different user ids.
    """
    c = schema.contacts
    if winner == loser:
        raise MergeRefused(winner, loser, "a contact cannot be merged into itself")
    rows = {
        row["id"]: row
        for row in conn.execute(sa.select(c).where(c.c.id.in_([winner, loser]))).mappings()
    }
    for cid in (winner, loser):
        if cid not in rows:
            raise NotFound("contact", cid)
        if rows[cid]["merged_into"] is not None:
            raise MergeRefused(winner, loser, f"contact {cid} was already merged into "
                               f"{rows[cid]['merged_into']}; merge that one instead")
    w, lo = rows[winner], rows[loser]
    if w["user_id"] and lo["user_id"] and w["user_id"] != lo["user_id"]:
        raise MergeRefused(winner, loser, f"different user ids {w['user_id']!r} and "
                           f"{lo['user_id']!r}")
    # The winner's attributes win; the loser's fill the gaps.
    attributes = {**(lo["attributes"] or {}), **(w["attributes"] or {})}
    conn.execute(
        sa.update(c)
        .where(c.c.id == winner)
        .values(
            attributes=attributes,
            email=w["email"] or lo["email"],
            phone=w["phone"] or lo["phone"],
            user_id=w["user_id"] or lo["user_id"],
            timezone=w["timezone"] or lo["timezone"],
            locale=w["locale"] or lo["locale"],
            created_at=min(w["created_at"], lo["created_at"]),
            updated_at=at,
        )
    )
    for table in _MERGE_TABLES:
        conn.execute(
            sa.update(table).where(table.c.contact_id == loser).values(contact_id=winner)
        )
    _merge_consents(conn, winner, loser)
    _merge_memberships(conn, winner, loser)
    _merge_tags(conn, winner, loser)
    _merge_enrollments(conn, winner, loser, at)
    conn.execute(sa.update(c).where(c.c.merged_into == loser).values(merged_into=winner))
    conn.execute(
        sa.update(c).where(c.c.id == loser).values(merged_into=winner, user_id=None, updated_at=at)
    )


def _merge_tags(conn: Connection, winner: int, loser: int) -> None:
    t = schema.contact_tags
    rows = conn.execute(sa.select(t.c.tag, t.c.created_at).where(t.c.contact_id == loser)).all()
    if rows:
        conn.execute(dialect_insert(conn, t).on_conflict_do_nothing(),
                     [{"contact_id": winner, "tag": tag, "created_at": created}
                      for tag, created in rows])
        conn.execute(sa.delete(t).where(t.c.contact_id == loser))


def _merge_enrollments(conn: Connection, winner: int, loser: int, at: int) -> None:
    """The loser's journeys follow the winner. Where both are active in the same journey the
    winner's enrollment carries on and the loser's ends (outcome `merged`); an entry both
    made for the same reason keeps the winner's. `seq` moves, so an engine pass that read
    the loser's rows before the merge cannot write them back."""
    e = schema.enrollments
    active = ("ready", "waiting")
    winner_active = sa.select(e.c.journey_id, e.c.shadow).where(
        e.c.contact_id == winner, e.c.status.in_(active))
    busy = {(j, bool(sh)) for j, sh in conn.execute(winner_active)}
    winner_keys = {(j, bool(sh), k) for j, sh, k in conn.execute(
        sa.select(e.c.journey_id, e.c.shadow, e.c.entry_key).where(
            e.c.contact_id == winner, e.c.entry_key.is_not(None)))}
    for eid, jid, shadow, status, entry_key in conn.execute(
            sa.select(e.c.id, e.c.journey_id, e.c.shadow, e.c.status, e.c.entry_key)
            .where(e.c.contact_id == loser)).all():
        values: dict[str, Any] = {"contact_id": winner, "part": winner % schema.PARTITIONS,
                                  "seq": e.c.seq + 1, "updated_at": at}
        if status in active and (jid, bool(shadow)) in busy:
            values.update(status="exited", outcome="merged", ended_at=at, active_slot=None,
                          wake_at=None, wait_event=None, wait_key=None)
        if entry_key is not None and (jid, bool(shadow), entry_key) in winner_keys:
            values["entry_key"] = None
        conn.execute(sa.update(e).where(e.c.id == eid).values(**values))


# On a tie in time, the more restrictive decision stands (rows come in no particular order).
_RESTRICTIVE = {"opted_out": 2, "pending": 1, "opted_in": 0}


def _merge_consents(conn: Connection, winner: int, loser: int) -> None:
    # Per (channel, purpose) the most recent decision stands, whichever contact it was on.
    t = schema.consents
    rows = conn.execute(sa.select(t).where(t.c.contact_id.in_([winner, loser]))).mappings()
    latest: dict[tuple[str, str], Any] = {}

    def rank(row: Any) -> tuple[int, int, bool]:
        return (row["updated_at"], _RESTRICTIVE.get(row["status"], 3),
                row["contact_id"] == winner)

    for row in rows:
        key = (row["channel"], row["purpose"])
        if key not in latest or rank(row) > rank(latest[key]):
            latest[key] = row
    conn.execute(sa.delete(t).where(t.c.contact_id.in_([winner, loser])))
    if latest:
        conn.execute(
            sa.insert(t), [{**dict(row), "contact_id": winner} for row in latest.values()]
        )


def _merge_memberships(conn: Connection, winner: int, loser: int) -> None:
    t = schema.company_members
    theirs = conn.execute(sa.select(t).where(t.c.contact_id == loser)).mappings().all()
    mine = set(
        conn.execute(sa.select(t.c.company_id).where(t.c.contact_id == winner)).scalars()
    )
    conn.execute(sa.delete(t).where(t.c.contact_id == loser))
    moved = [
        {**dict(row), "contact_id": winner} for row in theirs if row["company_id"] not in mine
    ]
    if moved:
        conn.execute(sa.insert(t), moved)
