"""Journey commands: validate, save, publish, list, show, versions, diff, pause, resume,
archive, rollback, shadow, migrate, stats, shadow-report, schema."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.syntax import Syntax
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
from cadenza.journeys import (
    JourneyInvalid,
    JourneyService,
    JourneySpec,
    compile_definition,
    schema_text,
    to_definition,
)

app = typer.Typer(help="Journeys: validate, save and publish journey files; versions, "
                  "rollback, shadow, migrate.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="A journey file, YAML or JSON.")]
KeyArg = Annotated[str, typer.Argument(help="The journey's key.")]


def _service() -> JourneyService:
    settings = load_settings()
    return JourneyService(open_store(settings), SystemClock(),
                          publish_sample_contacts=settings.publish_sample_contacts)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _fail(exc: JourneyInvalid, file: Path | None = None) -> NoReturn:
    """Every problem on its own line, then exit 1."""
    count = len(exc.problems)
    name = f"journey {exc.journey!r}" if exc.journey else "the journey"
    source = f" ({file})" if file else ""
    console.print(f"[bold red]✗[/] {escape(name + source)} has {count} problem"
                  f"{'s' if count != 1 else ''}:", highlight=False, soft_wrap=True)
    for problem in exc.problems:  # reasons quote YAML such as [mon]: no markup
        console.print(f"  - {problem.located()}", markup=False, highlight=False,
                      soft_wrap=True)
    raise typer.Exit(code=1)


def _summary(spec: JourneySpec) -> str:
    triggers = len(spec.triggers)
    return (f"{len(spec.steps)} step{'s' if len(spec.steps) != 1 else ''}, {triggers} entry "
            f"trigger{'s' if triggers != 1 else ''}, {len(spec.goals)} goal"
            f"{'s' if len(spec.goals) != 1 else ''}")


@app.command("validate")
def validate(
    file: FileArg,
    store: Annotated[bool, typer.Option("--store", help="Also check templates, declared "
                                        "fields and enrolled journeys in the database, as "
                                        "publish does.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check a journey file and list every problem (exit 1 if there is any)."""
    try:
        if store:
            spec = _service().validate(file.read_bytes())
        else:  # no database, no settings: usable in CI on the file alone
            spec = compile_definition(to_definition(file.read_bytes()))
    except JourneyInvalid as exc:
        if as_json:
            print_json({"valid": False, "journey": exc.journey,
                        "problems": [p.to_dict() for p in exc.problems]})
            raise typer.Exit(code=1) from None
        _fail(exc, file)
    if as_json:
        print_json({"valid": True, "journey": spec.key, "problems": []})
        return
    console.print(f"[green]✓[/] {spec.key}: valid ({_summary(spec)})", highlight=False)


@app.command("save")
def save(file: FileArg) -> None:
    """Save a journey file as the journey's draft (creates the journey when new)."""
    try:
        version = _service().save_draft(file.read_bytes())
    except JourneyInvalid as exc:
        _fail(exc, file)
    console.print(f"Saved [bold]{version.key}[/] draft v{version.number}. Publish it with "
                  f"`cadenza journeys publish {version.key}`.", highlight=False)


@app.command("publish")
def publish(
    key: KeyArg,
    version: Annotated[int | None, typer.Option(min=1, help="Version number (default: "
                                                "the draft).")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Run it in shadow beside the live "
                                         "version instead of making it live.")] = False,
) -> None:
    """Validate fully and publish a version: immutable, content-hashed, live (or shadow)."""
    try:
        published = _service().publish(key, version, shadow=shadow)
    except JourneyInvalid as exc:
        _fail(exc)
    where = "in shadow" if shadow else "live"
    console.print(f"Published [bold]{key}[/] v{published.number} {where} "
                  f"(sha256 {(published.content_hash or '')[:12]}).", highlight=False)


