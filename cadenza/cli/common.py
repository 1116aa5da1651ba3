"""What every command shares: the console, settings, the store, JSON output."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console

from cadenza.settings import Settings
from cadenza.store import Store

console = Console()
P = ParamSpec("P")
R = TypeVar("R")


def load_settings() -> Settings:
    """Settings from the environment (ConfigError names the bad variable)."""
    return Settings.load()


_opened: list[Store] = []


def open_store(settings: Settings) -> Store:
    """The store the settings point at, closed when the running command ends."""
    store = Store.create(settings.database_url)
    _opened.append(store)
    return store


def closing_stores(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that every store it opened is closed when it returns or fails."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        finally:
            while _opened:
                _opened.pop().dispose()

    return run


def close_stores_after_commands(*apps: typer.Typer) -> None:
    """Apply `closing_stores` to every command registered on `apps` (call once, at import)."""
    for group in apps:
        for info in group.registered_commands:
            if info.callback is not None:
                info.callback = closing_stores(info.callback)


def print_json(value: Any) -> None:
    """Pretty JSON on stdout (for piping into jq)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    console.print_json(text)


def read_document(path: Path, shape: str) -> Any:
    """A YAML or JSON document from a file; when it is not a mapping, the error says what it
    should look like (`shape`, appended to "must be a mapping")."""
    from cadenza.errors import ValidationFailed
    from cadenza.journeys import load_journey

    try:
        return load_journey(path.read_bytes())
    except ValidationFailed as exc:
        if exc.reason.startswith("must be a mapping"):
            raise ValidationFailed("file", f"must be a mapping{shape}") from None
        raise
