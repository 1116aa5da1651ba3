"""Data commands: contacts, events, fields, suppressions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cadenza.cli.common import console, load_settings, open_store, print_json
from cadenza.clock import SystemClock
from cadenza.contacts import ContactService, FieldSpec
from cadenza.errors import ValidationFailed
from cadenza.events import EventService

contacts = typer.Typer(help="Contacts: import, search, show.", no_args_is_help=True)
events = typer.Typer(help="Events: list by contact, name and time.", no_args_is_help=True)
fields = typer.Typer(help="Declared custom fields (typed attributes).", no_args_is_help=True)
suppressions = typer.Typer(help="The suppression list.", no_args_is_help=True)


def _service() -> ContactService:
    return ContactService(open_store(load_settings()), SystemClock())


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@contacts.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV with a header row; email or user_id "
                                         "column required.")],
    encoding: Annotated[str | None, typer.Option(help="Text encoding if not UTF-8, "
                                                 "e.g. cp1252.")] = None,
    errors_out: Annotated[Path | None, typer.Option("--errors", help="Write the row "
                                                    "report to this CSV.")] = None,
    allow_resubscribe: Annotated[bool, typer.Option(
        "--allow-resubscribe", help="Let consent cells turn an opt-out back into opted_in or "
        "pending; only when the people have consented again.")] = False,
) -> None:
    """Import contacts (and consent columns) from a CSV file; safe to run twice."""
    from cadenza.events import import_contacts

    settings = load_settings()
    store = open_store(settings)
    size = file.stat().st_size
    with Progress(TextColumn("importing {task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console) as progress, file.open("rb") as stream:
        task = progress.add_task(file.name, total=size)
        report = import_contacts(store, SystemClock(), stream, file.name, encoding=encoding,
                                 progress=lambda done: progress.update(task, completed=done),
                                 allow_resubscribe=allow_resubscribe)
    summary = report.to_dict()
    console.print(
        f"[green]{summary['created']:,} created[/], {summary['updated']:,} updated, "
        f"{summary['unchanged']:,} unchanged, {summary['duplicates']:,} duplicates, "
        f"[red]{summary['failed']:,} failed[/] of {summary['total']:,} rows "
        f"(import #{summary['import_id']}).")
    errors = summary.get("errors", [])
    if errors_out is not None:
        import csv

        with errors_out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "column", "reason"])
            for item in errors:
                writer.writerow([item["line"], item["column"], item["reason"]])
        console.print(f"Row report written to {errors_out}")
    elif errors:
        table = Table("line", "column", "reason", title="Rejected rows (first 20)")
        for item in errors[:20]:
            table.add_row(str(item["line"]), item["column"], item["reason"])
        console.print(table)
    if summary["failed"]:
        raise typer.Exit(code=2)


@contacts.command("show")
def contacts_show(
    contact: Annotated[str, typer.Argument(help="Contact id, email or user id.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a contact's profile and recent timeline."""
    service = _service()
    contact_id = _find_contact(service, contact)
    profile = service.profile(contact_id)
    if as_json:
        print_json(profile)
        return
    console.print(f"[bold]Contact #{profile['id']}[/] {profile['email'] or ''} "
                  f"user_id={profile['user_id'] or '-'} tz={profile['timezone'] or '-'}")
    for name, value in sorted(profile["attributes"].items()):
        console.print(f"  {name}: {value}")
    console.print("[bold]Identities[/]: " + ", ".join(
        f"{i['kind']}={i['value']}" for i in profile["identities"]))
    if profile["companies"]:
        console.print("[bold]Companies[/]: " + ", ".join(
            f"{c['name'] or c['group_id']}" for c in profile["companies"]))
    if profile["consent"]:
        console.print("[bold]Consent[/]: " + ", ".join(
            f"{c['channel']}/{c['purpose']}={c['status']}" for c in profile["consent"]))
    for merge in profile["merges"]:
        console.print("[bold]Merge[/]: " + _explain_merge(merge, profile["id"]))
    table = Table("when (UTC)", "type", "name", "source", title="Recent events")
    for event in profile["timeline"]["items"]:
        table.add_row(_when(event["timestamp"]), event["type"], event["name"], event["source"])
    console.print(table)


def _explain_merge(merge: dict[str, Any], contact_id: int) -> str:
    """One sentence saying which contacts were joined (or kept apart), when and why."""
    link = (f" (linked by {merge['identity_kind']} {merge['identity_value']})"
            if merge["identity_kind"] else "")
    cause = f"{merge['reason']} message {merge['message_id']}" if merge["message_id"] \
        else merge["reason"]
    when = _when(merge["at"])
    if merge["outcome"] == "merged":
        return (f"contact #{merge['loser_id']}{link} was merged into #{merge['winner_id']} "
                f"by {cause} at {when}")
    other = merge["loser_id"] if merge["winner_id"] == contact_id else merge["winner_id"]
    detail = (merge["details"] or {}).get("detail", "")
    return (f"kept apart from contact #{other}{link} by {cause} at {when}"
            f"{': ' + detail if detail else ''}")


