"""The outbox and templates under /api: list and inspect rows, replay dead letters, save,
read and preview templates. Each route parses, calls a service, renders."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.admin import MAX_ID, IdFilter, Limit
from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON

router = APIRouter(prefix="/api")

OutboxId = Annotated[int, Path(ge=1, le=MAX_ID)]
TemplateKey = Annotated[str, Path(min_length=1, max_length=128)]
Status = Literal["pending", "sending", "sent", "shadowed", "dead", "cancelled"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplayBody(_Body):
    """Dead rows to send again."""

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000)


class TranslationBody(_Body):
    """A locale's sources; a missing subject or preheader is the default's."""

    subject: str | None = Field(default=None, max_length=2000)
    preheader: str | None = Field(default=None, max_length=2000)
    body: str = Field(max_length=256 * 1024)
    text: str | None = Field(default=None, max_length=256 * 1024)


class TemplateBody(_Body):
    """A template's sources (Jinja2) and settings. PUT replaces the whole template: a text
    part left out is generated from the HTML again."""

    channel: str = Field(default="email", max_length=32, examples=["email"])
    subject: str = Field(default="", max_length=2000,
                         examples=["Welcome, {{ contact.attributes.first_name }}"])
    preheader: str = Field(default="", max_length=2000,
                           description="Preview text shown after the subject (email)")
    body: str = Field(max_length=256 * 1024, examples=["<p>Hi {{ contact.attributes."
                                                       "first_name | default('there') }}</p>"])
    text: str | None = Field(default=None, max_length=256 * 1024,
                             description="The text part; generated from the HTML when absent")
    format: Literal["jinja", "mjml"] = Field(default="jinja",
                                             description="mjml: the body is MJML (email)")
    locales: dict[str, TranslationBody] = Field(
        default_factory=dict, description="Translations by locale (fr, fr-CA, ...)")
    purpose: str = Field(default="marketing", max_length=64,
                         description="marketing, transactional or a topic key")
    sender: str | None = Field(default=None, max_length=64,
                               description="A sender identity key (email)")


class PreviewBody(_Body):
    """Who to render a template for."""

    contact_id: int = Field(ge=1, le=MAX_ID)
    entry: dict[str, Any] = Field(default_factory=dict,
                                  description="The entry context (event properties)")
    locale: str | None = Field(default=None, max_length=35,
                               description="Render this translation instead of the "
                               "contact's own")


@router.get("/outbox", response_class=JSON, tags=["outbox"])
def list_outbox(ctx: Ctx, _key: AdminKey, status: Status | None = None,
                contact_id: IdFilter = None, cursor: str | None = None,
                limit: Limit = 50) -> JSON:
    """Outbox rows, newest first; `status=dead` lists the dead letters."""
    page = ctx.outbox.find(status, contact_id=contact_id, cursor=cursor, limit=limit)
    return JSON(page.to_dict())


@router.get("/outbox/counts", response_class=JSON, tags=["outbox"])
def outbox_counts(ctx: Ctx, _key: AdminKey) -> JSON:
    """Rows per status."""
    return JSON(ctx.outbox.counts())


@router.get("/outbox/{outbox_id}", response_class=JSON, tags=["outbox"])
def get_outbox_row(ctx: Ctx, _key: AdminKey, outbox_id: OutboxId) -> JSON:
    """One row: payload, rendered message, attempts, last error."""
    return JSON(ctx.outbox.inspect(outbox_id))


@router.post("/outbox/replay", response_class=JSON, tags=["outbox"])
def replay_outbox(ctx: Ctx, _key: AdminKey, body: ReplayBody) -> JSON:
    """Dead rows back to pending with attempts reset; other rows are reported unchanged."""
    return JSON(ctx.outbox.replay(body.ids).to_dict())


@router.get("/templates", response_class=JSON, tags=["templates"])
def list_templates(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every template, by key."""
    return JSON({"items": [t.to_dict() for t in ctx.templates.all()]})


@router.get("/templates/{key}", response_class=JSON, tags=["templates"])
def get_template(ctx: Ctx, _key: AdminKey, key: TemplateKey) -> JSON:
    """One template's sources."""
    return JSON(ctx.templates.get(key).to_dict())


@router.put("/templates/{key}", response_class=JSON, tags=["templates"])
def put_template(ctx: Ctx, _key: AdminKey, key: TemplateKey, body: TemplateBody) -> JSON:
    """Create (201) or replace (200) a template; syntax errors, unknown snippets and broken
    MJML are refused naming the field."""
    locales = {name: t.model_dump(exclude_none=True) for name, t in body.locales.items()}
    record, created = ctx.templates.save(
        key, body.channel, body.subject, body.body, preheader=body.preheader, text=body.text,
        format=body.format, locales=locales, purpose=body.purpose, sender=body.sender)
    return JSON(record.to_dict(), status_code=201 if created else 200)


@router.delete("/templates/{key}", response_class=JSON, tags=["templates"])
def delete_template(ctx: Ctx, _key: AdminKey, key: TemplateKey) -> JSON:
    """Delete a template (outbox rows naming it fail until it is saved again)."""
    ctx.templates.delete(key)
    return JSON({"deleted": key})


@router.post("/templates/{key}/preview", response_class=JSON, tags=["templates"])
def preview_template(ctx: Ctx, _key: AdminKey, key: TemplateKey, body: PreviewBody) -> JSON:
    """Render a template for one contact, as the dispatcher would (subject, preheader, body,
    text part, and the locale used)."""
    return JSON(ctx.templates.preview(key, body.contact_id, body.entry, locale=body.locale))
