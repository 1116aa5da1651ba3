"""/api/segments: define, preview, compute, static lists, members, history, drift, export.
Each route parses, calls `SegmentService`, renders."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import StreamingResponse

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.errors import PayloadTooLarge, ValidationFailed
from cadenza.segments import SegmentService
from cadenza.segments.models import MAX_UPLOAD_BYTES

router = APIRouter(prefix="/api")

Key = Annotated[str, Path(min_length=1, max_length=128, description="The segment's key",
                          examples=["active-pros"])]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the "
                                                                 "previous page")]
Limit = Annotated[int, Query(ge=1, le=500)]
_EXAMPLE = {"key": "active-pros", "name": "Active pros",
            "condition": {"all": [{"attr": "plan", "eq": "pro"},
                                  {"count": "Logged In", "within": "30d", "gte": 3}]}}
_LIST_EXAMPLE = {"contact_ids": [12, 13], "emails": ["ann@example.com"], "user_ids": ["u-7"]}


def _service(ctx: Ctx) -> SegmentService:
    return SegmentService(ctx.store, ctx.clock)


def _mapping(body: Any, field: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed(field, "the body must be a JSON object")
    return body


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise ValidationFailed(name, "must be a list")
    return value


@router.get("/segments", response_class=JSON, tags=["segments"])
def list_segments(ctx: Ctx, _key: AdminKey,
                  status: Annotated[str | None, Query(max_length=16)] = "active") -> JSON:
    """Segments with their member counts (`status=archived` for archived ones)."""
    return JSON({"items": [s.to_dict() for s in _service(ctx).all(status)]})


@router.post("/segments", response_class=JSON, status_code=201, tags=["segments"])
def create_segment(ctx: Ctx, _key: AdminKey,
                   body: Annotated[Any, Body(examples=[_EXAMPLE])]) -> JSON:
    """Create a segment and fill it (409 when the key is taken)."""
    return JSON(_service(ctx).create(_mapping(body)).to_dict(), status_code=201)


@router.post("/segments/estimate", response_class=JSON, tags=["segments"])
def estimate_segment(ctx: Ctx, _key: AdminKey, body: Annotated[Any, Body(examples=[
        {"condition": _EXAMPLE["condition"], "sample": 10}])]) -> JSON:
    """How many contacts a condition matches now and a sample of them; saves nothing."""
    document = _mapping(body)
    for name in document:
        if name not in ("condition", "sample"):
            raise ValidationFailed(name, "unknown field; give condition and sample")
    if "condition" not in document:
        raise ValidationFailed("condition", "is missing")
    return JSON(_service(ctx).estimate(document["condition"],
                                       document.get("sample", 10)).to_dict())


@router.get("/segments/drift", response_class=JSON, tags=["segments"])
def drift(ctx: Ctx, _key: AdminKey, segment: Annotated[str | None, Query(max_length=128)] = None,
          limit: Limit = 50) -> JSON:
    """The latest scheduled recomputes and the drift they corrected, newest first."""
    return JSON({"items": [d.to_dict() for d in _service(ctx).drift(segment, limit)]})


@router.post("/segments/recompute", response_class=JSON, tags=["segments"])
def recompute_all(ctx: Ctx, _key: AdminKey) -> JSON:
    """Recompute every dynamic segment now; the drift of each."""
    return JSON({"items": [d.to_dict() for d in _service(ctx).recompute()]})


@router.get("/segments/{key}", response_class=JSON, tags=["segments"])
def get_segment(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """One segment."""
    return JSON(_service(ctx).get(key).to_dict())


@router.put("/segments/{key}", response_class=JSON, tags=["segments"])
def update_segment(ctx: Ctx, _key: AdminKey, key: Key,
                   body: Annotated[Any, Body(examples=[_EXAMPLE])]) -> JSON:
    """Replace a segment's name, description or condition; members follow at once."""
    return JSON(_service(ctx).update(key, _mapping(body)).to_dict())


