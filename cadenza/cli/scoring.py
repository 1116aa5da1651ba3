"""`cadenza scores`: rule-based score models from YAML/JSON files, scoring now, top contacts,
distributions and one contact's scores explained. Each command parses, calls
`ScoreService`, renders."""

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
from cadenza.leads.score_service import ScoreService, StoredModel

app = typer.Typer(help="Lead scores: rule models (fit, engagement), grades and matrices.",
                  no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="The model's key, e.g. fit.")]
FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="YAML or JSON model file.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _service() -> ScoreService:
    return ScoreService(open_store(load_settings()), SystemClock())


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_model_file(path: Path) -> Any:
    """A model document from a YAML or JSON file."""
    return read_document(path, " such as {key: fit, rules: [...]}; see docs/leads/scoring.md")


def _render(stored: StoredModel) -> None:
    definition = stored.model.to_json()
    console.print(f"[bold]{stored.key}[/] — {stored.model.name} ({stored.model.kind}, "
                  f"{stored.status}; last scored {_when(stored.scored_at)})")
    if stored.model.kind == "matrix":
        console.print(f"  grades: {definition['rows']} grade x {definition['columns']} grade")
    else:
        extras = [f"{name}: {definition[name]}" for name in ("half_life", "floor", "ceiling",
                                                              "cap") if name in definition]
        if extras:
            console.print("  " + ", ".join(str(e) for e in extras))
        table = Table("rule", "scores", "points", "cap", title="Rules")
        for rule in definition["rules"]:
            what = (f"event {rule['event']}" + (f" where {rule['where']}" if "where" in rule
                                                 else "")) if "event" in rule else \
                f"while {rule['when']}"
            cap = rule.get("cap")
            table.add_row(rule["id"] + (" (stack)" if rule.get("stack") else ""), what,
                          f"{rule['points']:+g}",
                          f"{cap['points']} per {cap['per']}" if cap else "")
        console.print(table)
        if definition.get("grades"):
            console.print("  grades: " + ", ".join(
                f"{g['grade']} from {g['min']}" if "min" in g else f"{g['grade']} below"
                for g in definition["grades"]))
    if definition.get("thresholds"):
        console.print(f"  thresholds (events): {definition['thresholds']}")


@app.command("list")
def scores_list(archived: Annotated[bool, typer.Option(help="Include archived models.")] = False,
                as_json: AsJson = False) -> None:
    """Every rules and matrix model."""
    found = _service().list_models(include_archived=archived)
    if as_json:
        print_json({"items": [m.to_dict() for m in found]})
        return
    if not found:
        console.print("No score models yet. `cadenza scores save FILE` defines one "
                      "(docs/leads/scoring.md).")
        return
    table = Table("key", "name", "kind", "status", "rules", "last scored")
    for stored in found:
        rules = len(getattr(stored.model, "rules", ()))
        table.add_row(stored.key, stored.model.name, stored.model.kind, stored.status,
                      str(rules) if rules else "-", _when(stored.scored_at))
    console.print(table)


@app.command("show")
def scores_show(key: KeyArg, as_json: AsJson = False) -> None:
    """One model."""
    stored = _service().get(key)
    if as_json:
        print_json(stored.to_dict())
    else:
        _render(stored)


@app.command("validate")
def scores_validate(file: FileArg) -> None:
    """Check a model file without saving it."""
    model = _service().validate(read_model_file(file))
    console.print(f"[green]Valid[/]: {model.kind} model {model.key!r}.")


@app.command("save")
def scores_save(file: FileArg,
                now: Annotated[bool, typer.Option("--score", help="Score every contact in it "
                                                  "right after saving.")] = False) -> None:
    """Create or replace a model from a file."""
    service = _service()
    stored, created = service.save(read_model_file(file))
    console.print(f"[green]{'Created' if created else 'Replaced'}[/] {stored.key}.")
    _render(stored)
    if now:
        _score(service, stored.key)


