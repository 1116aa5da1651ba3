"""What every command shares: the console, settings, the store, JSON output."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console

from cadenza.settings import Settings
from cadenza.store import Store

console = Console()


def load_settings() -> Settings:
    """Settings from the environment (ConfigError names the bad variable)."""
    return Settings.load()


def open_store(settings: Settings) -> Store:
    """The store the settings point at."""
    return Store.create(settings.database_url)


def print_json(value: Any) -> None:
    """Pretty JSON on stdout (for piping into jq)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    console.print_json(text)
