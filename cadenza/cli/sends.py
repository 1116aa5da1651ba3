"""`cadenza sends`: the emergency stop — hold every send at once, resume, show the state."""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Annotated

import typer

from cadenza.channels.stop import SendSwitch
from cadenza.cli.common import close_stores_after_commands, console, load_settings, open_store
from cadenza.clock import SystemClock
from cadenza.governance import AuditService

sends = typer.Typer(help="Emergency stop: hold every send at once; resume.",
                    no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `sends` group to the `cadenza` command."""
    app.add_typer(sends, name="sends")
    close_stores_after_commands(sends)


def _switch() -> SendSwitch:
    settings = load_settings()
    store = open_store(settings)
    clock = SystemClock()
    return SendSwitch(store, clock, AuditService(store, clock, settings.secret_key))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@sends.command("stop")
def stop(reason: Annotated[str, typer.Option(help="Why: shown to everyone, kept in the audit "
                                                   "trail.")]) -> None:
    """Stop every send now (journeys keep running; their messages wait)."""
    state = _switch().stop(_actor(), reason)
    console.print(f"[red bold]sends stopped[/] since {_when(state.since)} by {state.by}: "
                  f"{state.reason}")


@sends.command("resume")
def resume() -> None:
    """Let sends go again (held messages go out in order)."""
    lifted = _switch().resume(_actor())
    if lifted is None:
        console.print("sends were not stopped")
    else:
        console.print(f"[green]sends resumed[/] (stopped since {_when(lifted.since)} by "
                      f"{lifted.by})")


@sends.command("status")
def status() -> None:
    """Whether sends are stopped, since when, by whom and why."""
    state = _switch().status()
    if state is None:
        console.print("[green]sends are running[/]")
    else:
        console.print(f"[red bold]sends stopped[/] since {_when(state.since)} by {state.by}: "
                      f"{state.reason}")
