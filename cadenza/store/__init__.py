"""Storage: the schema for both dialects, `Store`, migrations, bulk writes and paging."""

from cadenza.store import changes, cursors, schema
from cadenza.store.bulk import (
    allocate_ids,
    dumps,
    fetch,
    insert_rows,
    loads,
    select_in,
    update_rows,
)
from cadenza.store.engine import Store, dialect_insert
from cadenza.store.migrate import upgrade
from cadenza.store.paging import MAX_LIMIT, Page, check_limit, decode_cursor, encode_cursor

__all__ = [
    "MAX_LIMIT",
    "Page",
    "Store",
    "allocate_ids",
    "changes",
    "check_limit",
    "cursors",
    "decode_cursor",
    "dialect_insert",
    "dumps",
    "encode_cursor",
    "fetch",
    "insert_rows",
    "loads",
    "schema",
    "select_in",
    "update_rows",
    "upgrade",
]
