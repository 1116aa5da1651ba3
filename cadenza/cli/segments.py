"""`cadenza segments`: define segments from YAML/JSON files, preview them, manage static
lists, read members, history and drift, export CSV. Each command parses, calls
`SegmentService`, renders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
    read_document,
)
from cadenza.clock import SystemClock
from cadenza.errors import ValidationFailed
from cadenza.segments import Drift, ListReport, Segment, SegmentService

app = typer.Typer(help="Segments: dynamic (a condition) and static (a list).",
                  no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="The segment's key, e.g. active-pros.")]
FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="YAML or JSON file.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _service() -> SegmentService:
    return SegmentService(open_store(load_settings()), SystemClock())


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_segment_file(path: Path) -> Any:
    """A segment definition (or a condition) from a YAML or JSON file."""
    return read_document(path, " such as {key: active-pros, condition: {attr: plan, eq: pro}}; "
                               "see docs/segments.md")


def _render(segment: Segment) -> None:
    console.print(f"[bold]{segment.key}[/] — {segment.name} ({segment.kind}, "
                  f"{segment.status})")
    if segment.description:
        console.print(f"  {segment.description}")
    console.print(f"  members: {segment.member_count:,}   last recomputed: "
                  f"{_when(segment.recomputed_at)}")
    if segment.definition is not None:
        console.print("  condition:")
        print_json(segment.definition)


def _render_report(report: ListReport, verb: str) -> None:
    console.print(f"[green]{report.changed:,} {verb}[/], {report.unchanged:,} unchanged, "
                  f"{len(report.unknown):,} unknown")
    if report.unknown:
        table = Table("row", "kind", "value", "reason", title="Rows naming no contact")
        for item in report.unknown[:50]:
            table.add_row(str(item.get("row") or ""), item["kind"], str(item["value"]),
                          item["reason"])
        console.print(table)
        if len(report.unknown) > 50:
            console.print(f"... and {len(report.unknown) - 50:,} more (use --json)")


def _render_drift(items: list[Drift]) -> None:
    table = Table("segment", "at", "members", "missed entries", "missed exits", "ms",
                  title="Recompute drift")
    for d in items:
        style = "yellow" if d.entered or d.exited else ""
        table.add_row(d.segment, _when(d.started_at), f"{d.members:,}", f"{d.entered:,}",
                      f"{d.exited:,}", str(d.duration_ms), style=style)
    console.print(table)


@app.command("list")
def segments_list(archived: Annotated[bool, typer.Option(help="Archived ones.")] = False,
                  as_json: AsJson = False) -> None:
    """Segments with their member counts."""
    found = _service().all("archived" if archived else "active")
    if as_json:
        print_json({"items": [s.to_dict() for s in found]})
        return
    if not found:
        console.print("No segments. `cadenza segments create FILE` defines one "
                      "(docs/segments.md).")
        return
    table = Table("key", "name", "kind", "members", "recomputed")
    for s in found:
        table.add_row(s.key, s.name, s.kind, f"{s.member_count:,}", _when(s.recomputed_at))
    console.print(table)


@app.command("show")
def segments_show(key: KeyArg, as_json: AsJson = False) -> None:
    """One segment."""
    segment = _service().get(key)
    if as_json:
        print_json(segment.to_dict())
        return
    _render(segment)


@app.command("create")
def segments_create(file: FileArg) -> None:
    """Create a segment from a file ({key, name, description, condition} or kind: static)."""
    with console.status("computing members..."):
        segment = _service().create(read_segment_file(file))
    console.print(f"[green]Created[/] segment {segment.key}.")
    _render(segment)


@app.command("update")
def segments_update(key: KeyArg, file: FileArg) -> None:
    """Replace a segment's definition from a file; members follow at once."""
    with console.status("recomputing members..."):
        segment = _service().update(key, read_segment_file(file))
    console.print(f"[green]Updated[/] segment {segment.key}.")
    _render(segment)


@app.command("archive")
def segments_archive(key: KeyArg) -> None:
    """Archive a segment (refused while another references it)."""
    _service().archive(key)
    console.print(f"Archived segment {key}.")


