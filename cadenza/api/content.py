"""Templates beyond save and preview, under /api: snippets, sender identities, verified test
addresses and test sends. Each route parses, calls a service, renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.admin import MAX_ID
from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.context import AppContext
from cadenza.api.responses import JSON
from cadenza.channels.senders import SenderService
from cadenza.channels.testsend import TestSendService

router = APIRouter(prefix="/api")

Key = Annotated[str, Path(min_length=1, max_length=128)]
Address = Annotated[str, Path(min_length=3, max_length=320)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SnippetBody(_Body):
    """A snippet's source: HTML or text, Jinja2, included as {% include "key" %}."""

    body: str = Field(max_length=64 * 1024,
                      examples=['<p>Unsubscribe: <a href="{{ unsubscribe_url }}">here</a></p>'])


class SenderBody(_Body):
    """Who an email is from."""

    from_address: str = Field(max_length=320, examples=["Quillstack <hello@example.com>"])
    reply_to: str | None = Field(default=None, max_length=320)
    list_id: str | None = Field(default=None, max_length=255,
                                examples=["Newsletter <news.example.com>"])


class TestAddressBody(_Body):
    """An internal address to receive test sends."""

    address: str = Field(max_length=320, examples=["me@example.com"])


class VerifyBody(_Body):
    """The token mailed to the address."""

    address: str = Field(max_length=320)
    token: str = Field(min_length=1, max_length=200)


class TestSendBody(_Body):
    """Render as this contact, send to this verified test address."""

    address: str = Field(max_length=320)
    contact_id: int = Field(ge=1, le=MAX_ID)
    entry: dict[str, Any] = Field(default_factory=dict)
    locale: str | None = Field(default=None, max_length=35)


def _senders(ctx: AppContext) -> SenderService:
    return SenderService(ctx.store, ctx.clock)


def _tests(ctx: AppContext) -> TestSendService:
    return TestSendService.from_settings(ctx.store, ctx.clock, ctx.settings, ctx.templates)


# --- snippets ---------------------------------------------------------------------------------

@router.get("/snippets", response_class=JSON, tags=["templates"])
def list_snippets(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every snippet, by key."""
    return JSON({"items": [s.to_dict() for s in ctx.templates.snippets.all()]})


@router.get("/snippets/{key}", response_class=JSON, tags=["templates"])
def get_snippet(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """One snippet."""
    return JSON(ctx.templates.snippets.get(key).to_dict())


@router.put("/snippets/{key}", response_class=JSON, tags=["templates"])
def put_snippet(ctx: Ctx, _key: AdminKey, key: Key, body: SnippetBody) -> JSON:
    """Create (201) or replace (200) a snippet; unknown includes and cycles are refused."""
    snippet, created = ctx.templates.snippets.save(key, body.body)
    return JSON(snippet.to_dict(), status_code=201 if created else 200)


@router.delete("/snippets/{key}", response_class=JSON, tags=["templates"])
def delete_snippet(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Delete a snippet no template or snippet includes (409 otherwise)."""
    ctx.templates.snippets.delete(key)
    return JSON({"deleted": key})


# --- sender identities ------------------------------------------------------------------------

@router.get("/senders", response_class=JSON, tags=["templates"])
def list_senders(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every sender identity, by key."""
    return JSON({"items": [s.to_dict() for s in _senders(ctx).all()]})


@router.get("/senders/{key}", response_class=JSON, tags=["templates"])
def get_sender(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """One sender identity."""
    return JSON(_senders(ctx).get(key).to_dict())


@router.put("/senders/{key}", response_class=JSON, tags=["templates"])
def put_sender(ctx: Ctx, _key: AdminKey, key: Key, body: SenderBody) -> JSON:
    """Create (201) or replace (200) a sender identity; addresses and the list id are
    checked (no line breaks, valid addresses)."""
    sender, created = _senders(ctx).save(key, body.from_address, body.reply_to, body.list_id)
    return JSON(sender.to_dict(), status_code=201 if created else 200)


@router.delete("/senders/{key}", response_class=JSON, tags=["templates"])
def delete_sender(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Delete a sender identity no template uses (409 otherwise)."""
    _senders(ctx).delete(key)
    return JSON({"deleted": key})


# --- test addresses and test sends ------------------------------------------------------------

@router.get("/test-addresses", response_class=JSON, tags=["templates"])
def list_test_addresses(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every test address, verified or pending."""
    return JSON({"items": [a.to_dict() for a in _tests(ctx).all()]})


@router.post("/test-addresses", response_class=JSON, tags=["templates"])
def add_test_address(ctx: Ctx, _key: AdminKey, body: TestAddressBody) -> JSON:
    """Add an address at an allowed domain; a verification token is mailed to it (202
    until it is verified)."""
    added = _tests(ctx).add(body.address)
    return JSON(added.to_dict(), status_code=200 if added.verified else 202)


@router.post("/test-addresses/verify", response_class=JSON, tags=["templates"])
def verify_test_address(ctx: Ctx, _key: AdminKey, body: VerifyBody) -> JSON:
    """Confirm an address with the token mailed to it."""
    return JSON(_tests(ctx).verify(body.address, body.token).to_dict())


@router.delete("/test-addresses/{address}", response_class=JSON, tags=["templates"])
def remove_test_address(ctx: Ctx, _key: AdminKey, address: Address) -> JSON:
    """Remove a test address."""
    _tests(ctx).remove(address)
    return JSON({"deleted": address})


@router.post("/templates/{key}/test-send", response_class=JSON, tags=["templates"])
def send_test(ctx: Ctx, _key: AdminKey, key: Key, body: TestSendBody) -> JSON:
    """Render the template as a contact and mail it, subject prefixed "[Test] ", to a
    verified test address (403 for any other address)."""
    return JSON(_tests(ctx).send(key, body.address, body.contact_id, body.entry,
                                 locale=body.locale))
