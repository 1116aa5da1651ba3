"""`Store`: SQLite tuning, integrity, transient-error retry, and concurrent writers."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import IntegrityViolation, StoreBusy, StoreError
from cadenza.store import Store, schema

sqlite_only = pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)

NOW = 1_767_225_600_000


def add_contact(conn: Connection, email: str) -> int:
    row = conn.execute(
        sa.insert(schema.contacts)
        .values(email=email, attributes={}, created_at=NOW, updated_at=NOW)
        .returning(schema.contacts.c.id)
    ).one()
    return int(row.id)


def count_contacts(store: Store) -> int:
    with store.read() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(schema.contacts))
        return int(total.scalar_one())


def sqlite_path(store_url: str) -> str:
    return store_url.removeprefix("sqlite:///")


# --- SQLite tuning ---------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("mode", ["write", "read"])
def test_sqlite_pragmas_are_on(store: Store, mode: str) -> None:
    context = store.begin() if mode == "write" else store.read()
    with context as conn:

        def pragma(name: str) -> object:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 10000
        assert pragma("synchronous") == 1  # NORMAL


@sqlite_only
def test_sqlite_write_transaction_takes_the_write_lock_at_begin(
    store: Store, store_url: str
) -> None:
    other = sqlite3.connect(sqlite_path(store_url), timeout=0, isolation_level=None)
    try:
        # Nothing executed in the transaction yet, and still the lock is held: BEGIN IMMEDIATE.
        with store.begin(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


@sqlite_only
def test_sqlite_read_does_not_block_writers(store: Store, store_url: str) -> None:
    other = sqlite3.connect(sqlite_path(store_url), timeout=0, isolation_level=None)
    try:
        with store.read() as conn:
            conn.execute(sa.select(schema.contacts.c.id)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


# --- integrity -------------------------------------------------------------------------------


def test_foreign_key_violation_is_refused(store: Store) -> None:
    with pytest.raises(IntegrityViolation), store.begin() as conn:
        conn.execute(
            sa.insert(schema.identities).values(
                kind="email", value="ghost@example.com", contact_id=424242, source="api",
                created_at=NOW,
            )
        )
    with store.read() as conn:
        assert conn.execute(sa.select(schema.identities)).all() == []


def test_foreign_key_to_an_existing_row_is_accepted(store: Store) -> None:
    with store.begin() as conn:
        contact_id = add_contact(conn, "ann@example.com")
        conn.execute(
            sa.insert(schema.identities).values(
                kind="email", value="ann@example.com", contact_id=contact_id, source="api",
                created_at=NOW,
            )
        )
    with store.read() as conn:
        assert conn.execute(sa.select(schema.identities.c.contact_id)).scalars().all() == [
            contact_id
        ]


# --- retry -----------------------------------------------------------------------------------


def test_retry_retries_store_busy_and_rolls_back_each_failed_attempt(store: Store) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> str:
        calls.append(1)
        add_contact(conn, f"try{len(calls)}@example.com")
        if len(calls) < 3:
            raise StoreBusy("database busy, try again")
        return "done"

    assert store.retry(work) == "done"
    assert len(calls) == 3
    with store.read() as conn:
        emails = conn.execute(sa.select(schema.contacts.c.email)).scalars().all()
    assert emails == ["try3@example.com"]


def test_retry_translates_a_driver_lock_error_and_retries(store: Store) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError(
                "INSERT", None, sqlite3.OperationalError("database is locked")
            )
        return len(calls)

    assert store.retry(work) == 2


def test_retry_does_not_retry_a_plain_store_error(store: Store) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> None:
        calls.append(1)
        raise StoreError("database error: something permanent")

    with pytest.raises(StoreError) as caught:
        store.retry(work)
    assert type(caught.value) is StoreError
    assert len(calls) == 1


def test_retry_does_not_retry_an_integrity_error(store: Store) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> None:
        calls.append(1)
        conn.execute(
            sa.insert(schema.identities).values(
                kind="email", value="x@example.com", contact_id=424242, source="api",
                created_at=NOW,
            )
        )

    with pytest.raises(IntegrityViolation):
        store.retry(work)
    assert len(calls) == 1


def test_retry_gives_up_after_its_attempts(store: Store) -> None:
    calls: list[int] = []

    def work(conn: Connection) -> None:
        calls.append(1)
        raise StoreBusy("database busy, try again")

    with pytest.raises(StoreBusy):
        store.retry(work, attempts=3)
    assert len(calls) == 3


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_deadlock_is_store_busy_and_retry_recovers(store: Store) -> None:
    """Two transactions lock two rows in opposite orders; PostgreSQL aborts one as deadlocked.

    The store must report that as a retryable `StoreBusy`, and `retry` must then commit it.
    """
    with store.begin() as conn:
        ids = [add_contact(conn, "a@example.com"), add_contact(conn, "b@example.com")]
    both_hold_one = threading.Barrier(2, timeout=10)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def transfer(first: int, second: int, name: str) -> None:
        def work(conn: Connection) -> None:
            attempts.append(name)
            touch = sa.update(schema.contacts).values(updated_at=schema.contacts.c.updated_at + 1)
            conn.execute(touch.where(schema.contacts.c.id == first))
            if attempts.count(name) == 1:
                both_hold_one.wait()
            conn.execute(touch.where(schema.contacts.c.id == second))

        try:
            store.retry(work)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=transfer, args=(ids[0], ids[1], "ab")),
        threading.Thread(target=transfer, args=(ids[1], ids[0], "ba")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(attempts) == 3  # exactly one of the two was aborted and retried
    with store.read() as conn:
        stamps = conn.execute(sa.select(schema.contacts.c.updated_at)).scalars().all()
    assert stamps == [NOW + 2, NOW + 2]



@sqlite_only
def test_two_sqlite_writers_queue_instead_of_failing(store_url: str) -> None:
    """Read-then-write transactions from two engines (as from two processes) all commit.

    With a deferred BEGIN, the second writer would fail at once with "database is locked"
    (its read snapshot is stale when it tries to write); BEGIN IMMEDIATE plus the busy timeout
    makes it wait its turn instead. Each transaction reads the row count and then inserts, so
    if they are serialised every count from 0 to N-1 is seen exactly once.
    """
    per_writer = 40
    seen: list[int] = []
    errors: list[BaseException] = []
    stores = [Store.create(store_url), Store.create(store_url)]

    def writer(store: Store, name: str) -> None:
        try:
            for i in range(per_writer):
                with store.begin() as conn:
                    n = conn.execute(
                        sa.select(sa.func.count()).select_from(schema.contacts)
                    ).scalar_one()
                    time.sleep(0.001)  # widen the window between read and write
                    add_contact(conn, f"{name}-{i}@example.com")
                    seen.append(int(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, f"w{k}")) for k, store in enumerate(stores)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for store in stores:
            store.dispose()

    assert errors == []
    assert sorted(seen) == list(range(2 * per_writer))
    check = Store.create(store_url)
    try:
        assert count_contacts(check) == 2 * per_writer
    finally:
        check.dispose()
