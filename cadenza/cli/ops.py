"""Operations commands: `cadenza db ...`, `cadenza keys ...`, and serving."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cadenza.cli.common import console, load_settings, open_store, print_json
from cadenza.clock import Clock, SystemClock
from cadenza.errors import ConfigError
from cadenza.governance import KeyKind, create_key, list_keys, revoke_key
from cadenza.settings import Settings
from cadenza.store import Store
from cadenza.store import migrate as migrations

db = typer.Typer(help="The database: migrations.", no_args_is_help=True)
keys = typer.Typer(help="API keys: write keys for /v1, admin keys for /api.",
                   no_args_is_help=True)


def migrate(settings: Settings) -> None:
    """Bring the database up to the latest schema."""
    migrations.upgrade(settings.database_url)


def run_server(settings: Settings, host: str, port: int, workers: int = 1,
               app: Any = None) -> None:
    """Serve the API with uvicorn until interrupted (`workers` processes share the port).
    `app` replaces the app built from the settings (one process only)."""
    import uvicorn

    from cadenza.api import create_app

    check_port_free(host, port)
    console.print(f"Serving on [bold cyan]http://{host}:{port}[/] (docs at /docs)"
                  f"{f' with {workers} worker processes' if workers > 1 else ''}. "
                  "Ctrl+C stops.")
    if workers > 1:
        # Worker processes build their own app from the same environment.
        uvicorn.run("cadenza.api.app:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level=settings.log_level,
                    access_log=False)
        return
    uvicorn.run(app or create_app(settings), host=host, port=port,
                log_level=settings.log_level, access_log=False)


def check_port_free(host: str, port: int) -> None:
    """Fail with a helpful message, before any work, when the address is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError("CADENZA_PORT", f"cannot listen on {host}:{port} ({exc.strerror});"
                              f" stop what uses it or choose another port, e.g. "
                              f"CADENZA_PORT={port + 1}") from None


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display fed by `progress(stage, done, total)` callbacks."""
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, object] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        yield update


def create_keys(store: Store, settings: Settings, clock: Clock, name: str) -> tuple[str, str]:
    """A new write key and admin key named after `name`; returns the plaintexts."""
    with store.begin() as conn:
        _, write = create_key(conn, settings.secret_key, KeyKind.WRITE, f"{name} write",
                              clock.now_ms())
        _, admin = create_key(conn, settings.secret_key, KeyKind.ADMIN, f"{name} admin",
                              clock.now_ms())
    return write, admin


@db.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
               ) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = load_settings()
    migrations.upgrade(settings.database_url, revision)
    console.print(f"[green]Database at {migrations.current(settings.database_url)}[/] "
                  f"({settings.database_url})")


@db.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, or base.")]
                 ) -> None:
    """Undo migrations down to REVISION."""
    settings = load_settings()
    migrations.downgrade(settings.database_url, revision)
    console.print(f"Database at {migrations.current(settings.database_url) or 'base'}")


@db.command("current")
def db_current() -> None:
    """Show the schema revision of the database."""
    settings = load_settings()
    console.print(migrations.current(settings.database_url) or "empty (run `cadenza db upgrade`)")


@keys.command("create")
def keys_create(
    kind: Annotated[KeyKind, typer.Option(help="write (ingestion) or admin (everything else).")],
    name: Annotated[str, typer.Option(help="What the key is for, e.g. 'website'.")],
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    settings = load_settings()
    store = open_store(settings)
    with store.begin() as conn:
        key, plaintext = create_key(conn, settings.secret_key, kind, name,
                                    SystemClock().now_ms())
    console.print(f"Created {key.kind.value} key #{key.id} ({key.name}). It is shown once:")
    typer.echo(plaintext)


@keys.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (never their secrets)."""
    store = open_store(load_settings())
    with store.read() as conn:
        found = list_keys(conn)
    if as_json:
        print_json([k.__dict__ for k in found])
        return
    table = Table("id", "kind", "name", "prefix", "revoked")
    for k in found:
        table.add_row(str(k.id), k.kind.value, k.name, k.prefix + "…",
                      "yes" if k.revoked_at else "")
    console.print(table)


@keys.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="Key id from `keys list`.")]) -> None:
    """Revoke a key; it stops working at once."""
    store = open_store(load_settings())
    with store.begin() as conn:
        key = revoke_key(conn, key_id, SystemClock().now_ms())
    console.print(f"Revoked {key.kind.value} key #{key.id} ({key.name}).")
