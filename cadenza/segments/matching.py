"""Who matches a condition now: the SQL compiler for whole sets (counts, samples,
recomputes), and the Python path (`matching_ids`) as an independent check of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.segments.facts import load_facts
from cadenza.segments.nodes import Condition, referenced_segments
from cadenza.segments.sql import select_matching
from cadenza.store import fetch

_CHUNK = 5_000

__all__ = ["count_matching", "matching_ids", "matching_select", "referenced_segments",
           "sample_matching"]


def matching_select(condition: Condition, dialect: str, now: int) -> sa.Select[Any]:
    """A SELECT of the ids of the live contacts matching `condition`."""
    return select_matching(condition, dialect, now)


def matching_ids(conn: Connection, condition: Condition, now: int) -> list[int]:
    """The ids of the live contacts matching `condition`, evaluated in Python in chunks."""
    needs = condition.needs()
    found: list[int] = []
    for ids in _live_chunks(conn):
        facts = load_facts(conn, ids, needs, now)
        found.extend(cid for cid in ids if condition.evaluate(facts[cid]))
    return found


def _live_chunks(conn: Connection) -> Iterator[list[int]]:
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    last = 0
    while True:
        ids = [int(r[0]) for r in fetch(conn, f"SELECT id FROM contacts WHERE id > {mark} AND "
                                        f"merged_into IS NULL ORDER BY id LIMIT {_CHUNK}",
                                        (last,))]
        if not ids:
            return
        yield ids
        last = ids[-1]


def count_matching(conn: Connection, condition: Condition, now: int) -> int:
    """How many live contacts match `condition` now."""
    select = matching_select(condition, conn.dialect.name, now)
    counted = sa.select(sa.func.count()).select_from(select.subquery())
    return int(conn.execute(counted).scalar_one())


def sample_matching(conn: Connection, condition: Condition, now: int, size: int) -> list[int]:
    """Up to `size` matching contact ids, lowest first."""
    if size <= 0:
        return []
    select = matching_select(condition, conn.dialect.name, now)
    sub = select.subquery()
    column = next(iter(sub.c))
    return [int(r[0]) for r in conn.execute(sa.select(column).order_by(column).limit(size))]
