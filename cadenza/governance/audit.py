"""The audit trail: append-only, tamper-evident, verifiable.

Each entry's `hash` is an HMAC-SHA256, keyed from the secret key, over its id, time, actor,
action, object, the SHA-256 of its details, and the previous entry's hash:

    entry n:  hash_n = HMAC(k, [id_n, at_n, actor_n, action_n, type_n, key_n,
                                sha256(details_n), hash_{n-1}])

so changing, deleting, reordering or inserting an entry breaks the chain at that entry, and
forging a whole new chain needs the key. `prev_hash` is unique in the database: two writers
that read the same head cannot both append (the chain cannot fork); on PostgreSQL appends
are also serialized by an advisory lock, SQLite has one writer.

Cutting entries off the end leaves a shorter chain that is still consistent: that is what the
exported head is for (`head()`, `cadenza audit head`) — keep it outside the database, and
`verify(expect=head)` fails when the anchored entry is gone or changed.

Details may hold personal data; erasure replaces them with `{"redacted": ...}` and keeps
their hash, so the chain still verifies, and the redaction is itself an entry.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import ValidationFailed
from cadenza.store import dumps, loads, schema

a = schema.audit_log

GENESIS = "0" * 64
"""The `prev_hash` of the first entry."""
AUDIT_LOCK = 4242002
"""PostgreSQL advisory lock that serializes appends."""
MAX_DETAILS_BYTES = 64_000
_REDACTED = "redacted"


def chain_key(secret_key: str) -> bytes:
    """The HMAC key of the chain, derived from the secret key (never the key itself)."""
    return hmac.new(secret_key.encode(), b"cadenza audit chain v1", hashlib.sha256).digest()


def details_digest(details: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of `details`."""
    return hashlib.sha256(orjson.dumps(details, option=orjson.OPT_SORT_KEYS)).hexdigest()


