from __future__ import annotations

import sqlalchemy as sa

from cadenza.store import Store, schema


def test_checkpoint_copies_the_whole_log(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(sa.insert(schema.api_keys), [
            {"kind": "write", "name": f"k{i}", "prefix": "p", "key_hash": f"{i:064d}",
             "created_at": 0} for i in range(500)])
    store.checkpoint()
    if not store.is_sqlite:
        return  # nothing to do on PostgreSQL, and nothing may fail either
    with store.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        busy, log, done = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    assert log == done
