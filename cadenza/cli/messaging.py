"""Webhook endpoint and SMS commands: `cadenza webhooks add|list|show|rotate|remove|secret`
and `cadenza sms count` (segments and encoding of a text)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from cadenza.channels.endpoints import EndpointService, SavedEndpoint
from cadenza.channels.options import WebhookOptions
from cadenza.channels.signing import new_secret
from cadenza.channels.smsparts import measure, split
from cadenza.channels.ssrf import SsrfGuard, parse_networks
from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
)
from cadenza.clock import SystemClock
from cadenza.errors import ValidationFailed

webhooks = typer.Typer(help="Saved webhook endpoints: URL (SSRF-checked), signing secret, "
                       "headers.", no_args_is_help=True)
sms = typer.Typer(help="SMS helpers.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `webhooks` and `sms` groups to the `cadenza` command."""
    app.add_typer(webhooks, name="webhooks")
    app.add_typer(sms, name="sms")
    close_stores_after_commands(webhooks)


def _service() -> EndpointService:
    settings = load_settings()
    try:
        options = WebhookOptions.from_settings(settings)
        guard = SsrfGuard(parse_networks(options.allow_networks))
    except ValueError as exc:
        raise ValidationFailed("CADENZA_WEBHOOK_ALLOW_NETWORKS", str(exc)) from None
    return EndpointService(open_store(settings), SystemClock(), guard)


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise ValidationFailed("--header", f"{value!r} must look like 'Name: value'")
        headers[name.strip()] = text.strip()
    return headers


def _show_secret(saved: SavedEndpoint) -> None:
    if saved.secret is not None:
        console.print(f"Signing secret (shown once; give it to the receiver): "
                      f"[bold]{saved.secret}[/]")


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


Header = Annotated[list[str] | None, typer.Option(
    "--header", "-H", help="Extra header 'Name: value' (repeatable).")]
Secret = Annotated[str | None, typer.Option(
    help="whsec_... secret to use (default: generate one).")]


@webhooks.command("add")
def webhooks_add(
    key: Annotated[str, typer.Argument(help="Endpoint key, e.g. crm-sync.")],
    url: Annotated[str, typer.Argument(help="https:// address to POST to.")],
    header: Header = None,
    secret: Secret = None,
) -> None:
    """Save an endpoint or update it (its URL must resolve to public addresses only)."""
    saved = asyncio.run(_service().save(key, url, _parse_headers(header or []), secret))
    console.print(f"[green]{'Saved' if saved.created else 'Updated'}[/] endpoint "
                  f"{key!r} -> {saved.endpoint.url}")
    _show_secret(saved)
    console.print(f"Use it in a journey: send: {{channel: webhook, endpoint: {key}}}")


@webhooks.command("list")
def webhooks_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Saved endpoints (secrets are never shown again)."""
    endpoints = _service().all()
    if as_json:
        print_json({"items": [e.to_dict() for e in endpoints]})
        return
    if not endpoints:
        console.print("No webhook endpoints. Add one with `cadenza webhooks add KEY URL`.")
        return
    table = Table("key", "url", "headers", "signed", "updated (UTC)", title="Webhook endpoints")
    for e in endpoints:
        table.add_row(e.key, e.url, ", ".join(sorted(e.headers)), "yes" if e.secret else "no",
                      _when(e.updated_at))
    console.print(table)


@webhooks.command("show")
def webhooks_show(key: Annotated[str, typer.Argument()]) -> None:
    """One endpoint (without its secret)."""
    print_json(_service().get(key).to_dict())


@webhooks.command("rotate")
def webhooks_rotate(key: Annotated[str, typer.Argument()], secret: Secret = None) -> None:
    """Give the endpoint a new signing secret (shown once); update the receiver with it."""
    saved = _service().rotate(key, secret)
    console.print(f"[green]Rotated[/] the secret of {key!r}.")
    _show_secret(saved)


@webhooks.command("remove")
def webhooks_remove(key: Annotated[str, typer.Argument()]) -> None:
    """Delete an endpoint; steps that name it fail until it is added again."""
    _service().remove(key)
    console.print(f"[green]Removed[/] endpoint {key!r}.")


@webhooks.command("secret")
def webhooks_secret() -> None:
    """Print a fresh whsec_ secret (for CADENZA_WEBHOOK_SIGNING_SECRET)."""
    console.print(new_secret())


@sms.command("count")
def sms_count(text: Annotated[str, typer.Argument(help="The message text.")]) -> None:
    """Encoding (GSM-7 or UCS-2), units and segments a text costs."""
    parts = measure(text)
    console.print(f"{parts.encoding}: {parts.units} "
                  f"{'septets' if parts.encoding == 'GSM-7' else 'UTF-16 units'}, "
                  f"{parts.segments} segment{'s' if parts.segments != 1 else ''}")
    if parts.segments > 1:
        for n, part in enumerate(split(text), start=1):
            console.print(f"  {n}: {part!r}")