@app.command("list")
def list_journeys(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every journey with its status and versions."""
    items = _service().list()
    if as_json:
        print_json({"items": [j.to_dict() for j in items]})
        return
    table = Table("key", "name", "status", "live", "shadow", "draft", "updated (UTC)")
    for j in items:
        table.add_row(j.key, j.name, j.status, _number(j.live_version),
                      _number(j.shadow_version), _number(j.draft_version), _when(j.updated_at))
    console.print(table)


def _number(value: int | None) -> str:
    return "" if value is None else f"v{value}"


@app.command("show")
def show(
    key: KeyArg,
    version: Annotated[int | None, typer.Option(min=1, help="Version number (default: live, "
                                                "else the draft).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A journey and one version's definition (as YAML)."""
    from cadenza.journeys import definition_yaml

    service = _service()
    journey = service.get(key)
    shown = service.version(key, version)
    if as_json:
        print_json({**journey.to_dict(), "version": shown.to_dict()})
        return
    marks = [m for m, on in (("live", shown.live), ("shadow", shown.shadow)) if on]
    console.print(f"[bold]{journey.key}[/] ({escape(journey.name)}) status={journey.status} "
                  f"live={_number(journey.live_version) or '-'} "
                  f"shadow={_number(journey.shadow_version) or '-'} "
                  f"draft={_number(journey.draft_version) or '-'}", highlight=False)
    console.print(f"Version {shown.number}: {shown.status}"
                  f"{' (' + ', '.join(marks) + ')' if marks else ''}", highlight=False)
    console.print(Syntax(definition_yaml(shown.definition), "yaml"))


@app.command("versions")
def versions(key: KeyArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every version of a journey."""
    items = _service().versions(key)
    if as_json:
        print_json({"items": [v.to_dict(definition=False) for v in items]})
        return
    table = Table("version", "status", "", "sha256", "created (UTC)", "published (UTC)")
    for v in items:
        marks = ", ".join(m for m, on in (("live", v.live), ("shadow", v.shadow)) if on)
        table.add_row(f"v{v.number}", v.status, marks, (v.content_hash or "")[:12],
                      _when(v.created_at), _when(v.published_at))
    console.print(table)


@app.command("diff")
def diff(key: KeyArg, a: Annotated[int, typer.Argument(min=1)],
         b: Annotated[int, typer.Argument(min=1)]) -> None:
    """What changed from version A to version B."""
    text = _service().diff(key, a, b)
    if not text:
        console.print(f"Versions {a} and {b} of {key} have the same definition.")
        return
    console.print(Syntax(text, "diff"))


@app.command("pause")
def pause(key: KeyArg) -> None:
    """Stop new entries and steps until resumed."""
    journey = _service().pause(key)
    console.print(f"{key} is {journey.status}.")


@app.command("resume")
def resume(key: KeyArg) -> None:
    """Let a paused journey run again."""
    journey = _service().resume(key)
    console.print(f"{key} is {journey.status}.")


@app.command("archive")
def archive(key: KeyArg) -> None:
    """Archive a journey for good; its active enrollments exit."""
    ended = _service().archive(key)
    console.print(f"{key} is archived; {ended:,} active enrollment"
                  f"{'s' if ended != 1 else ''} ended.")


@app.command("rollback")
def rollback(key: KeyArg,
             to: Annotated[int, typer.Option("--to", min=1, help="The published version "
                                             "to make live.")]) -> None:
    """Make an earlier published version live again."""
    journey = _service().rollback(key, to)
    console.print(f"{key}: v{journey.live_version} is live.")


@app.command("shadow")
def shadow(
    key: KeyArg,
    version: Annotated[int | None, typer.Option(min=1, help="Published version to run in "
                                                "shadow.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop the shadow.")] = False,
) -> None:
    """Run a published version in shadow beside the live one (or stop it with --off)."""
    if (version is None) == (not off):
        raise ValidationFailed("version", "give --version N, or --off to stop the shadow")
    journey = _service().set_shadow(key, None if off else version)
    console.print(f"{key}: shadow {_number(journey.shadow_version) or 'off'}.")


@app.command("migrate")
def migrate(
    key: KeyArg,
    from_number: Annotated[int, typer.Option("--from", min=1, help="Version the "
                                             "enrollments are on.")],
    to_number: Annotated[int, typer.Option("--to", min=1, help="Version to move them to.")],
    mapping: Annotated[list[str] | None, typer.Option(
        "--map", help="old=new: where enrollments at step old go; repeat for every step "
        "where enrollments are.")] = None,
) -> None:
    """Move the active enrollments of one version to another, step by step."""
    pairs: dict[str, str] = {}
    for item in mapping or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValidationFailed("map", f"{item!r} must be old=new, e.g. settle=settle")
        pairs[old.strip()] = new.strip()
    moved = _service().migrate(key, from_number, to_number, pairs)
    total = sum(moved.values())
    console.print(f"Moved {total:,} enrollment{'s' if total != 1 else ''} of {key} from "
                  f"v{from_number} to v{to_number}.")
    for old, count in moved.items():
        console.print(f"  {old} -> {pairs[old]}: {count:,}", highlight=False)


@app.command("stats")
def stats(key: KeyArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per version: each step's entered / left / here, edges, conversions."""
    from cadenza.engine import journey_stats

    with open_store(load_settings()).read() as conn:
        data = journey_stats(conn, key)
    if as_json:
        print_json(data)
        return
    for version in data["versions"]:
        title = f"{key} v{version['number']}{' (shadow)' if version['shadow'] else ''}"
        table = Table(title=title)
        for column in ("step", "entered", "left", "here"):
            table.add_column(column, justify="left" if column == "step" else "right")
        for node, counts in version["steps"].items():
            table.add_row(escape(node), f"{counts['entered']:,}", f"{counts['left']:,}",
                          f"{counts['here']:,}")
        console.print(table)
        conversions = ", ".join(f"{g}: {n:,}" for g, n in version["conversions"].items())
        console.print(f"conversions: {conversions or '-'}", highlight=False)


@app.command("shadow-report")
def shadow_report(key: KeyArg, as_json: Annotated[bool, typer.Option("--json")] = False
                  ) -> None:
    """The shadow version against the live one, over the same entries."""
    from cadenza.engine import shadow_report as report_of

    with open_store(load_settings()).read() as conn:
        data = report_of(conn, key)
    if as_json:
        print_json(data)
        return
    console.print(f"{key}: live {data['live']['entered']:,} entries, shadow "
                  f"{data['shadow']['entered']:,} since {_when(data['since'])}")
    table = Table()
    for column in ("what", "name", "live", "shadow", "live/entry", "shadow/entry"):
        table.add_column(column, justify="left" if column in ("what", "name") else "right")
    for kind, rows in data["compare"].items():
        for name, row in rows.items():
            table.add_row(kind, escape(name), f"{row['live']:,}", f"{row['shadow']:,}",
                          f"{row['live_rate'] or 0:.3f}", f"{row['shadow_rate'] or 0:.3f}")
    console.print(table)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of journey files (docs/journey.schema.json)."""
    sys.stdout.write(schema_text())


close_stores_after_commands(app)
