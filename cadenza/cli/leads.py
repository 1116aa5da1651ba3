"""`cadenza leads`: lifecycle stages, a contact's stage, sales reps, routing rules, routing,
assignments and first touch. Each command parses, calls a service, renders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
from cadenza.leads import LifecycleService, RoutingOptions, RoutingService
from cadenza.segments import parse_duration

app = typer.Typer(help="Leads: lifecycle stages, sales reps, routing rules and assignments.",
                  no_args_is_help=True)
stages = typer.Typer(help="Lifecycle stages and their transition rules.", no_args_is_help=True)
reps = typer.Typer(help="Sales reps: add, change, away and back.", no_args_is_help=True)
rules = typer.Typer(help="Routing rules (tried in order, first match wins).",
                    no_args_is_help=True)
app.add_typer(stages, name="stages")
app.add_typer(reps, name="reps")
app.add_typer(rules, name="rules")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="YAML or JSON file.")]


def _services() -> tuple[LifecycleService, RoutingService]:
    settings = load_settings()
    store = open_store(settings)
    options = RoutingOptions.from_settings(settings)
    return (LifecycleService(store, SystemClock(), options),
            RoutingService(store, SystemClock(), options))


def _lifecycle() -> LifecycleService:
    return _services()[0]


def _routing() -> RoutingService:
    return _services()[1]


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _read(path: Path, what: str) -> dict[str, Any]:
    document: dict[str, Any] = read_document(path, f": {what}")
    return document


# --- stages ----------------------------------------------------------------------------------


def _show_stages(shown: dict[str, Any]) -> None:
    table = Table("#", "key", "name", "contacts", "routes", "rules (into this stage)",
                  title="Lifecycle stages" + ("" if shown["stored"] else " (defaults)"))
    for s in shown["stages"]:
        described = "; ".join(f"{r['name']}: {r['when']}" + (" [backward]" if r["backward"]
                                                              else "") for r in s["rules"])
        table.add_row(str(s["position"]), s["key"], s["name"], str(s.get("contacts", 0)),
                      "yes" if s["route"] else "", described or "-")
    console.print(table)


@stages.command("list")
def stages_list(as_json: AsJson = False) -> None:
    """The stages in order, their rules and how many contacts each holds."""
    shown = _lifecycle().stages()
    if as_json:
        print_json(shown)
        return
    _show_stages(shown)


@stages.command("set")
def stages_set(file: FileArg) -> None:
    """Replace the stages from a file ({stages: [{key, name, route, rules}]})."""
    service = _lifecycle()
    service.set_stages(_read(file, "{stages: [{key: lead, name: Lead, rules: [...]}]}"))
    console.print("[green]Saved[/] the lifecycle stages. `cadenza leads stages apply` "
                  "applies the rules to every contact now.")
    _show_stages(service.stages())


@stages.command("rename")
def stages_rename(old: Annotated[str, typer.Argument(help="Current key.")],
                  new: Annotated[str, typer.Argument(help="New key.")]) -> None:
    """Change a stage's key (its contacts move with it)."""
    _lifecycle().rename(old, new)
    console.print(f"[green]Renamed[/] stage {old} to {new}.")


