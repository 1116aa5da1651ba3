"""The audit trail's hash chain: every kind of tampering is found, at the right entry."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadenza.errors import IntegrityViolation, StoreBusy, ValidationFailed
from cadenza.governance.audit import (
    GENESIS,
    Head,
    append,
    chain_key,
    head,
    redact,
    verify,
)
from cadenza.store import Store, schema

KEY = chain_key("test-secret-key-that-is-long-enough")
a = schema.audit_log


def _fill(store: Store, count: int, start: int = 1_000) -> Head:
    with store.begin() as conn:
        last = None
        for i in range(count):
            last = append(conn, KEY, actor="user:ann", action="journey.publish",
                          object_type="journey", object_key=f"j{i}",
                          details={"version": i, "email": f"person{i}@example.com"},
                          now=start + i)
    assert last is not None
    return last


def _run(store: Store, sql: str, params: dict[str, object] | None = None) -> None:
    with store.begin() as conn:
        conn.execute(sa.text(sql), params or {})


def test_an_untouched_chain_verifies_and_links_every_entry(store: Store) -> None:
    last = _fill(store, 5)
    with store.read() as conn:
        result = verify(conn, KEY, expect=last)
        rows = conn.execute(sa.select(a.c.id, a.c.prev_hash, a.c.hash).order_by(a.c.id)).all()
    assert result.ok
    assert result.checked == 5
    assert result.head == last
    assert rows[0].prev_hash == GENESIS
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 5))


def test_an_empty_trail_verifies(store: Store) -> None:
    with store.read() as conn:
        assert verify(conn, KEY).ok
        assert head(conn) is None


Tamper = Callable[[Store], None]
TAMPERING: dict[str, tuple[Tamper, int]] = {
    "modified actor": (lambda s: _run(s, "UPDATE audit_log SET actor = 'user:eve' "
                                         "WHERE id = 3"), 3),
    "modified time": (lambda s: _run(s, "UPDATE audit_log SET at = at + 1 WHERE id = 2"), 2),
    "modified details": (lambda s: _run(s, "UPDATE audit_log SET details = :d WHERE id = 4",
                                        {"d": '{"version": 99}'}), 4),
    "deleted": (lambda s: _run(s, "DELETE FROM audit_log WHERE id = 3"), 4),
    "deleted first": (lambda s: _run(s, "DELETE FROM audit_log WHERE id = 1"), 2),
    "reordered": (lambda s: _swap(s, 2, 3), 2),
    "forged at the end": (lambda s: _forge(s), 6),
    "hash recomputed without the key": (lambda s: _rehash_without_key(s, 3), 3),
    "redacted without a record": (lambda s: _run(
        s, "UPDATE audit_log SET details = :d WHERE id = 2", {"d": '{"redacted": "x"}'}), 2),
}


def _swap(store: Store, one: int, other: int) -> None:
    cols = ("at", "actor", "action", "object_type", "object_key", "details", "details_hash")
    with store.begin() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(a).where(a.c.id.in_([one, other])))}
        for mine, theirs in ((one, other), (other, one)):
            conn.execute(a.update().where(a.c.id == mine).values(
                {c: getattr(rows[theirs], c) for c in cols}))


def _forge(store: Store) -> None:
    with store.begin() as conn:
        last = head(conn)
        assert last is not None
        conn.execute(a.insert().values(id=last.id + 1, at=1, actor="user:eve", action="x",
                                       object_type="x", object_key="x", details={},
                                       details_hash="0" * 64, prev_hash=last.hash,
                                       hash="f" * 64))


def _rehash_without_key(store: Store, entry: int) -> None:
    import hashlib

    with store.begin() as conn:
        conn.execute(a.update().where(a.c.id == entry).values(
            actor="user:eve", hash=hashlib.sha256(b"guess").hexdigest()))


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_found_at_the_first_broken_entry(store: Store, kind: str) -> None:
    _fill(store, 5)
    tamper, broken = TAMPERING[kind]
    tamper(store)
    with store.read() as conn:
        result = verify(conn, KEY)
    assert not result.ok
    assert result.broken_id == broken
    assert result.reason


def test_a_trail_cut_short_is_found_only_against_the_exported_head(store: Store) -> None:
    exported = _fill(store, 6)
    _run(store, "DELETE FROM audit_log WHERE id >= 5")
    with store.read() as conn:
        assert verify(conn, KEY).ok  # still a consistent chain...
        result = verify(conn, KEY, expect=exported)  # ...but not the one that was exported
    assert not result.ok
    assert result.broken_id == exported.id
    assert "cut short" in result.reason


def test_truncating_everything_is_found_against_the_head(store: Store) -> None:
    exported = _fill(store, 3)
    _run(store, "DELETE FROM audit_log")
    with store.read() as conn:
        assert not verify(conn, KEY, expect=exported).ok


def test_a_different_key_verifies_nothing(store: Store) -> None:
    _fill(store, 2)
    with store.read() as conn:
        result = verify(conn, chain_key("another-secret-key-entirely-different"))
    assert result.broken_id == 1


def test_redaction_keeps_the_chain_valid_and_is_itself_recorded(store: Store) -> None:
    _fill(store, 4)
    with store.begin() as conn:
        assert redact(conn, KEY, [2, 3], actor="user:dpo", reason="erasure", now=9_000) == 2
    with store.read() as conn:
        result = verify(conn, KEY)
        details = conn.execute(sa.select(a.c.details).where(a.c.id == 2)).scalar_one()
        last = conn.execute(sa.select(a).order_by(a.c.id.desc()).limit(1)).one()
    assert result.ok
    assert result.checked == 5
    assert "person" not in str(details)
    assert last.action == "audit.redact"


def test_oversized_details_are_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(ValidationFailed) as caught, store.begin() as conn:
        append(conn, KEY, actor="system", action="x", object_type="x", object_key="x",
               details={"blob": "x" * 70_000}, now=1)
    assert caught.value.field == "details"
    with store.read() as conn:
        assert head(conn) is None


def test_the_chain_cannot_fork_even_when_a_writer_reuses_the_head(store: Store) -> None:
    _fill(store, 2)
    with store.read() as conn:
        row = conn.execute(sa.select(a).where(a.c.id == 2)).one()
    with pytest.raises(IntegrityViolation), store.begin() as conn:
        # A second entry claiming the same predecessor (what a racing writer would write).
        conn.execute(a.insert().values(id=99, at=1, actor="system", action="x",
                                       object_type="x", object_key="x", details={},
                                       details_hash="0" * 64, prev_hash=row.prev_hash,
                                       hash="e" * 64))


def test_concurrent_writers_make_one_unbroken_chain(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        for i in range(15):
            try:
                store.retry(lambda conn, i=i: append(
                    conn, KEY, actor=f"user:{name}", action="segment.update",
                    object_type="segment", object_key=f"{name}-{i}", now=i))
            except (StoreBusy, IntegrityViolation) as exc:  # pragma: no cover - reported
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with store.read() as conn:
        result = verify(conn, KEY)
    assert result.ok
    assert result.checked == 60


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["actor", "action", "object_key", "at", "delete"]),
                          st.integers(1, 8)), min_size=1, max_size=4))
def test_any_random_tampering_is_found_at_the_first_broken_entry(
        store: Store, edits: list[tuple[str, int]]) -> None:
    _run(store, "DELETE FROM audit_log")
    exported = _fill(store, 8)
    for edit, target in edits:
        if edit == "delete":
            _run(store, "DELETE FROM audit_log WHERE id = :i", {"i": target})
        elif edit == "at":
            _run(store, "UPDATE audit_log SET at = at + 7 WHERE id = :i", {"i": target})
        else:
            _run(store, f"UPDATE audit_log SET {edit} = 'tampered' WHERE id = :i",
                 {"i": target})
    deleted = {t for e, t in edits if e == "delete"}
    modified = {t for e, t in edits if e != "delete"} - deleted
    remaining = [i for i in range(1, 9) if i not in deleted]
    # A deletion shows at the next entry still there (or at the exported head's entry).
    expected = min([*modified, *(next((i for i in remaining if i > t), exported.id)
                                 for t in deleted)])
    with store.read() as conn:
        result = verify(conn, KEY, expect=exported)
    assert not result.ok
    assert result.broken_id == expected
