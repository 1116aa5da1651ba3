"""`Store`: one SQLAlchemy engine per process, tuned per dialect, with transient-error retry."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from cadenza.errors import IntegrityViolation, StoreBusy, StoreError

T = TypeVar("T")

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",
    "PRAGMA mmap_size=268435456",
    # Checkpoints run from the server's background checkpointer (`Store.checkpoint`); this
    # larger automatic threshold is only the backstop for processes without one.
    "PRAGMA wal_autocheckpoint=20000",
)


class Store:
    """The database: an engine plus the few dialect differences the domains need."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        # SQLite has one writer at a time. Threads of this process queue on this lock, which
        # hands over the moment it is released; without it they would queue in SQLite's busy
        # handler, which sleeps in steps of up to 100 ms (the engine and ingestion share a
        # process in `cadenza serve`). Other processes still meet the busy timeout.
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else None

    @classmethod
    def create(cls, url: str, *, echo: bool = False) -> Store:
        """Open the store at `url` (sqlite:///file or postgresql://...)."""
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite"):
            engine = sa.create_engine(
                url,
                echo=echo,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                connect_args={"check_same_thread": False, "timeout": 10},
                pool_size=8,
                max_overflow=8,
            )
            sa_event.listen(engine, "connect", _sqlite_on_connect)
            # SQLAlchemy's own BEGIN handling: take the write lock at the start of a write
            # transaction so two writers queue on busy_timeout instead of failing to upgrade.
            sa_event.listen(engine, "begin", _sqlite_on_begin)
        else:
            engine = sa.create_engine(url, echo=echo, pool_size=10, max_overflow=10,
                                      pool_pre_ping=True, json_serializer=_json_dumps,
                                      json_deserializer=orjson.loads)
        return cls(engine)

    @property
    def is_sqlite(self) -> bool:
        """True for SQLite."""
        return self.dialect == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        lock = self._write_lock or contextlib.nullcontext()
        try:
            with lock, self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise _translate(exc) from exc
        except IntegrityError as exc:
            raise IntegrityViolation(
                f"the change breaks a database constraint and was not written: {exc.orig}"
            ) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (no write lock taken on SQLite)."""
        try:
            with self.engine.connect().execution_options(cadenza_readonly=True) as conn:
                yield conn
                conn.rollback()
        except OperationalError as exc:
            raise _translate(exc) from exc

    def retry(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """Run `work` in a transaction, retrying transient failures with backoff."""
        delay = 0.02
        for attempt in range(attempts):
            try:
                with self.begin() as conn:
                    return work(conn)
            except StoreError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def checkpoint(self) -> None:
        """Copy the SQLite write-ahead log into the database without blocking anyone
        (PASSIVE), so that commits do not pay for it. No-op on PostgreSQL."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as conn:
            # Straight on the driver connection, outside any transaction (a checkpoint
            # inside one could not pass its own snapshot).
            driver = conn.connection.driver_connection
            assert driver is not None
            try:
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreBusy(f"checkpoint skipped: {exc}") from exc

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get("cadenza_readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# PostgreSQL SQLSTATEs worth another try: serialization_failure, deadlock_detected,
# lock_not_available.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def _translate(exc: DBAPIError) -> StoreError:
    text = str(exc.orig)
    if _is_transient(exc.orig, text):
        return StoreBusy(f"database busy, try again: {text}")
    return StoreError(f"database error: {text}")


def _is_transient(orig: BaseException | None, text: str) -> bool:
    # Classify by the driver's error code where there is one: matching words in the message
    # also matched unrelated errors ("blocked by process ..." contains "locked").
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name:
        return str(sqlite_name).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "database is locked" in text or "database is busy" in text


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's own INSERT, which supports ON CONFLICT DO NOTHING / DO UPDATE."""
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)
