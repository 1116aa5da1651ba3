"""`cadenza models`: define predictive models (YAML or JSON), train them, read their report,
promote through the guard, roll back, score every contact, explain one score."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
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
from cadenza.leads import PredictiveService, VersionRow

app = typer.Typer(help="Predictive lead-scoring models: define, train, promote, score, "
                  "explain.", no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="The model's key.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
BAR = 30


def _service() -> PredictiveService:
    settings = load_settings()
    return PredictiveService(open_store(settings), SystemClock(),
                             tolerance=settings.model_auc_tolerance)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@contextmanager
def _stage(title: str) -> Iterator[Any]:
    with console.status(title) as status:
        yield lambda step: status.update(f"{title}: {step}")


def _summary(v: VersionRow) -> str:
    auc = v.metrics.get("auc")
    shown = f"AUC {auc:.4f}" if isinstance(auc, float) else "no model"
    return f"version {v.version} ({v.status}, {shown}, {v.rows:,} rows)"


def render_report(v: VersionRow) -> None:
    """A version's report: headline, calibration, lift by decile (with bars), importances."""
    m = v.metrics
    console.print(f"[bold]{_summary(v)}[/]  trained {_when(v.trained_at)}"
                  + (f", promoted {_when(v.promoted_at)}" if v.promoted_at else ""))
    if v.note:
        console.print(f"  note: {v.note}")
    if "auc" not in m:
        return
    balance = m["class_balance"]
    console.print(f"  holdout AUC {m['auc']:.4f}   Brier {m['brier']:.4f}   base rate "
                  f"{m['base_rate']:.2%}   mean predicted {m['mean_predicted']:.2%}")
    console.print(f"  rows {m['rows']['total']:,} (train {m['rows']['train']:,}, holdout "
                  f"{m['rows']['holdout']:,}); converted {balance['converted']:,}, not "
                  f"{balance['not_converted']:,}")
    if m.get("compare"):
        console.print(f"  live version {m['compare']['live_version']} on this holdout: AUC "
                      f"{m['compare']['live_auc']:.4f}")
    calibration = Table("predicted", "contacts", "mean predicted", "observed",
                        title="Calibration (holdout)")
    for row in m["calibration"]:
        if row["count"]:
            calibration.add_row(f"{row['from']:.0%}-{row['to']:.0%}", f"{row['count']:,}",
                                f"{row['mean_predicted']:.2%}", f"{row['observed']:.2%}")
    console.print(calibration)
    top = max((row["lift"] or 0 for row in m["lift"]), default=1) or 1
    lift = Table("decile", "contacts", "conversion", "lift", "", title="Lift by decile "
                 "(highest scores first)")
    for row in m["lift"]:
        value = row["lift"] or 0.0
        lift.add_row(str(row["decile"]), f"{row['count']:,}", f"{row['conversion_rate']:.2%}",
                     f"{value:.2f}x", "#" * round(BAR * value / top))
    console.print(lift)
    weights = Table("feature", "weight", "share", title="Feature importances")
    for row in m["importances"][:15]:
        weights.add_row(row["feature"], f"{row['weight']:+.3f}", f"{row['share']:.1%}")
    console.print(weights)


def _read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = read_document(
        path, " with key, outcome, horizon_days and features; see docs/leads/predictive.md")
    return document


@app.command("define")
def models_define(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="YAML or JSON model definition.")],
) -> None:
    """Create or replace a model definition (train it next)."""
    model, created = _service().define(_read(file))
    console.print(f"[green]{'Created' if created else 'Replaced'}[/] model {model['key']}; "
                  f"train it with `cadenza models train {model['key']}`.")


@app.command("list")
def models_list(as_json: AsJson = False) -> None:
    """Every predictive model with its live version."""
    found = _service().models()
    if as_json:
        print_json({"items": found})
        return
    if not found:
        console.print("No predictive models yet: `cadenza models define FILE` creates one.")
        return
    table = Table("key", "name", "outcome", "horizon", "live", "AUC", "scored")
    for m in found:
        live = m["live"]
        table.add_row(m["key"], m["name"], m["definition"]["outcome"]["event"],
                      f"{m['definition']['horizon_days']} d",
                      f"v{live['version']}" if live else "-",
                      f"{live['metrics']['auc']:.4f}" if live else "-", _when(m["scored_at"]))
    console.print(table)