def _find_contact(service: ContactService, text: str) -> int:
    if text.isdigit():
        return int(text)
    kind = "email" if "@" in text else "user_id"
    page = service.search(identity=(kind, text), limit=1)
    if not page.items:
        raise ValidationFailed("contact", f"no contact has {kind} {text!r}")
    return int(page.items[0]["id"])


@contacts.command("search")
def contacts_search(
    email: Annotated[str | None, typer.Option(help="Exact email.")] = None,
    user_id: Annotated[str | None, typer.Option(help="Exact user id.")] = None,
    q: Annotated[str | None, typer.Option(help="Email prefix.")] = None,
    attr: Annotated[list[str] | None, typer.Option(help="name:value, repeatable.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search contacts by identity, email prefix and attributes."""
    identity = ("email", email) if email else (("user_id", user_id) if user_id else None)
    attributes: dict[str, str] = {}
    for item in attr or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValidationFailed("attr", f"{item!r} must be name:value, e.g. plan:pro")
        attributes[name] = value
    page = _service().search(identity=identity, email_prefix=q, attributes=attributes,
                             limit=limit)
    if as_json:
        print_json(page.to_dict())
        return
    table = Table("id", "email", "user_id", "attributes")
    for row in page.items:
        table.add_row(str(row["id"]), row["email"] or "", row["user_id"] or "",
                      _short(row["attributes"]))
    console.print(table)


def _short(value: dict[str, Any], width: int = 60) -> str:
    text = ", ".join(f"{k}={v}" for k, v in value.items())
    return text if len(text) <= width else text[: width - 1] + "…"


@events.command("list")
def events_list(
    contact: Annotated[str | None, typer.Option(help="Contact id, email or user id.")] = None,
    name: Annotated[str | None, typer.Option(help="Event name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The newest events, optionally of one contact or one name."""
    settings = load_settings()
    store = open_store(settings)
    contact_id = _find_contact(ContactService(store, SystemClock()), contact) if contact else None
    page = EventService(store, SystemClock()).find(contact_id=contact_id, name=name,
                                                   limit=limit, with_context=False)
    if as_json:
        print_json(page.to_dict())
        return
    table = Table("when (UTC)", "contact", "type", "name", "source")
    for event in page.items:
        table.add_row(_when(event["timestamp"]), str(event["contact_id"]), event["type"],
                      event["name"], event["source"])
    console.print(table)


@fields.command("declare")
def fields_declare(
    name: Annotated[str, typer.Argument()],
    type_: Annotated[str, typer.Option("--type", help="string, number, boolean, date, "
                                       "datetime, enum or list")],
    value: Annotated[list[str] | None, typer.Option("--value", help="Enum value, "
                                                    "repeatable.")] = None,
    item_type: Annotated[str | None, typer.Option(help="List item type.")] = None,
    entity: Annotated[str, typer.Option(help="contact or company")] = "contact",
) -> None:
    """Declare a typed custom field; later writes must fit it."""
    _service().declare_field(FieldSpec(name, type_, tuple(value or ()), item_type, entity))
    console.print(f"Declared {entity} field [bold]{name}[/] as {type_}.")


@fields.command("list")
def fields_list() -> None:
    """List declared fields."""
    table = Table("name", "type", "entity", "values")
    for spec in _service().fields():
        table.add_row(spec.name, spec.type + (f"[{spec.item_type}]" if spec.item_type else ""),
                      spec.entity, ", ".join(spec.values))
    console.print(table)


@fields.command("drop")
def fields_drop(name: Annotated[str, typer.Argument()]) -> None:
    """Remove a field declaration (values stay)."""
    dropped = _service().drop_field(name)
    console.print(f"Dropped {name}." if dropped else f"No field named {name}.")


@suppressions.command("add")
def suppressions_add(
    address: Annotated[str, typer.Argument(help="Email or phone (+E.164).")],
    reason: Annotated[str, typer.Option()] = "manual",
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Suppress an address: it will never be contacted."""
    kind = "email" if "@" in address else "phone"
    stored = _service().suppress(kind, address, reason, note)
    console.print(f"Suppressed {kind} {stored} ({reason}).")


@suppressions.command("remove")
def suppressions_remove(address: Annotated[str, typer.Argument()]) -> None:
    """Lift a suppression."""
    kind = "email" if "@" in address else "phone"
    removed = _service().unsuppress(kind, address)
    console.print(f"Removed {address}." if removed else f"{address} was not suppressed "
                  "(or belongs to an erased contact).")


@suppressions.command("list")
def suppressions_list(limit: Annotated[int, typer.Option(min=1, max=1000)] = 50) -> None:
    """The newest suppressions."""
    table = Table("kind", "address", "reason", "since (UTC)")
    for row in _service().suppressions(limit):
        table.add_row(row["kind"], row["address"], row["reason"], _when(row["created_at"]))
    console.print(table)
