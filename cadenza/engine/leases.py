"""Partition leases: how several workers share the contacts, and why a stale one cannot write.

Contacts hash into `PARTITIONS` partitions (see `batch.partition`). A worker holds a lease on
a set of partitions: an owner name, an expiry it keeps pushing forward (heartbeat), and a
fencing token that goes up every time a partition changes hands. Every engine pass starts its
transaction by re-asserting (owner, token) on the partitions it works on; on PostgreSQL that
UPDATE also locks the lease rows until the pass commits, so a takeover waits for (or skips)
a pass in flight, and a worker that was paused past its expiry finds its token gone and
writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.engine.batch import PARTITIONS
from cadenza.errors import CadenzaError
from cadenza.store import Store, fetch, insert_rows, schema


class LeaseLost(CadenzaError):
    """A worker no longer holds a partition it was working on; its pass was rolled back."""

    code = "engine.lease_lost"
    retryable = True

    def __init__(self, owner: str, parts: list[int]) -> None:
        super().__init__(f"worker {owner!r} lost its lease on partition(s) {parts}; "
                         "the pass was rolled back and another worker carries on")
        self.owner = owner
        self.parts = parts


@dataclass
class Leases:
    """The partitions this worker holds, with their fencing tokens."""

    store: Store
    clock: Clock
    owner: str
    lease_ms: int = 15_000
    held: dict[int, int] = field(default_factory=dict)
    """Partition -> fencing token."""
    renewed_at: int = -1

    def ensure_rows(self) -> None:
        """Create the lease rows (idempotent)."""
        with self.store.read() as conn:
            if len(fetch(conn, "SELECT part FROM engine_leases")) >= PARTITIONS:
                return  # (an insert would wait behind lease rows another pass has locked)
        with self.store.begin() as conn:
            insert_rows(conn, schema.engine_leases, ("part", "owner", "token", "expires_at"),
                        [(p, None, 0, 0) for p in range(PARTITIONS)],
                        ignore_conflicts_on=("part",))

    def renew(self) -> dict[int, int]:
        """Extend the leases held and take over free or expired partitions, up to a fair
        share; return what is held now."""
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            mark = _mark(conn)
            lock = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
            rows = conn.exec_driver_sql(
                f"SELECT part, owner, token, expires_at FROM engine_leases{lock}").all()
            mine = {p: t for p, o, t, e in rows if o == self.owner and self.held.get(p) == t}
            expires = now + self.lease_ms
            # Live workers say so with a heartbeat row (a worker between leases counts too),
            # so that each can hold its fair share and give back the rest.
            insert_rows(conn, schema.engine_cursors, ("name", "position", "updated_at"),
                        [(self._heartbeat, expires, now)], upsert_on=("name",),
                        update=("position", "updated_at"))
            workers = fetch(conn, "SELECT count(*) FROM engine_cursors WHERE name LIKE "
                            f"{mark} AND position > {mark}", ("worker:%", now))[0][0]
            fair = math.ceil(PARTITIONS / max(1, int(workers)))
            shed = sorted(mine)[fair:]
            for part in shed:
                mine.pop(part)
            if shed:
                conn.exec_driver_sql(
                    f"UPDATE engine_leases SET owner = NULL, expires_at = 0 WHERE part = {mark} "
                    f"AND owner = {mark}", [(p, self.owner) for p in shed])
            free = [p for p, o, _, e in rows if p not in mine and p not in shed
                    and (o is None or e <= now)]
            take = free[: max(0, fair - len(mine))]
            if mine:
                conn.exec_driver_sql(
                    f"UPDATE engine_leases SET expires_at = {mark} WHERE part = {mark} "
                    f"AND owner = {mark} AND token = {mark}",
                    [(expires, p, self.owner, t) for p, t in mine.items()])
            if take:
                conn.exec_driver_sql(
                    f"UPDATE engine_leases SET owner = {mark}, token = token + 1, "
                    f"expires_at = {mark} WHERE part = {mark} AND "
                    f"(owner IS NULL OR expires_at <= {mark})",
                    [(self.owner, expires, p, now) for p in take])
            held = dict(mine)
            if take:
                for part, token, owner in conn.exec_driver_sql(
                        "SELECT part, token, owner FROM engine_leases"):
                    if part in take and owner == self.owner:
                        held[part] = token
        self.held = held
        self.renewed_at = now
        return held

    def due_for_renewal(self) -> bool:
        """True when a third of the lease time has passed since the last renewal."""
        return self.renewed_at < 0 or self.clock.now_ms() - self.renewed_at >= self.lease_ms // 3

    def fence(self, conn: Connection) -> list[int]:
        """Re-assert every held lease inside the pass's transaction (locking the rows on
        PostgreSQL); raise `LeaseLost` if one changed hands. Returns the partitions."""
        if not self.held:
            return []
        if conn.dialect.name == "sqlite":
            # The pass already holds SQLite's one write lock (BEGIN IMMEDIATE): reading the
            # leases is enough, and writes nothing to the log.
            rows = {p: (o, t) for p, o, t in fetch(
                conn, "SELECT part, owner, token FROM engine_leases")}
            valid = sum(1 for p, t in self.held.items() if rows.get(p) == (self.owner, t))
        else:
            mark = _mark(conn)
            valid = conn.exec_driver_sql(
                f"UPDATE engine_leases SET owner = owner WHERE part = {mark} AND owner = {mark} "
                f"AND token = {mark}",
                [(p, self.owner, t) for p, t in sorted(self.held.items())]).rowcount
        if valid != len(self.held):
            lost = self._lost(conn)
            for part in lost:
                self.held.pop(part, None)
            raise LeaseLost(self.owner, lost)
        return sorted(self.held)

    @property
    def _heartbeat(self) -> str:
        return f"worker:{self.owner}"[:128]

    def release(self) -> None:
        """Give every held partition back (a clean shutdown)."""
        with self.store.begin() as conn:
            mark = _mark(conn)
            conn.exec_driver_sql(f"DELETE FROM engine_cursors WHERE name = {mark}",
                                 (self._heartbeat,))
            if not self.held:
                return
            conn.exec_driver_sql(
                f"UPDATE engine_leases SET owner = NULL, expires_at = 0 WHERE part = {mark} "
                f"AND owner = {mark} AND token = {mark}",
                [(p, self.owner, t) for p, t in self.held.items()])
        self.held = {}

    def _lost(self, conn: Connection) -> list[int]:
        rows = {p: (o, t) for p, o, t in conn.exec_driver_sql(
            "SELECT part, owner, token FROM engine_leases")}
        return [p for p, t in self.held.items() if rows.get(p) != (self.owner, t)]


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"