@app.command("train")
def models_train(key: KeyArg, promote: Annotated[bool, typer.Option(
        "--promote", help="Promote the new version if the guard accepts it.")] = False,
                 as_json: AsJson = False) -> None:
    """Train a candidate version now and show its report."""
    service = _service()
    with _stage(f"Training {key}") as say:
        version = service.train(key, progress=say)
    if promote:
        version = service.promote(key, version.version)
    if as_json:
        print_json(version.to_dict())
        return
    render_report(version)
    if not promote:
        console.print(f"Promote it with `cadenza models promote {key} {version.version}`.")


@app.command("versions")
def models_versions(key: KeyArg, as_json: AsJson = False) -> None:
    """Every version, newest first."""
    found = _service().versions(key)
    if as_json:
        print_json({"items": [v.to_dict(full=False) for v in found]})
        return
    table = Table("version", "status", "AUC", "Brier", "rows", "trained", "promoted", "note")
    for v in found:
        auc, brier = v.metrics.get("auc"), v.metrics.get("brier")
        table.add_row(str(v.version), v.status, f"{auc:.4f}" if auc is not None else "-",
                      f"{brier:.4f}" if brier is not None else "-", f"{v.rows:,}",
                      _when(v.trained_at), _when(v.promoted_at), v.note)
    console.print(table)


@app.command("report")
def models_report(key: KeyArg, version: Annotated[int | None, typer.Option(
        "--version", "-v", help="Default: the live version (else the newest).")] = None,
                  as_json: AsJson = False) -> None:
    """A version's report: AUC, calibration, lift by decile, feature importances."""
    found = _service().version(key, version)
    if as_json:
        print_json(found.to_dict())
        return
    render_report(found)


@app.command("promote")
def models_promote(key: KeyArg, version: Annotated[int, typer.Argument(help="Version.")],
                   force: Annotated[bool, typer.Option(
                       "--force", help="Promote even if its AUC is worse than the live "
                       "version's (recorded).")] = False,
                   note: Annotated[str, typer.Option(help="Why, for the history.")] = "") -> None:
    """Make a candidate live (the guard refuses a worse one unless --force)."""
    promoted = _service().promote(key, version, force=force, note=note)
    console.print(f"[green]Promoted[/] {_summary(promoted)}; score contacts with "
                  f"`cadenza models score {key}`.")
    if promoted.note:
        console.print(f"  note: {promoted.note}")


@app.command("rollback")
def models_rollback(key: KeyArg, to: Annotated[int | None, typer.Option(
        "--to", help="Default: the version live most recently before this one.")] = None) -> None:
    """Bring back an earlier live version."""
    live = _service().rollback(key, to)
    console.print(f"[green]Rolled back[/]: {_summary(live)} is live again.")


@app.command("score")
def models_score(key: KeyArg, as_json: AsJson = False) -> None:
    """Score every contact with the live version now."""
    with _stage(f"Scoring with {key}") as say:
        run = _service().score(key, progress=say)
    if as_json:
        print_json(run.to_dict())
        return
    took = sum(run.seconds.values())
    console.print(f"[green]Scored[/] {run.contacts:,} contacts with version {run.version} in "
                  f"{took:.1f}s (mean probability {run.mean_probability:.2%}); "
                  f"{run.changed:,} moved by a point or more.")


@app.command("explain")
def models_explain(key: KeyArg, contact: Annotated[int, typer.Argument(help="Contact id.")],
                   as_json: AsJson = False) -> None:
    """Why one contact has its score: every feature's effect, largest first."""
    found = _service().explain(key, contact)
    if as_json:
        print_json(found)
        return
    console.print(f"[bold]Contact {contact}[/]: {found['score']:.1f} / 100 (probability "
                  f"{found['probability']:.2%}; the average contact: "
                  f"{found['baseline_probability']:.2%}) with version {found['version']}")
    table = Table("feature", "value", "average", "effect (log-odds)")
    for row in found["features"][:10]:
        effect = row["effect"]
        colour = "green" if effect > 0 else "red" if effect < 0 else "white"
        table.add_row(row["feature"], f"{row['value']:g}", f"{row['mean']:g}",
                      f"[{colour}]{effect:+.3f}[/]")
    console.print(table)


close_stores_after_commands(app)
