"""Storage: the schema for both dialects, `Store`, and migrations."""

from cadenza.store import schema
from cadenza.store.engine import Store, dialect_insert
from cadenza.store.migrate import upgrade

__all__ = ["Store", "dialect_insert", "schema", "upgrade"]
