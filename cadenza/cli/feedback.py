"""Feedback commands: feed DSN and ARF files (bounces, complaints) and manage the topics of
the preference centre."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from cadenza.channels.bounces import (
    FeedbackReport,
    FeedbackService,
    parse_report,
    report_signals,
)
from cadenza.channels.unsubscribe import TopicService
from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
)
from cadenza.clock import SystemClock
from cadenza.errors import ValidationFailed

feedback = typer.Typer(help="Bounces and complaints: feed DSN and ARF reports.",
                       no_args_is_help=True)
topics = typer.Typer(help="Topics of the preference centre (each is a consent purpose).",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `feedback` and `topics` groups to the `cadenza` command."""
    app.add_typer(feedback, name="feedback")
    app.add_typer(topics, name="topics")
    close_stores_after_commands(feedback, topics)


def _topics() -> TopicService:
    return TopicService(open_store(load_settings()), SystemClock())


@feedback.command("dsn")
def feedback_dsn(
    files: Annotated[list[Path], typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help="Raw DSN (multipart/report; report-type=delivery-status) or ARF complaint "
             "files, as the bounce mailbox received them (.eml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the totals as JSON.")] = False,
) -> None:
    """Apply bounce and complaint reports: hard bounces and complaints suppress the address,
    soft bounces count towards the limit, each becomes a message event."""
    settings = load_settings()
    clock = SystemClock()
    service = FeedbackService(open_store(settings), clock,
                              soft_bounce_limit=settings.soft_bounce_limit)
    totals = FeedbackReport()
    refused: list[tuple[Path, str]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=as_json) as progress:
        task = progress.add_task("Reports", total=len(files))
        for path in files:
            try:
                signals = report_signals(parse_report(path.read_bytes()), clock.now_ms())
            except ValidationFailed as exc:
                refused.append((path, exc.reason))
            else:
                totals = totals.merged(service.apply(signals))
            progress.advance(task)
    if as_json:
        print_json({**totals.to_dict(), "refused": {str(p): r for p, r in refused}})
        return
    console.print(f"{totals.recorded:,} events recorded, {totals.suppressed:,} addresses "
                  f"suppressed, {totals.soft_bounces:,} soft bounces counted, "
                  f"{totals.duplicates:,} repeats skipped, {totals.unmatched:,} not sent by "
                  "Cadenza.")
    for path, reason in refused:
        console.print(f"[red]{path}[/]: {reason}")
    if refused:
        raise typer.Exit(1)


@topics.command("add")
def topics_add(
    key: Annotated[str, typer.Argument(help="Topic key = consent purpose, e.g. newsletter.")],
    name: Annotated[str, typer.Option(help="What recipients see, e.g. 'Monthly newsletter'.")],
    description: Annotated[str, typer.Option(help="One line under the name.")] = "",
    channel: Annotated[str, typer.Option(help="Channel of the topic.")] = "email",
) -> None:
    """Create or rename a topic."""
    topic, created = _topics().add(key, name, description, channel)
    console.print(f"[green]{'Added' if created else 'Updated'}[/] topic {topic.key!r} "
                  f"({topic.channel}): {topic.name}")


@topics.command("list")
def topics_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                ) -> None:
    """Every topic."""
    items = _topics().all()
    if as_json:
        print_json([t.to_dict() for t in items])
        return
    if not items:
        console.print("No topics yet: `cadenza topics add newsletter --name 'Newsletter'`.")
        return
    table = Table("key", "channel", "name", "description")
    for topic in items:
        table.add_row(topic.key, topic.channel, topic.name, topic.description)
    console.print(table)


@topics.command("remove")
def topics_remove(key: Annotated[str, typer.Argument(help="Topic key.")]) -> None:
    """Remove a topic from the preference centre (consents given for it stay on record)."""
    _topics().remove(key)
    console.print(f"Removed topic {key!r}.")