@router.post("/segments/{key}/archive", response_class=JSON, tags=["segments"])
def archive_segment(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Archive a segment (refused while another segment references it)."""
    return JSON(_service(ctx).archive(key).to_dict())


@router.post("/segments/{key}/recompute", response_class=JSON, tags=["segments"])
def recompute_one(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Recompute one dynamic segment now; its drift."""
    return JSON(_service(ctx).recompute(key)[0].to_dict())


@router.get("/segments/{key}/members", response_class=JSON, tags=["segments"])
def list_members(ctx: Ctx, _key: AdminKey, key: Key, cursor: Cursor = None,
                 limit: Limit = 100) -> JSON:
    """A page of members by contact id."""
    return JSON(_service(ctx).members(key, cursor, limit).to_dict())


@router.post("/segments/{key}/members", response_class=JSON, tags=["segments"])
def add_members(ctx: Ctx, _key: AdminKey, key: Key,
                body: Annotated[Any, Body(examples=[_LIST_EXAMPLE])]) -> JSON:
    """Add contacts to a static segment by id, email or user id (at most 10,000)."""
    document = _mapping(body)
    _only_lists(document)
    return JSON(_service(ctx).add(key, contact_ids=_list(document, "contact_ids"),
                                  emails=_list(document, "emails"),
                                  user_ids=_list(document, "user_ids")).to_dict())


@router.post("/segments/{key}/members/remove", response_class=JSON, tags=["segments"])
def remove_members(ctx: Ctx, _key: AdminKey, key: Key,
                   body: Annotated[Any, Body(examples=[_LIST_EXAMPLE])]) -> JSON:
    """Remove contacts from a static segment by id, email or user id."""
    document = _mapping(body)
    _only_lists(document)
    return JSON(_service(ctx).remove(key, contact_ids=_list(document, "contact_ids"),
                                     emails=_list(document, "emails"),
                                     user_ids=_list(document, "user_ids")).to_dict())


def _only_lists(document: dict[str, Any]) -> None:
    for name in document:
        if name not in ("contact_ids", "emails", "user_ids"):
            raise ValidationFailed(name, "unknown field; give contact_ids, emails or user_ids")


@router.post("/segments/{key}/upload", response_class=JSON, tags=["segments"],
             openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def upload_members(request: Request, ctx: Ctx, _key: AdminKey, key: Key,
                         remove: bool = False) -> JSON:
    """Add (or with `remove=true` remove) the contacts a CSV names: a header row with a
    column `email`, `user_id` or `contact_id`. Rows naming nobody are reported."""
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_UPLOAD_BYTES:
            raise PayloadTooLarge("file", f"uploads are limited to "
                                          f"{MAX_UPLOAD_BYTES // 2**20} MiB; split the file")
    report = await asyncio.to_thread(_service(ctx).upload, key, bytes(data), remove=remove)
    return JSON(report.to_dict())


@router.get("/segments/{key}/history", response_class=JSON, tags=["segments"])
def segment_history(ctx: Ctx, _key: AdminKey, key: Key, cursor: Cursor = None,
                    limit: Limit = 100) -> JSON:
    """Entries and exits of a segment, newest first."""
    return JSON(_service(ctx).history(key, cursor=cursor, limit=limit).to_dict())


@router.get("/segments/{key}/export", tags=["segments"],
            responses={200: {"content": {"text/csv": {}}}})
def export_segment(ctx: Ctx, _key: AdminKey, key: Key,
                   attributes: Annotated[str, Query(max_length=4000, description=(
                       "Comma-separated attribute columns"))] = "") -> StreamingResponse:
    """The members as CSV: contact_id, email, user_id and the chosen attributes; cells a
    spreadsheet would run as formulas are neutralised with a leading quote."""
    names = [a.strip() for a in attributes.split(",") if a.strip()]
    chunks = _service(ctx).export(key, names)
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="segment-{key}.csv"'})


@router.get("/contacts/{contact_id}/segments", response_class=JSON, tags=["segments"])
def contact_segments(ctx: Ctx, _key: AdminKey, contact_id: int) -> JSON:
    """The active segments a contact belongs to."""
    return JSON({"items": _service(ctx).contact_segments(contact_id)})


@router.get("/contacts/{contact_id}/segment-history", response_class=JSON, tags=["segments"])
def contact_history(ctx: Ctx, _key: AdminKey, contact_id: int, cursor: Cursor = None,
                    limit: Limit = 100) -> JSON:
    """A contact's segment entries and exits, newest first."""
    return JSON(_service(ctx).history(contact_id=contact_id, cursor=cursor,
                                      limit=limit).to_dict())