@app.command("archive")
def scores_archive(key: KeyArg) -> None:
    """Stop scoring a model and drop its scores."""
    stored = _service().archive(key)
    console.print(f"[green]Archived[/] {stored.key}; its scores were removed.")


def _score(service: ScoreService, key: str | None) -> None:
    models = [key] if key else [m.key for m in service.list_models()]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=max(1, len(models)))
        outcomes = service.score_all(key, progress=lambda done: progress.update(
            task, advance=1, description=f"scored {done}"))
    table = Table("model", "contacts", "changed", "events", "seconds")
    for o in outcomes:
        table.add_row(o["model"], str(o["scored"]), str(o["changed"]), str(o["events"]),
                      f"{o['seconds']:.2f}")
    console.print(table)


@app.command("score")
def scores_score(key: Annotated[str | None, typer.Argument(
        help="One model (with its matrices); every active model when left out.")] = None,
        as_json: AsJson = False) -> None:
    """Score every contact now."""
    service = _service()
    if as_json:
        print_json({"items": service.score_all(key)})
        return
    _score(service, key)


@app.command("top")
def scores_top(key: KeyArg, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
               as_json: AsJson = False) -> None:
    """The highest-scored contacts of a model."""
    items = _service().top(key, limit)
    if as_json:
        print_json({"model": key, "items": items})
        return
    table = Table("contact", "email", "score", "grade", title=f"Top of {key}")
    for item in items:
        table.add_row(str(item["contact_id"]), item["email"] or "", f"{item['score']:g}",
                      item["grade"] or "")
    console.print(table)


@app.command("distribution")
def scores_distribution(key: KeyArg,
                        buckets: Annotated[int, typer.Option(min=1, max=100)] = 10,
                        as_json: AsJson = False) -> None:
    """How a model's scores spread, and the count per grade."""
    found = _service().distribution(key, buckets)
    if as_json:
        print_json(found)
        return
    console.print(f"[bold]{key}[/]: {found['contacts']} contacts, scores {found['min']} to "
                  f"{found['max']}")
    widest = max((b["contacts"] for b in found["buckets"]), default=0) or 1
    for b in found["buckets"]:
        bar = "█" * round(40 * b["contacts"] / widest)
        console.print(f"  {b['from']:>10.2f} – {b['to']:<10.2f} {b['contacts']:>8} {bar}")
    if found["grades"]:
        console.print("  grades: " + ", ".join(f"{g['grade']}: {g['contacts']}"
                                               for g in found["grades"]))


@app.command("explain")
def scores_explain(contact_id: Annotated[int, typer.Argument(help="The contact's id.")],
                   model: Annotated[str | None, typer.Option(help="One model only.")] = None,
                   as_json: AsJson = False) -> None:
    """One contact's scores: points per rule and what each rule matched."""
    found = _service().contact_scores(contact_id, model)
    if as_json:
        print_json(found)
        return
    for item in found["models"]:
        score = "not scored yet" if item["score"] is None else f"{item['score']:g}"
        console.print(f"[bold]{item['model']}[/]: {score}"
                      + (f", grade {item['grade']}" if item["grade"] else ""))
        if item["kind"] == "matrix":
            console.print(f"  {item['rows']['model']} grade {item['rows']['grade']} x "
                          f"{item['columns']['model']} grade {item['columns']['grade']}")
            continue
        table = Table("rule", "points", "matched", "why")
        for rule in item["rules"]:
            if rule["kind"] == "attribute":
                why = ", ".join(f"{k} = {v!r}" for k, v in rule["seen"].items())
            else:
                why = f"{rule['events']} x {rule['event']} ({rule['raw_points']:g} raw)"
            table.add_row(rule["rule"], f"{rule['points']:g}",
                          "yes" if rule["matched"] else "no", why)
        console.print(table)


close_stores_after_commands(app)