def entry_hash(key: bytes, entry_id: int, at: int, actor: str, action: str, object_type: str,
               object_key: str, digest: str, prev_hash: str) -> str:
    """The chained hash of one entry."""
    body = orjson.dumps([entry_id, at, actor, action, object_type, object_key, digest,
                         prev_hash])
    return hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last entry of the chain: export it, keep it elsewhere, verify against it."""

    id: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "hash": self.hash}


@dataclass(frozen=True)
class Verification:
    """What `verify` found."""

    ok: bool
    checked: int
    head: Head | None
    broken_id: int | None = None
    """The first entry that does not verify (None when the chain is intact)."""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"ok": self.ok, "checked": self.checked,
                "head": self.head.to_dict() if self.head else None,
                "broken_id": self.broken_id, "reason": self.reason}


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({AUDIT_LOCK})"))


def append(conn: Connection, key: bytes, *, actor: str, action: str, object_type: str,
           object_key: str, details: Mapping[str, Any] | None = None, now: int) -> Head:
    """Append one entry in the caller's transaction (commit it with the change it records)."""
    details = dict(details or {})
    if len(dumps(details)) > MAX_DETAILS_BYTES:
        raise ValidationFailed("details", f"audit details are over {MAX_DETAILS_BYTES} bytes; "
                                          "record a summary and a reference instead")
    _lock(conn)
    last = conn.execute(sa.select(a.c.id, a.c.hash).order_by(a.c.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    entry_id = (last.id if last else 0) + 1
    digest = details_digest(details)
    digest_of = entry_hash(key, entry_id, now, actor, action, object_type, object_key, digest,
                           prev)
    conn.execute(a.insert().values(id=entry_id, at=now, actor=actor, action=action,
                                   object_type=object_type, object_key=object_key,
                                   details=details, details_hash=digest, prev_hash=prev,
                                   hash=digest_of))
    return Head(entry_id, digest_of)


def head(conn: Connection) -> Head | None:
    """The last entry (None for an empty trail)."""
    row = conn.execute(sa.select(a.c.id, a.c.hash).order_by(a.c.id.desc()).limit(1)).first()
    return Head(row.id, row.hash) if row else None


def verify(conn: Connection, key: bytes, expect: Head | None = None,
           batch: int = 5_000) -> Verification:
    """Walk the chain from the start; report the first entry that does not verify.

    With `expect` (an exported head), also fail when that entry is missing or differs — the
    only way to see entries cut off the end.
    """
    prev, expected_id, checked = GENESIS, 1, 0
    redacted: set[int] = set()
    vouched: set[int] = set()
    last: Head | None = None
    after = 0
    while True:
        rows = conn.execute(sa.select(a).where(a.c.id > after).order_by(a.c.id)
                            .limit(batch)).all()
        if not rows:
            break
        for row in rows:
            problem = _check(key, row, expected_id, prev)
            if problem:
                return Verification(False, checked, last, row.id, problem)
            details = loads(row.details) if isinstance(row.details, str) else row.details
            if details_digest(details or {}) != row.details_hash:
                if not (isinstance(details, dict) and set(details) == {_REDACTED}):
                    return Verification(False, checked, last, row.id,
                                        "its details were changed after they were written")
                redacted.add(row.id)
            if row.action == "audit.redact" and isinstance(details, dict):
                vouched.update(int(i) for i in details.get("entries", []))
            prev, expected_id, checked = row.hash, row.id + 1, checked + 1
            last = Head(row.id, row.hash)
        after = rows[-1].id
    unvouched = sorted(redacted - vouched)
    if unvouched:
        return Verification(False, checked, last, unvouched[0],
                            "its details were redacted without a recorded redaction")
    if expect is not None:
        if last is None or last.id < expect.id:
            return Verification(False, checked, last, expect.id,
                                f"entry {expect.id} of the exported head is missing: the "
                                "trail was cut short")
        anchored = conn.execute(sa.select(a.c.hash).where(a.c.id == expect.id)).scalar()
        if anchored != expect.hash:
            return Verification(False, checked, last, expect.id,
                                "it differs from the exported head")
    return Verification(True, checked, last)


def _check(key: bytes, row: Any, expected_id: int, prev: str) -> str:
    if row.id != expected_id:
        return (f"entries {expected_id}..{row.id - 1} are missing" if row.id > expected_id
                else "its id is out of order")
    if row.prev_hash != prev:
        return "it does not follow the entry before it (deleted, reordered or inserted)"
    recomputed = entry_hash(key, row.id, row.at, row.actor, row.action, row.object_type,
                            row.object_key, row.details_hash, row.prev_hash)
    if not hmac.compare_digest(recomputed, row.hash):
        return "its contents do not match its hash (modified or forged)"
    return ""


def redact(conn: Connection, key: bytes, entry_ids: Iterable[int], *, actor: str, reason: str,
           now: int) -> int:
    """Replace the details of `entry_ids` (erasure) and record the redaction; the chain
    still verifies because each entry keeps the hash of its original details."""
    ids = sorted(set(entry_ids))
    if not ids:
        return 0
    conn.execute(a.update().where(a.c.id.in_(ids)).values(details={_REDACTED: reason}))
    append(conn, key, actor=actor, action="audit.redact", object_type="audit",
           object_key=f"{ids[0]}..{ids[-1]}", details={"entries": ids, "reason": reason},
           now=now)
    return len(ids)


@dataclass(frozen=True)
class AuditEntry:
    """One entry as shown to people."""

    id: int
    at: int
    actor: str
    action: str
    object_type: str
    object_key: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action,
                "object": f"{self.object_type}:{self.object_key}", "details": self.details}


class AuditService:
    """The audit trail over the store: record, list, export the head, verify."""

    def __init__(self, store: Any, clock: Any, secret_key: str) -> None:
        self.store = store
        self.clock = clock
        self.key = chain_key(secret_key)

    def record(self, conn: Connection, actor: str, action: str, object_type: str,
               object_key: str, details: Mapping[str, Any] | None = None) -> Head:
        """Append an entry in the caller's transaction."""
        return append(conn, self.key, actor=actor, action=action, object_type=object_type,
                      object_key=object_key, details=details, now=self.clock.now_ms())

    def entries(self, *, object_type: str | None = None, object_key: str | None = None,
                action: str | None = None, before: int | None = None,
                limit: int = 50) -> list[AuditEntry]:
        """Newest first, optionally for one object or action; `before` pages by id."""
        query = sa.select(a).order_by(a.c.id.desc()).limit(max(1, min(limit, 500)))
        if object_type:
            query = query.where(a.c.object_type == object_type)
        if object_key:
            query = query.where(a.c.object_key == object_key)
        if action:
            query = query.where(a.c.action == action)
        if before:
            query = query.where(a.c.id < before)
        with self.store.read() as conn:
            return [AuditEntry(r.id, r.at, r.actor, r.action, r.object_type, r.object_key,
                               loads(r.details) if isinstance(r.details, str) else r.details)
                    for r in conn.execute(query)]

    def head(self) -> Head | None:
        """The last entry, to export."""
        with self.store.read() as conn:
            return head(conn)

    def verify(self, expect: Head | None = None) -> Verification:
        """Walk the whole chain."""
        with self.store.read() as conn:
            return verify(conn, self.key, expect)
