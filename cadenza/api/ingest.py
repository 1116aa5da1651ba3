"""The Segment-compatible HTTP Tracking API under /v1/ (point any Segment or RudderStack
client at Cadenza's URL and it sends here unchanged)."""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request

from cadenza.api.auth import Ctx, presented_key
from cadenza.api.responses import JSON
from cadenza.errors import PayloadTooLarge, ValidationFailed
from cadenza.events import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, IngestRequest
from cadenza.events.segment import MODELS, BatchRequest
from cadenza.governance import KeyKind

router = APIRouter(prefix="/v1", tags=["ingestion (Segment HTTP Tracking API)"])


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (also after gzip)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("", f"request is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("", f"request is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ValidationFailed("", "Content-Encoding is gzip but the body is not") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge("", f"request is over the limit of {limit} bytes once "
                                  "decompressed")
    return body


def _parse_json(body: bytes) -> Any:
    if not body:
        raise ValidationFailed("", "the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("", f"the body is not valid JSON: {exc}") from None


def _sent_at(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return int(parsed.timestamp() * 1000)
    raise ValidationFailed("sentAt", f"{value!r} is not an ISO 8601 time")


def _check_write_key(ctx: Ctx, request: Request, body: Any) -> None:
    key = presented_key(request)
    if not key and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        key = body["writeKey"]
    ctx.keys.check(key, (KeyKind.WRITE,), ctx.clock.now_ms())


def _source(request: Request) -> str:
    return request.headers.get("x-cadenza-source", "api")[:64] or "api"


def _single(kind: str) -> Any:
    schema = MODELS[kind].model_json_schema(ref_template="#/components/schemas/{model}")

    async def endpoint(request: Request, ctx: Ctx) -> JSON:
        body = _parse_json(await _read_body(request, MAX_MESSAGE_BYTES))
        _check_write_key(ctx, request, body)
        result = await ctx.writer.submit(IngestRequest([body], _source(request), implied_type=kind))
        if result.rejected:
            first = result.rejected[0]
            raise ValidationFailed(first.field, first.reason)
        return JSON(result.to_dict())

    endpoint.__name__ = kind
    endpoint.__doc__ = (f"Segment `{kind}` call. Basic auth with a write key as the username. "
                        f"At most {MAX_MESSAGE_BYTES // 1024} KB.")
    return endpoint, schema


for _kind in MODELS:
    _endpoint, _schema = _single(_kind)
    router.add_api_route(
        f"/{_kind}", _endpoint, methods=["POST"], response_class=JSON,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": _schema}}}},
    )


@router.post(
    "/batch",
    response_class=JSON,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": BatchRequest.model_json_schema()}}}},
)
async def batch(request: Request, ctx: Ctx) -> JSON:
    """Segment `batch`: many calls in one request, at most 500 KB, 32 KB each.

    Valid messages are stored even when others are not; the response lists the rejected ones
    with the field and the reason.
    """
    body = _parse_json(await _read_body(request, MAX_BATCH_BYTES))
    _check_write_key(ctx, request, body)
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise ValidationFailed("batch", "is required and must be a list of messages")
    messages = body["batch"]
    context = body.get("context") if isinstance(body.get("context"), dict) else None
    result = await ctx.writer.submit(IngestRequest(
        messages, _source(request), batch_sent_at=_sent_at(body.get("sentAt")),
        batch_context=context))
    return JSON(result.to_dict())


router.add_api_route("/import", batch, methods=["POST"], response_class=JSON,
                     include_in_schema=False)
