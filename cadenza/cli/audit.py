"""`cadenza audit`: list the trail, export its head, verify the chain."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
)
from cadenza.clock import SystemClock
from cadenza.errors import ValidationFailed
from cadenza.governance.audit import AuditService, Head

audit = typer.Typer(help="The audit trail: list it, export its head, verify it.",
                    no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    """Add the `audit` group to the `cadenza` command."""
    app.add_typer(audit, name="audit")
    close_stores_after_commands(audit)


def _service() -> AuditService:
    settings = load_settings()
    return AuditService(open_store(settings), SystemClock(), settings.secret_key)


@audit.command("list")
def list_entries(
    object_ref: Annotated[str | None, typer.Option(
        "--object", help="Only one object, as type:key (e.g. journey:trial-onboarding).")] = None,
    action: Annotated[str | None, typer.Option(help="Only one action, e.g. journey.publish.")
                      ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: AsJson = False,
) -> None:
    """The newest entries first."""
    object_type = object_key = None
    if object_ref:
        object_type, _, object_key = object_ref.partition(":")
    entries = _service().entries(object_type=object_type, object_key=object_key or None,
                                 action=action, limit=limit)
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    table = Table("id", "when (UTC)", "actor", "action", "object")
    for e in entries:
        when = dt.datetime.fromtimestamp(e.at / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.id), when, e.actor, e.action, f"{e.object_type}:{e.object_key}")
    console.print(table)


@audit.command("head")
def export_head(
    out: Annotated[Path | None, typer.Option(help="Write the head to this file (JSON).")] = None,
) -> None:
    """The last entry's id and hash: keep it outside the database, verify against it."""
    found = _service().head()
    text = json.dumps(found.to_dict() if found else None)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"head written to {out}")
    else:
        print(text)


@audit.command("verify")
def verify_chain(
    head: Annotated[Path | None, typer.Option(
        help="A head exported earlier (`cadenza audit head --out`); entries cut off the end "
             "are only visible against it.")] = None,
    as_json: AsJson = False,
) -> None:
    """Walk the chain; exit 1 and name the first broken entry when it does not verify."""
    expect = None
    if head is not None:
        try:
            data = json.loads(head.read_text(encoding="utf-8"))
            expect = Head(int(data["id"]), str(data["hash"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ValidationFailed("--head", f"{head} is not a head exported by `cadenza "
                                             "audit head --out`") from None
    result = _service().verify(expect)
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        last = f" up to entry {result.head.id}" if result.head else ""
        console.print(f"[green]audit trail intact[/]: {result.checked} entries{last}")
    else:
        console.print(f"[red]audit trail broken at entry {result.broken_id}[/]: "
                      f"{result.reason} ({result.checked} entries verified before it)")
    if not result.ok:
        raise typer.Exit(1)