@stages.command("apply")
def stages_apply(chunk: Annotated[int, typer.Option(min=100, max=50_000,
                                                    help="Contacts per transaction.")] = 2000
                 ) -> None:
    """Apply the transition rules to every contact now."""
    service = _lifecycle()
    with Progress(TextColumn("applying stage rules"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("apply", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = service.apply(progress=step, chunk=chunk)
    console.print(f"[green]Done[/]: {report['evaluated']} contacts evaluated, "
                  f"{report['moved']} moved.")


@stages.command("move")
def stages_move(contacts: Annotated[list[int], typer.Argument(help="Contact ids.")],
                to: Annotated[str, typer.Option("--to", help="Stage key.")],
                reason: Annotated[str, typer.Option("--reason", help="Why (kept in history).")]
                ) -> None:
    """Move contacts to a stage by hand (any direction), with a reason."""
    moved = _lifecycle().set_stage(contacts, to, reason, cause="cli")
    for m in moved:
        console.print(f"contact {m.contact_id}: {m.from_stage or '(none)'} -> {m.to_stage}")
    console.print(f"[green]{len(moved)} moved[/]; {len(set(contacts)) - len(moved)} were "
                  f"already in {to}.")


@app.command("contact")
def contact_show(contact_id: Annotated[int, typer.Argument(help="Contact id.")],
                 as_json: AsJson = False) -> None:
    """A contact's stage, its stage history and its assignments."""
    lifecycle, routing = _services()
    shown = lifecycle.contact(contact_id)
    shown["assignments"] = routing.assignments(contact_id=contact_id).items
    if as_json:
        print_json(shown)
        return
    console.print(f"contact {contact_id}: stage [bold]{shown['stage'] or '(none)'}[/] since "
                  f"{_when(shown['since'])}")
    table = Table("at", "from", "to", "cause", "rule / reason", title="Stage history")
    for h in shown["history"]:
        detail = h["detail"] or {}
        table.add_row(_when(h["at"]), h["from_stage"] or "-", h["to_stage"], h["cause"],
                      str(detail.get("rule") or detail.get("reason") or "-"))
    console.print(table)
    _show_assignments(shown["assignments"])


# --- reps ------------------------------------------------------------------------------------


def _attrs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValidationFailed("--attr", f"{pair!r} must look like name=value, such as "
                                   "territory=DE")
        out[name] = value
    return out


@reps.command("list")
def reps_list(as_json: AsJson = False) -> None:
    """Every rep with its load."""
    found = _routing().reps()
    if as_json:
        print_json({"items": found})
        return
    if not found:
        console.print("No sales reps yet: `cadenza leads reps add KEY --name NAME`.")
        return
    table = Table("key", "name", "status", "weight", "open / capacity", "attributes",
                  title="Sales reps")
    for r in found:
        status = r["status"] + (f" until {_when(r['away_until'])}" if r["away_until"] else "")
        cap = "no cap" if r["capacity"] is None else str(r["capacity"])
        table.add_row(r["key"], r["name"], status, str(r["weight"]),
                      f"{r['open_assignments']} / {cap}",
                      ", ".join(f"{k}={v}" for k, v in r["attributes"].items()) or "-")
    console.print(table)


@reps.command("add")
def reps_add(
    key: Annotated[str, typer.Argument(help="Rep key (also their task queue).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    weight: Annotated[int | None, typer.Option(help="Share in weighted rules (1-1000).")] = None,
    capacity: Annotated[int | None, typer.Option(help="Open assignments at most.")] = None,
    attr: Annotated[list[str] | None, typer.Option(help="name=value (repeatable).")] = None,
) -> None:
    """Add a rep, or change the given fields of an existing one."""
    document: dict[str, Any] = {k: v for k, v in (("name", name), ("email", email),
                                                  ("weight", weight), ("capacity", capacity))
                                if v is not None}
    if attr:
        document["attributes"] = _attrs(attr)
    rep, created = _routing().save_rep(key, document)
    console.print(f"[green]{'Added' if created else 'Updated'}[/] rep {rep.key} ({rep.name}).")


@reps.command("away")
def reps_away(key: Annotated[str, typer.Argument(help="Rep key.")],
              for_: Annotated[str | None, typer.Option("--for", help="How long, e.g. 3d "
                                                       "(default: until marked back).")] = None
              ) -> None:
    """Mark a rep away: routing skips them (until the time given, or until `back`)."""
    until = None
    if for_ is not None:
        until = SystemClock().now_ms() + parse_duration(for_, "--for")
    rep = _routing().set_availability(key, "away", until)
    console.print(f"{rep.key} is away" + (f" until {_when(until)}." if until else
                                           " until marked back."))


@reps.command("back")
def reps_back(key: Annotated[str, typer.Argument(help="Rep key.")]) -> None:
    """Mark a rep active again."""
    _routing().set_availability(key, "active")
    console.print(f"{key} is back.")


@reps.command("deactivate")
def reps_deactivate(key: Annotated[str, typer.Argument(help="Rep key.")]) -> None:
    """Stop routing to a rep for good (their history stays)."""
    _routing().set_availability(key, "inactive")
    console.print(f"{key} is inactive.")


@reps.command("remove")
def reps_remove(key: Annotated[str, typer.Argument(help="Rep key.")]) -> None:
    """Delete a rep that never had a lead."""
    _routing().delete_rep(key)
    console.print(f"[green]Removed[/] rep {key}.")


# --- rules -----------------------------------------------------------------------------------


@rules.command("list")
def rules_list(as_json: AsJson = False) -> None:
    """Routing rules in order."""
    found = [r.to_dict() for r in _routing().rules()]
    if as_json:
        print_json({"items": found})
        return
    if not found:
        console.print("No routing rules: every routed lead is recorded unassigned. "
                      "`cadenza leads rules set KEY FILE` adds one.")
        return
    table = Table("#", "key", "when", "pool", "strategy", "sla", "escalation",
                  title="Routing rules")
    for r in found:
        table.add_row(str(r["position"]), r["key"], str(r.get("when", "every contact")),
                      str(r.get("pool", "every rep")),
                      r["strategy"] + (f" ({r['rep']})" if r.get("rep") else ""),
                      r.get("sla", "-"), str(r.get("escalation", "-")))
    console.print(table)


@rules.command("set")
def rules_set(key: Annotated[str, typer.Argument(help="Rule key.")], file: FileArg) -> None:
    """Create or replace a rule from a file."""
    rule, created = _routing().save_rule(key, _read(file, "{pool: ..., strategy: ...}"))
    console.print(f"[green]{'Created' if created else 'Replaced'}[/] rule {rule.key} at "
                  f"position {rule.position}.")


@rules.command("validate")
def rules_validate(key: Annotated[str, typer.Argument(help="Rule key.")],
                   file: FileArg) -> None:
    """Check a rule file as `set` would, without saving it."""
    _routing().validate_rule(key, _read(file, "{pool: ..., strategy: ...}"))
    console.print(f"[green]Valid[/]: rule {key}.")


@rules.command("remove")
def rules_remove(key: Annotated[str, typer.Argument(help="Rule key.")]) -> None:
    """Delete a rule."""
    _routing().delete_rule(key)
    console.print(f"[green]Removed[/] rule {key}.")


# --- routing and assignments -----------------------------------------------------------------


@app.command("route")
def route(contacts: Annotated[list[int] | None, typer.Argument(help="Contact ids.")] = None,
          segment: Annotated[str | None, typer.Option(help="Route a segment's members.")] = None,
          as_json: AsJson = False) -> None:
    """Route contacts (or a segment) to reps now; contacts already assigned are left alone."""
    result = _routing().route(contacts or [], segment, cause="cli")
    if as_json:
        print_json(result.to_dict())
        return
    for a in result.assigned:
        console.print(f"contact {a.contact_id} -> {a.rep.key if a.rep else '-'} "
                      f"(rule {a.rule.key if a.rule else '-'})")
    for a in result.unassigned:
        console.print(f"[yellow]contact {a.contact_id} unassigned[/]: {a.reason.get('reason')}")
    console.print(f"{len(result.assigned)} assigned, {len(result.unassigned)} unassigned, "
                  f"{len(result.already)} already assigned, {len(result.missing)} not found.")


def _show_assignments(items: list[dict[str, Any]]) -> None:
    table = Table("id", "contact", "rep", "rule", "status", "assigned", "SLA due", "SLA",
                  title="Assignments")
    for a in items:
        table.add_row(str(a["id"]), str(a["contact_id"]), a["rep"] or "-", a["rule"] or "-",
                      a["status"], _when(a["assigned_at"]), _when(a["sla_due_at"]),
                      a["sla_state"])
    console.print(table)


@app.command("assignments")
def assignments(rep: Annotated[str | None, typer.Option(help="A rep's queue.")] = None,
                status: Annotated[str | None, typer.Option(help="open, touched, ...")] = None,
                sla: Annotated[str | None, typer.Option(help="on_time, due_soon, lapsed, "
                                                        "met, none")] = None,
                limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
                as_json: AsJson = False) -> None:
    """Assignments newest first, with their SLA state."""
    page = _routing().assignments(rep=rep, status=status, sla=sla, limit=limit)
    if as_json:
        print_json(page.to_dict())
        return
    _show_assignments(page.items)


@app.command("touch")
def touch(assignment: Annotated[int, typer.Argument(help="Assignment id.")],
          note: Annotated[str | None, typer.Option(help="What was done.")] = None) -> None:
    """Record the first touch of an assignment."""
    shown, changed = _routing().touch(assignment, note)
    console.print(f"assignment {assignment}: " + ("[green]touched[/]" if changed else
                                                  "was touched already") +
                  f" (SLA {shown['sla_state']}).")


@app.command("close")
def close(assignment: Annotated[int, typer.Argument(help="Assignment id.")]) -> None:
    """Close an assignment (worked or given up)."""
    _, changed = _routing().close(assignment)
    console.print(f"assignment {assignment}: " + ("[green]closed[/]" if changed else
                                                  "was closed already") + ".")


@app.command("sla-check")
def sla_check() -> None:
    """Escalate and reassign lapsed first touches now (workers do it every
    CADENZA_ROUTING_SLA_CHECK_S seconds)."""
    report = _routing().check_slas()
    console.print(f"{len(report.lapsed)} lapsed: {len(report.reassigned)} reassigned, "
                  f"{len(report.escalated)} escalated with no other rep.")


close_stores_after_commands(app, stages, reps, rules)
