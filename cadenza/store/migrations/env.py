"""Alembic environment: runs migrations with Cadenza's own `Store` (same pragmas, same URL)."""

from __future__ import annotations

from alembic import context

from cadenza.store.engine import Store
from cadenza.store.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set"
store = Store.create(url)
try:
    with store.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=store.is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
finally:
    store.dispose()
