"""Entry point and the top-level commands (serve, demo). Each command parses, calls a service,
renders; errors become one red line that says what to do, and a non-zero exit code."""

from __future__ import annotations

import sys
import time
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cadenza.cli import (
    audit,
    content,
    data,
    feedback,
    journeys,
    leads,
    messaging,
    models,
    ops,
    outbox,
    policies,
    scoring,
    segments,
    sends,
)
from cadenza.cli.common import close_stores_after_commands, console, load_settings, open_store
from cadenza.cli.simulate import simulate
from cadenza.cli.worker import worker
from cadenza.errors import CadenzaError
from cadenza.settings import Settings

if TYPE_CHECKING:
    from cadenza.api.context import AppContext

app = typer.Typer(
    name="cadenza",
    help="Cadenza: marketing automation and customer-journey orchestration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ops.db, name="db")
app.add_typer(ops.keys, name="keys")
app.add_typer(data.contacts, name="contacts")
app.add_typer(data.events, name="events")
app.add_typer(data.fields, name="fields")
app.add_typer(data.suppressions, name="suppressions")
outbox.register(app)
app.add_typer(journeys.app, name="journeys")
app.command()(simulate)
app.command()(worker)
content.register(app)
messaging.register(app)
feedback.register(app)
policies.register(app)
app.add_typer(segments.app, name="segments")
app.add_typer(scoring.app, name="scores")
app.add_typer(models.app, name="models")
app.add_typer(leads.app, name="leads")
audit.register(app)
sends.register(app)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (CADENZA_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (CADENZA_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes; more than one "
                                         "uses more cores for parsing and HTTP.")] = 1,
) -> None:
    """Run the API server (migrates the database first)."""
    settings = load_settings()
    ops.migrate(settings)
    ops.run_server(settings, host or settings.host, port or settings.port, workers)


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(min=100, help="Contacts to generate.")] = 10_000,
    days: Annotated[int, typer.Option(min=7, max=365, help="Days of history.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve",
                                              help="Serve the API afterwards.")] = True,
    stream_rate: Annotated[float, typer.Option(min=0, max=100, help="Live demo events per "
                                               "second while serving (0: none).")] = 3.0,
) -> None:
    """Create a demo workspace with realistic data and journeys (once), print keys, and
    serve it while demo events stream in."""
    from cadenza.clock import SystemClock
    from cadenza.contacts import ContactService
    from cadenza.demo import generate_demo, is_demo_workspace, setup_journeys

    settings = load_settings()
    if serve_after:
        ops.check_port_free(settings.host, settings.port)  # before minutes of work, not after
    ops.migrate(settings)
    store = open_store(settings)
    clock = SystemClock()
    existing = ContactService(store, clock).counts()
    if existing["contacts"]:
        console.print(f"[green]Demo data already present[/] ({existing['contacts']:,} contacts, "
                      f"{existing['events']:,} events) in {settings.database_url}")
    else:
        started = time.monotonic()
        with ops.stage_progress() as progress:
            summary = generate_demo(store, clock, contacts=contacts, days=days, seed=seed,
                                    progress=progress)
        console.print(
            f"[green]Demo workspace ready[/] in {time.monotonic() - started:.1f}s: "
            f"{summary.contacts:,} contacts, {summary.companies:,} companies, "
            f"{summary.events:,} events over {days} days")
    demo_journeys = setup_journeys(store, clock) if is_demo_workspace(store) else []
    if not demo_journeys:
        console.print("[yellow]This database was not made by `cadenza demo`[/]: no demo "
                      "journeys or live demo events are added to it.")
        stream_rate = 0
    write, admin = ops.create_keys(store, settings, clock, "demo")
    store.dispose()
    url = f"http://{settings.host}:{settings.port}"
    console.print(f"\n  API and docs:  [bold cyan]{url}/docs[/]\n"
                  f"  Write key:     [bold]{write}[/]  (HTTP Basic username, for /v1/*)\n"
                  f"  Admin key:     [bold]{admin}[/]  (Authorization: Bearer, for /api/*)\n"
                  f"\n  Try:  curl -u {write}: {url}/v1/track -H 'content-type: application/json'"
                  " -d '{\"userId\":\"me\",\"event\":\"Tried Cadenza\"}'\n")
    if demo_journeys:
        console.print("  Journeys (live; their messages go to the log channel and the outbox, "
                      "as the demo has no mail server):")
        for journey in demo_journeys:
            console.print(f"    [bold]{journey.key:<17}[/] v{journey.version or '-':<3} "
                          f"{journey.name}: enters {journey.entry}", highlight=False)
        live = (f"Demo events stream in at about {stream_rate:g} a second while the server "
                "runs" if serve_after and stream_rate
                else "Send events to move contacts through them")
        console.print(f"\n  {live}. Watch:\n"
                      f"    cadenza journeys list\n"
                      f"    curl -H 'Authorization: Bearer {admin}' "
                      f"{url}/api/journeys/abandoned-cart/stats\n"
                      f"    cadenza outbox list   (the messages journeys wrote)\n")
    if serve_after:
        _serve_demo(settings, stream_rate, seed)


def _serve_demo(settings: Settings, rate: float, seed: int) -> None:
    """`ops.run_server`, with the demo's live events running alongside the API."""
    from cadenza.api import create_app
    from cadenza.demo import StreamOptions, StreamReport, streaming

    options = StreamOptions(events_per_second=rate, seed=seed)

    def progress(report: StreamReport) -> None:
        entered = ", ".join(f"{key} {count:,}" for key, count in report.enrolled.items())
        console.print(f"[dim]live: {report.events:,} demo events; entered so far: {entered}[/]",
                      highlight=False)

    def alongside(ctx: AppContext) -> AbstractAsyncContextManager[object]:
        return streaming(ctx.store, ctx.clock, ctx.writer.submit, options, report=progress)

    ops.run_server(settings, settings.host, settings.port,
                   app=create_app(settings, alongside=alongside))


close_stores_after_commands(app, ops.db, ops.keys, data.contacts, data.events, data.fields,
                            data.suppressions)


def main() -> None:
    """Run the CLI, turning Cadenza errors into one clear line and exit code 1."""
    try:
        app()
    except CadenzaError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc.message}")
        sys.exit(1)
