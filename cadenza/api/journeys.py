"""The journeys API under /api/journeys: drafts, publishing, versions, status, migration, and
the JSON Schema of journey files.

Every route is parse, call `JourneyService`, render. Admin keys go in
`Authorization: Bearer <key>`; the schema is public (editors fetch it without a key).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.errors import PayloadTooLarge
from cadenza.journeys import journey_schema, load_journey
from cadenza.journeys.service import Source

router = APIRouter(prefix="/api/journeys", tags=["journeys"])

MAX_BODY = 2 * 1024 * 1024
"""A journey file is at most 1 MB; its JSON-escaped form inside {"yaml": ...} may be larger."""
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

Key = Annotated[str, Path(min_length=1, max_length=128, description="The journey's key.")]
Number = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


@router.get("/schema", response_class=JSON)
def schema() -> JSON:
    """The JSON Schema of journey files (also in docs/journey.schema.json)."""
    return JSON(journey_schema())


@router.get("", response_class=JSON)
def list_journeys(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every journey with its status and live, shadow and draft version numbers."""
    return JSON({"items": [j.to_dict() for j in ctx.journeys.list()]})


_DEFINITION_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [
        {"type": "object", "description": "A journey definition (JSON Schema: GET "
                                          "/api/journeys/schema)."},
        {"type": "object", "properties": {"yaml": {"type": "string"}}, "required": ["yaml"],
         "additionalProperties": False}]}},
    "application/yaml": {"schema": {"type": "string"}}}}}


async def _source(request: Request) -> Source:
    """The journey in the body: JSON definition, {"yaml": text}, or a YAML body."""
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge("", f"the body is over {MAX_BODY // 2**20} MiB; a journey "
                                  "file may have at most 1 MB")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-type", "").split(";")[0].strip() in _YAML_TYPES:
        return body
    definition = load_journey(body)
    text = definition.get("yaml")
    if len(definition) == 1 and isinstance(text, str):
        return text
    return definition


@router.post("", response_class=JSON, status_code=201, openapi_extra=_DEFINITION_BODY)
async def save_draft(request: Request, ctx: Ctx, _key: AdminKey) -> JSON:
    """Save a journey as a draft: the definition as JSON, `{"yaml": "<file>"}`, or the YAML
    file itself with `Content-Type: application/yaml`. Creates the journey when new;
    replaces its open draft, or opens a new version after the published ones."""
    source = await _source(request)
    version = await asyncio.to_thread(ctx.journeys.save_draft, source)
    return JSON(version.to_dict(), status_code=201)


@router.post("/validate", response_class=JSON, openapi_extra=_DEFINITION_BODY)
async def validate(request: Request, ctx: Ctx, _key: AdminKey) -> JSON:
    """Check a journey as publishing would, without saving it (400 lists every problem)."""
    source = await _source(request)
    spec = await asyncio.to_thread(ctx.journeys.validate, source)
    return JSON({"valid": True, "journey": spec.key, "steps": len(spec.steps)})


@router.get("/{key}", response_class=JSON)
def get_journey(ctx: Ctx, _key: AdminKey, key: Key,
                version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> JSON:
    """A journey with one version's definition: `version`, else the live one, else the
    draft."""
    journey = ctx.journeys.get(key)
    shown = ctx.journeys.version(key, version)
    return JSON({**journey.to_dict(), "version": shown.to_dict()})


@router.get("/{key}/versions", response_class=JSON)
def get_versions(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Every version of a journey, oldest first (without definitions)."""
    return JSON({"items": [v.to_dict(definition=False) for v in ctx.journeys.versions(key)]})


@router.get("/{key}/diff", response_class=JSON)
def get_diff(ctx: Ctx, _key: AdminKey, key: Key,
             a: Annotated[int, Query(ge=1, le=2**31 - 1)],
             b: Annotated[int, Query(ge=1, le=2**31 - 1)]) -> JSON:
    """A unified diff of two versions' definitions, as YAML."""
    return JSON({"a": a, "b": b, "diff": ctx.journeys.diff(key, a, b)})


class PublishBody(_Body):
    """Which version to publish, and whether live or in shadow."""

    version: Number | None = Field(None, description="Default: the open draft.")
    shadow: bool = Field(False, description="Run it in shadow beside the live version "
                         "instead of making it live.")


@router.post("/{key}/publish", response_class=JSON)
def publish(ctx: Ctx, _key: AdminKey, key: Key,
            body: Annotated[PublishBody | None, Body()] = None) -> JSON:
    """Validate fully and publish (immutable, content-hashed); it goes live unless shadow."""
    body = body or PublishBody()
    version = ctx.journeys.publish(key, body.version, shadow=body.shadow)
    return JSON(version.to_dict())


@router.post("/{key}/pause", response_class=JSON)
def pause(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """No new entries and no steps run until resumed."""
    return JSON(ctx.journeys.pause(key).to_dict())


@router.post("/{key}/resume", response_class=JSON)
def resume(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Let a paused journey run again."""
    return JSON(ctx.journeys.resume(key).to_dict())


@router.post("/{key}/archive", response_class=JSON)
def archive(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Archive for good; active enrollments exit with outcome "archived"."""
    ended = ctx.journeys.archive(key)
    return JSON({**ctx.journeys.get(key).to_dict(), "ended_enrollments": ended})


class RollbackBody(_Body):
    """The published version to make live again."""

    to: Number


@router.post("/{key}/rollback", response_class=JSON)
def rollback(ctx: Ctx, _key: AdminKey, key: Key, body: RollbackBody) -> JSON:
    """Point the live version back at an earlier published version."""
    return JSON(ctx.journeys.rollback(key, body.to).to_dict())


class ShadowBody(_Body):
    """The published version to run in shadow; null stops the shadow."""

    version: Number | None


@router.post("/{key}/shadow", response_class=JSON)
def shadow(ctx: Ctx, _key: AdminKey, key: Key, body: ShadowBody) -> JSON:
    """Run a published version in shadow beside the live one (or stop it)."""
    return JSON(ctx.journeys.set_shadow(key, body.version).to_dict())


class MigrateBody(_Body):
    """Which enrollments move where."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Number = Field(alias="from")
    to: Number
    mapping: dict[Annotated[str, Field(max_length=128)],
                  Annotated[str, Field(max_length=128)]] = Field(max_length=1000)


@router.post("/{key}/migrate", response_class=JSON)
def migrate(ctx: Ctx, _key: AdminKey, key: Key, body: MigrateBody) -> JSON:
    """Move the active enrollments of one version to another; `mapping` (old step -> new
    step) must cover every step where they are."""
    moved = ctx.journeys.migrate(key, body.from_, body.to, body.mapping)
    return JSON({"moved": moved, "total": sum(moved.values())})
