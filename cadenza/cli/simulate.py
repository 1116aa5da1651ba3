"""`cadenza simulate`: push a synthetic population through a journey over simulated time."""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cadenza.cli.common import console
from cadenza.errors import ValidationFailed


def _pairs(values: list[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        name, sep, number = item.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValidationFailed(option, f"{item!r} is not NAME=NUMBER (e.g. purchased=0.2)")
    return out


def _attributes(values: list[str]) -> dict[str, dict[Any, float]]:
    out: dict[str, dict[Any, float]] = {}
    for item in values:
        name, sep, spec = item.partition("=")
        shares: dict[Any, float] = {}
        for part in spec.split(","):
            value, colon, share = part.partition(":")
            try:
                shares[value] = float(share)
            except ValueError:
                colon = ""
            if not colon:
                raise ValidationFailed("--attr", f"{item!r} is not NAME=VALUE:SHARE,... "
                                       "(e.g. plan=pro:0.3,basic:0.7)")
        if not sep or not name:
            raise ValidationFailed("--attr", f"{item!r} is not NAME=VALUE:SHARE,...")
        out[name] = shares
    return out


def simulate(
    journey: Annotated[Path, typer.Argument(help="The journey file (YAML or JSON).",
                                            exists=True, dir_okay=False)],
    contacts: Annotated[int, typer.Option(min=1, max=10_000_000,
                                          help="Synthetic contacts.")] = 1_000,
    days: Annotated[float, typer.Option(min=0.0, max=3650.0, help="Simulated days.")] = 14.0,
    attr: Annotated[list[str] | None, typer.Option(
        help="Attribute distribution, NAME=VALUE:SHARE,... (repeatable).")] = None,
    rate: Annotated[list[str] | None, typer.Option(
        help="Background event rate, EVENT=PER_DAY (repeatable).")] = None,
    convert: Annotated[list[str] | None, typer.Option(
        help="Conversion probability, EVENT=P: the contact does EVENT once (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    paths: Annotated[Path | None, typer.Option(
        help="Write each contact's path through the journey to this CSV file.")] = None,
) -> None:
    """Run a journey over simulated time and print per-step counts, messages, conversions."""
    from cadenza.engine.simulate import Behaviour, Simulation
    from cadenza.journeys import compile_definition, load_journey
    from cadenza.store import Store, upgrade

    definition = load_journey(journey.read_text(encoding="utf-8"))
    spec = compile_definition(definition)
    try:
        behaviour = Behaviour(attributes=_attributes(attr or []),
                              rates=_pairs(rate or [], "--rate"),
                              conversions=_pairs(convert or [], "--convert"))
    except ValueError as exc:
        raise ValidationFailed("behaviour", str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="cadenza-sim-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'simulation.db'}"
        upgrade(url)
        store = Store.create(url)
        try:
            sim = Simulation(store, spec, definition, behaviour, seed=seed)
            console.print(f"[bold]{spec.key}[/]: {contacts:,} contacts, {days:g} days")
            sim.setup(contacts, days)
            stop_checkpoints = sim.start_checkpointer()
            started = time.perf_counter()
            with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.description}"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task("", total=1000)

                def tick(done: int, total: int) -> None:
                    bar.update(task, completed=int(1000 * done / max(total, 1)),
                               description=f"day {done / 86_400_000:.1f}")

                steps = sim.enter_all().steps + sim.run(days, tick).steps
            seconds = time.perf_counter() - started
            stop_checkpoints.set()
            result = sim.result(steps, seconds, days)
            _render(result, spec.steps.keys())
            if paths is not None:
                with paths.open("w", newline="", encoding="utf-8") as out:
                    writer = csv.writer(out)
                    writer.writerow(["contact_id", "path"])
                    for cid, path in sorted(sim.paths().items()):
                        writer.writerow([cid, " > ".join(path)])
                console.print(f"paths written to {paths}")
        finally:
            store.dispose()


def _render(result: Any, order: Any) -> None:
    table = Table(title="steps")
    for column in ("step", "entered", "left", "waiting now", "messages"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for node in order:
        entered, departed = result.step_stats.get(node, (0, 0))
        table.add_row(node, f"{entered:,}", f"{departed:,}", f"{result.waiting[node]:,}",
                      f"{result.messages[node]:,}")
    console.print(table)
    outcomes = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.outcomes.items()))
    conversions = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.conversions.items()))
    console.print(f"outcomes: {outcomes or '-'}")
    console.print(f"conversions: {conversions or '-'}")
    rate = result.steps / result.seconds if result.seconds else 0.0
    console.print(f"{result.steps:,} steps in {result.seconds:.1f} s ({rate:,.0f} steps/s)")
