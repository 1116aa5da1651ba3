"""Outbox and template commands: list, inspect and replay outbox rows, run the dispatcher,
save, list, preview, delete and test-send templates."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from cadenza.channels import (
    STATUSES,
    OutboxService,
    TemplateService,
)
from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
)
from cadenza.clock import SystemClock
from cadenza.errors import ValidationFailed
from cadenza.settings import Settings
from cadenza.store import Store

if TYPE_CHECKING:
    from cadenza.engine.dispatch import Dispatcher

outbox = typer.Typer(help="The outbox: list, inspect, replay dead letters, dispatch.",
                     no_args_is_help=True)
templates = typer.Typer(help="Message templates (Jinja2, rendered in a sandbox).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `outbox` and `templates` groups to the `cadenza` command."""
    app.add_typer(outbox, name="outbox")
    app.add_typer(templates, name="templates")
    close_stores_after_commands(outbox, templates)


def _outbox() -> OutboxService:
    return OutboxService(open_store(load_settings()), SystemClock())


def _templates() -> TemplateService:
    settings = load_settings()
    return TemplateService.from_settings(open_store(settings), SystemClock(), settings)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    value = (text or "").replace("\n", " ")
    return value if len(value) <= width else value[: width - 1] + "…"


def _rows_table(items: list[dict[str, Any]], title: str) -> Table:
    table = Table("id", "status", "channel", "template/step", "contact", "attempts",
                  "next / sent (UTC)", "last error", title=title)
    for row in items:
        when = row["sent_at"] if row["status"] == "sent" else row["next_attempt_at"]
        table.add_row(str(row["id"]), row["status"] + (" (shadow)" if row["shadow"] else ""),
                      row["channel"], row["template"] or row["node"] or "",
                      str(row["contact_id"]), str(row["attempts"]), _when(when),
                      _short(row["last_error"]))
    return table


Limit = Annotated[int, typer.Option(min=1, max=500, help="Rows per page.")]
Cursor = Annotated[str | None, typer.Option(help="The next_cursor of the previous page.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@outbox.command("list")
def outbox_list(
    status: Annotated[str | None, typer.Option(help=f"One of {', '.join(STATUSES)}.")] = None,
    contact: Annotated[int | None, typer.Option(help="Only this contact id.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: AsJson = False,
) -> None:
    """Outbox rows, newest first."""
    page = _outbox().find(status, contact_id=contact, cursor=cursor, limit=limit)
    if as_json:
        print_json(page.to_dict())
        return
    console.print(_rows_table(page.items, "Outbox"))
    if page.next_cursor:
        console.print(f"More: --cursor {page.next_cursor}")


@outbox.command("dead")
def outbox_dead(limit: Limit = 50, cursor: Cursor = None, as_json: AsJson = False) -> None:
    """Dead letters: rows that failed for good; `outbox replay` sends them again."""
    page = _outbox().dead_letters(limit, cursor)
    if as_json:
        print_json(page.to_dict())
        return
    if not page.items:
        console.print("[green]No dead letters.[/]")
        return
    console.print(_rows_table(page.items, "Dead letters"))
    if page.next_cursor:
        console.print(f"More: --cursor {page.next_cursor}")


@outbox.command("stats")
def outbox_stats() -> None:
    """Rows per status."""
    for status, count in _outbox().counts().items():
        console.print(f"{status:>10}  {count:,}")


@outbox.command("show")
def outbox_show(outbox_id: Annotated[int, typer.Argument(min=1, help="Row id.")]) -> None:
    """Everything about one row: payload, rendered message, last error."""
    print_json(_outbox().inspect(outbox_id))


@outbox.command("replay")
def outbox_replay(
    ids: Annotated[list[int], typer.Argument(min=1, help="Ids of dead rows.")],
) -> None:
    """Send dead rows again (attempts reset); other rows are left alone and listed."""
    report = _outbox().replay(ids)
    if report.replayed:
        console.print(f"[green]Replayed[/] {', '.join(map(str, report.replayed))}: pending "
                      "again, the dispatcher sends them with their original keys.")
    for row_id, status in report.unchanged.items():
        console.print(f"Row {row_id} is {status}, not dead: unchanged.")
    for row_id in report.missing:
        console.print(f"[red]Row {row_id} does not exist.[/]")


@outbox.command("dispatch")
def outbox_dispatch(
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then exit.")]
    = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows per batch.")] = 100,
) -> None:
    """Run the dispatcher: deliver due rows, retry with backoff, park dead letters."""
    settings = load_settings()
    dispatcher = build_dispatcher(open_store(settings), settings)
    totals: dict[str, int] = {}

    async def drain() -> None:
        try:
            while True:
                report = await dispatcher.run_once(limit)
                for name, value in report.to_dict().items():
                    totals[name] = totals.get(name, 0) + value
                if report.claimed < limit:
                    return
        finally:
            await dispatcher.close()

    if once:
        asyncio.run(drain())
        console.print(", ".join(f"{v:,} {k}" for k, v in totals.items()))
        return
    console.print("Dispatching; Ctrl-C stops.")
    try:
        asyncio.run(dispatcher.run_forever(asyncio.Event(), asyncio.Event(), limit=limit,
                                           idle_ms=5_000))
    except KeyboardInterrupt:
        console.print("Stopped.")


def build_dispatcher(store: Store, settings: Settings) -> Dispatcher:
    """A live dispatcher from the settings (SMTP from `smtp_*` settings when present)."""
    from cadenza.engine.dispatch import dispatcher_from_settings  # loads only for this command

    return dispatcher_from_settings(store, SystemClock(), settings)


@templates.command("save")
def templates_save(
    key: Annotated[str, typer.Argument(help="Template key, e.g. welcome.")],
    body_file: Annotated[Path, typer.Option(exists=True, dir_okay=False, readable=True,
                                            help="File with the body: Jinja2 HTML or text, "
                                            "or MJML (a .mjml file).")],
    channel: Annotated[str, typer.Option(help="Channel it is written for.")] = "email",
    subject: Annotated[str, typer.Option(help="Jinja2 subject line.")] = "",
    preheader: Annotated[str, typer.Option(help="Preview text after the subject.")] = "",
    text_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="File with the text part (generated from the HTML when left out).")] = None,
    format: Annotated[str | None, typer.Option(
        help="jinja or mjml (default: mjml for a .mjml file, else jinja).")] = None,
    locales_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="YAML or JSON: {locale: {subject, preheader, body, text}} translations.")] = None,
    purpose: Annotated[str, typer.Option(help="marketing, transactional or a topic key.")]
    = "marketing",
    sender: Annotated[str | None, typer.Option(help="Sender identity key (email).")] = None,
) -> None:
    """Create or replace a template (syntax, snippets and layout are checked first)."""
    chosen = format or ("mjml" if body_file.suffix.lower() == ".mjml" else "jinja")
    record, created = _templates().save(
        key, channel, subject, body_file.read_text(encoding="utf-8"), preheader=preheader,
        text=text_file.read_text(encoding="utf-8") if text_file else None, format=chosen,
        locales=_read_locales(locales_file) if locales_file else None, purpose=purpose,
        sender=sender)
    extra = f", locales {', '.join(sorted(record.locales))}" if record.locales else ""
    console.print(f"[green]{'Created' if created else 'Updated'}[/] template {record.key!r} "
                  f"({record.channel}, {record.format}{extra}).")


