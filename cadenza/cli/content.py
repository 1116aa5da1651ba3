"""Template building blocks: snippets, sender identities and verified test addresses.
(`cadenza templates ...` in `outbox.py` saves, renders and test-sends templates.)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cadenza.channels.senders import SenderService
from cadenza.channels.templates import TemplateService
from cadenza.channels.testsend import TestSendService
from cadenza.cli.common import (
    close_stores_after_commands,
    console,
    load_settings,
    open_store,
    print_json,
)
from cadenza.clock import SystemClock

snippets = typer.Typer(help="Snippets: partials templates include with {% include \"key\" %}.",
                       no_args_is_help=True)
senders = typer.Typer(help="Sender identities: From, Reply-To and List-Id by key.",
                      no_args_is_help=True)
test_addresses = typer.Typer(help="Verified internal addresses that may receive test sends.",
                             no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `snippets`, `senders` and `test-addresses` groups to the `cadenza` command."""
    app.add_typer(snippets, name="snippets")
    app.add_typer(senders, name="senders")
    app.add_typer(test_addresses, name="test-addresses")
    close_stores_after_commands(snippets, senders, test_addresses)


def _templates() -> TemplateService:
    settings = load_settings()
    return TemplateService.from_settings(open_store(settings), SystemClock(), settings)


def _senders() -> SenderService:
    return SenderService(open_store(load_settings()), SystemClock())


def _tests() -> TestSendService:
    settings = load_settings()
    return TestSendService.from_settings(open_store(settings), SystemClock(), settings)


Key = Annotated[str, typer.Argument(help="Lower-case key, e.g. footer.")]


# --- snippets ---------------------------------------------------------------------------------

@snippets.command("save")
def snippets_save(
    key: Key,
    body_file: Annotated[Path, typer.Option(exists=True, dir_okay=False, readable=True,
                                            help="File with the snippet (HTML or text).")],
) -> None:
    """Create or replace a snippet (unknown includes and cycles are refused)."""
    snippet, created = _templates().snippets.save(key, body_file.read_text(encoding="utf-8"))
    console.print(f"[green]{'Created' if created else 'Updated'}[/] snippet {snippet.key!r}; "
                  "templates include it with {% include \"" + snippet.key + "\" %}.")


@snippets.command("list")
def snippets_list() -> None:
    """Every snippet."""
    table = Table("key", "characters", "first line")
    for snippet in _templates().snippets.all():
        first = snippet.body.strip().splitlines()[0] if snippet.body.strip() else ""
        table.add_row(snippet.key, f"{len(snippet.body):,}", first[:60])
    console.print(table)


@snippets.command("show")
def snippets_show(key: Key) -> None:
    """A snippet's source."""
    print_json(_templates().snippets.get(key).to_dict())


@snippets.command("delete")
def snippets_delete(key: Key) -> None:
    """Delete a snippet that nothing includes."""
    _templates().snippets.delete(key)
    console.print(f"Deleted snippet {key!r}.")


# --- sender identities ------------------------------------------------------------------------

@senders.command("save")
def senders_save(
    key: Key,
    from_address: Annotated[str, typer.Option("--from", help="'Name <address>' or address.")],
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    list_id: Annotated[str | None, typer.Option(
        help="List-Id, e.g. 'Newsletter <news.example.com>'.")] = None,
) -> None:
    """Create or replace a sender identity."""
    sender, created = _senders().save(key, from_address, reply_to, list_id)
    console.print(f"[green]{'Created' if created else 'Updated'}[/] sender {sender.key!r}: "
                  f"{sender.from_address}")


@senders.command("list")
def senders_list() -> None:
    """Every sender identity."""
    table = Table("key", "from", "reply-to", "list-id")
    for sender in _senders().all():
        table.add_row(sender.key, sender.from_address, sender.reply_to or "",
                      sender.list_id or "")
    console.print(table)


@senders.command("delete")
def senders_delete(key: Key) -> None:
    """Delete a sender identity that no template uses."""
    _senders().delete(key)
    console.print(f"Deleted sender {key!r}.")


# --- test addresses ---------------------------------------------------------------------------

AddressArg = Annotated[str, typer.Argument(help="An email address at a test-send domain.")]


@test_addresses.command("add")
def test_addresses_add(address: AddressArg) -> None:
    """Add an address; a verification token is mailed to it."""
    added = _tests().add(address)
    if added.verified:
        console.print(f"{added.address} is already verified.")
        return
    console.print(f"A token was mailed to {added.address}; confirm with "
                  f"`cadenza test-addresses verify {added.address} TOKEN`.")


@test_addresses.command("verify")
def test_addresses_verify(
    address: AddressArg,
    token: Annotated[str, typer.Argument(help="The token from the verification email.")],
) -> None:
    """Confirm an address with the token mailed to it."""
    verified = _tests().verify(address, token)
    console.print(f"[green]Verified[/] {verified.address}: it may receive test sends.")


@test_addresses.command("list")
def test_addresses_list() -> None:
    """Every test address."""
    table = Table("address", "verified")
    for item in _tests().all():
        table.add_row(item.address, "yes" if item.verified else "pending")
    console.print(table)


@test_addresses.command("remove")
def test_addresses_remove(address: AddressArg) -> None:
    """Remove a test address."""
    _tests().remove(address)
    console.print(f"Removed {address}.")
