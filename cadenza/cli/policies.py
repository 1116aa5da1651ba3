"""`cadenza policies`: show, set (from a YAML or JSON file) and clear the send-time policies
(consent modes, frequency caps, quiet hours) of the workspace or of one journey."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cadenza.channels.policies import WORKSPACE, PolicyService, StoredPolicy
from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
    read_document,
)
from cadenza.clock import SystemClock

policies = typer.Typer(help="Send-time policies: consent modes, frequency caps, quiet hours.",
                       no_args_is_help=True)

ScopeArg = Annotated[str, typer.Argument(help="'workspace' or 'journey:<key>'.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    """Add the `policies` group to the `cadenza` command."""
    app.add_typer(policies, name="policies")
    close_stores_after_commands(policies)


def _service() -> PolicyService:
    return PolicyService(open_store(load_settings()), SystemClock())


def _when(ms: int | None) -> str:
    if ms is None:
        return "never (built-in default)"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _render(stored: StoredPolicy) -> None:
    policy = stored.policy
    console.print(f"[bold]{stored.scope}[/]  (updated {_when(stored.updated_at)})")
    if stored.scope == WORKSPACE:
        console.print(f"  time zone for contacts without one: {policy.timezone or 'UTC'}")
        modes = ", ".join(f"{c}: {m}" for c, m in sorted(policy.consent.items()))
        console.print(f"  consent: {modes or 'opt_out on every channel (default)'}")
    quiet = policy.quiet_hours
    console.print("  quiet hours: " + (f"{quiet.start}-{quiet.end} local time on "
                                       f"{', '.join(quiet.channels)}" if quiet else "none"))
    if not policy.caps:
        console.print("  frequency caps: none")
        return
    table = Table("channel", "limit", "window", "over the cap", title="Frequency caps")
    for cap in policy.caps:
        window = cap.window + (" (local days)" if cap.local_days else " (rolling)")
        table.add_row(cap.channel, str(cap.limit), window, cap.on_exceed)
    console.print(table)


def read_policy_file(path: Path) -> dict[str, object]:
    """A policy document from a YAML or JSON file."""
    document: dict[str, object] = read_document(
        path, " of policy settings (timezone, consent, caps, quiet_hours); see "
              "docs/channels/policies.md")
    return document


@policies.command("list")
def policies_list(as_json: AsJson = False) -> None:
    """Every stored policy, the workspace first."""
    found = _service().all()
    if as_json:
        print_json({"items": [p.to_dict() for p in found]})
        return
    if not found:
        console.print("No policies stored: every channel is opt_out, nothing is capped, no "
                      "quiet hours. `cadenza policies set FILE` sets one.")
    for stored in found:
        _render(stored)


@policies.command("show")
def policies_show(scope: ScopeArg = WORKSPACE, as_json: AsJson = False) -> None:
    """One scope's policy (the workspace's default when none is stored)."""
    stored = _service().get(scope)
    if as_json:
        print_json(stored.to_dict())
        return
    _render(stored)


@policies.command("set")
def policies_set(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="YAML or JSON policy file.")],
    scope: Annotated[str, typer.Option("--scope", "-s",
                                       help="'workspace' or 'journey:<key>'.")] = WORKSPACE,
) -> None:
    """Create or replace a scope's policy; the dispatcher applies it from its next batch."""
    stored, created = _service().set(scope, read_policy_file(file))
    console.print(f"[green]{'Created' if created else 'Replaced'}[/] the policy of {scope}.")
    _render(stored)


@policies.command("clear")
def policies_clear(scope: ScopeArg = WORKSPACE) -> None:
    """Remove a scope's policy (the workspace falls back to the default)."""
    if _service().delete(scope):
        console.print(f"[green]Cleared[/] the policy of {scope}.")
    else:
        console.print(f"{scope} had no stored policy; nothing changed.")