@app.command("estimate")
def segments_estimate(
    file: FileArg,
    sample: Annotated[int, typer.Option(min=0, max=100, help="Contacts to show.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Preview a condition (or a whole segment file): how many match now, and who."""
    document = read_segment_file(file)
    condition = document.get("condition", document) if isinstance(document, dict) \
        else document
    result = _service().estimate(condition, sample)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"[bold]{result.count:,}[/] contacts match now.")
    if result.sample:
        table = Table("contact", "email", "user id", "name", title="Sample")
        for row in result.sample:
            table.add_row(str(row["contact_id"]), row["email"] or "", row["user_id"] or "",
                          row["name"] or "")
        console.print(table)


@app.command("recompute")
def segments_recompute(key: Annotated[str | None, typer.Argument(
        help="One segment; all dynamic ones when left out.")] = None) -> None:
    """Recompute now and show the drift (what real time had missed)."""
    with console.status("recomputing..."):
        found = _service().recompute(key)
    _render_drift(found)


@app.command("drift")
def segments_drift(segment: Annotated[str | None, typer.Option(help="One segment.")] = None,
                   limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
                   as_json: AsJson = False) -> None:
    """The latest recomputes and the drift they corrected."""
    found = _service().drift(segment, limit)
    if as_json:
        print_json({"items": [d.to_dict() for d in found]})
        return
    if not found:
        console.print("No recompute yet (they run every CADENZA_SEGMENT_RECOMPUTE_INTERVAL_S, "
                      "or now with `cadenza segments recompute`).")
        return
    _render_drift(found)


@app.command("members")
def segments_members(key: KeyArg, limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
                     cursor: Annotated[str | None, typer.Option()] = None,
                     as_json: AsJson = False) -> None:
    """A page of members (by contact id)."""
    page = _service().members(key, cursor, limit)
    if as_json:
        print_json(page.to_dict())
        return
    table = Table("contact", "email", "user id", "since", "source")
    for m in page.items:
        table.add_row(str(m["contact_id"]), m["email"] or "", m["user_id"] or "",
                      _when(m["since"]), m["source"])
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("history")
def segments_history(key: Annotated[str | None, typer.Argument(help="A segment.")] = None,
                     contact: Annotated[int | None, typer.Option(help="A contact id.")] = None,
                     limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
                     cursor: Annotated[str | None, typer.Option()] = None,
                     as_json: AsJson = False) -> None:
    """Entries and exits of a segment or of a contact, newest first."""
    if key is None and contact is None:
        raise ValidationFailed("key", "name a segment or give --contact")
    page = _service().history(key, contact, cursor, limit)
    if as_json:
        print_json(page.to_dict())
        return
    table = Table("at", "segment", "contact", "change", "cause")
    for h in page.items:
        table.add_row(_when(h["at"]), h["segment"], str(h["contact_id"]), h["change"],
                      h["cause"])
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


Ids = Annotated[list[int] | None, typer.Option("--id", help="Contact id (repeatable).")]
Emails = Annotated[list[str] | None, typer.Option("--email", help="Email (repeatable).")]
Users = Annotated[list[str] | None, typer.Option("--user-id", help="User id (repeatable).")]


@app.command("add")
def segments_add(key: KeyArg, ids: Ids = None, emails: Emails = None,
                 users: Users = None, as_json: AsJson = False) -> None:
    """Add contacts to a static segment."""
    report = _service().add(key, contact_ids=ids or [], emails=emails or [],
                            user_ids=users or [], source="api")
    print_json(report.to_dict()) if as_json else _render_report(report, "added")


@app.command("remove")
def segments_remove(key: KeyArg, ids: Ids = None, emails: Emails = None,
                    users: Users = None, as_json: AsJson = False) -> None:
    """Remove contacts from a static segment."""
    report = _service().remove(key, contact_ids=ids or [], emails=emails or [],
                               user_ids=users or [], source="api")
    print_json(report.to_dict()) if as_json else _render_report(report, "removed")


@app.command("upload")
def segments_upload(
    key: KeyArg,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV with a column email, user_id or "
                                              "contact_id.")],
    remove: Annotated[bool, typer.Option(help="Remove the listed contacts instead.")] = False,
    as_json: AsJson = False,
) -> None:
    """Add (or remove) the contacts a CSV file names; rows naming nobody are reported."""
    with console.status(f"reading {file.name}..."):
        report = _service().upload(key, file.read_bytes(), remove=remove)
    print_json(report.to_dict()) if as_json else _render_report(
        report, "removed" if remove else "added")


@app.command("export")
def segments_export(
    key: KeyArg,
    out: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="CSV file to write.")],
    attributes: Annotated[list[str] | None, typer.Option(
        "--attr", help="Attribute column (repeatable).")] = None,
) -> None:
    """Write the members to a CSV file (formula cells neutralised)."""
    service = _service()
    segment = service.get(key)
    written = 0
    with Progress(TextColumn("exporting {task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console, transient=True) as progress, \
            out.open("w", encoding="utf-8", newline="") as handle:
        task = progress.add_task(key, total=segment.member_count)
        for chunk in service.export(key, attributes or []):
            handle.write(chunk)
            lines = chunk.count("\r\n")
            written += lines
            progress.update(task, advance=lines)
    console.print(f"[green]Wrote[/] {max(written - 1, 0):,} members to {out}.")


close_stores_after_commands(app)
