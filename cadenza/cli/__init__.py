"""The `cadenza` command: serve, demo, db, keys, contacts, events, fields, suppressions."""

from cadenza.cli.main import app, main

__all__ = ["app", "main"]