def _read_locales(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValidationFailed("locales", f"{path.name} is not YAML or JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValidationFailed("locales", f"{path.name} must map locales to their sources, "
                               "e.g. fr: {subject: ..., body: ...}")
    return loaded


@templates.command("list")
def templates_list() -> None:
    """Every template."""
    table = Table("key", "channel", "format", "purpose", "locales", "subject",
                  "updated (UTC)")
    for record in _templates().all():
        table.add_row(record.key, record.channel, record.format, record.purpose,
                      ", ".join(sorted(record.locales or {})), _short(record.subject, 40),
                      _when(record.updated_at))
    console.print(table)


@templates.command("show")
def templates_show(key: Annotated[str, typer.Argument()]) -> None:
    """A template's sources."""
    print_json(_templates().get(key).to_dict())


@templates.command("delete")
def templates_delete(key: Annotated[str, typer.Argument()]) -> None:
    """Delete a template."""
    _templates().delete(key)
    console.print(f"Deleted template {key!r}.")


def _entry(entry: str) -> dict[str, Any]:
    try:
        context = orjson.loads(entry)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("entry", f"is not JSON: {exc}") from None
    if not isinstance(context, dict):
        raise ValidationFailed("entry", "must be a JSON object")
    return context


Entry = Annotated[str, typer.Option(help="Entry context as a JSON object.")]
Locale = Annotated[str | None, typer.Option(help="Render this translation (fr, fr-CA) "
                                            "instead of the contact's own.")]


@templates.command("render")
def templates_render(
    key: Annotated[str, typer.Argument()],
    contact: Annotated[int, typer.Option(min=1, help="Contact id to render for.")],
    entry: Entry = "{}",
    locale: Locale = None,
) -> None:
    """Render a template for one contact, exactly as the dispatcher would."""
    print_json(_templates().preview(key, contact, _entry(entry), locale=locale))


@templates.command("test-send")
def templates_test_send(
    key: Annotated[str, typer.Argument()],
    to: Annotated[str, typer.Option(help="A verified test address (cadenza test-addresses).")],
    contact: Annotated[int, typer.Option(min=1, help="Contact id to render as.")],
    entry: Entry = "{}",
    locale: Locale = None,
) -> None:
    """Mail a template, rendered as a contact, to a verified test address ("[Test] ")."""
    from cadenza.channels.testsend import TestSendService

    settings = load_settings()
    service = TestSendService.from_settings(open_store(settings), SystemClock(), settings)
    sent = service.send(key, to, contact, _entry(entry), locale=locale)
    console.print(f"[green]Sent[/] {sent['subject']!r} to {sent['address']} "
                  f"({sent['provider_ref'] or 'no reference'}).")
