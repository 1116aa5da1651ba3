"""The Segment-compatible HTTP Tracking API under /v1/ (point any Segment or RudderStack
client at Cadenza's URL and it sends here unchanged)."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request

from cadenza.api.auth import Ctx, presented_key
from cadenza.api.responses import JSON
from cadenza.clock import iso_to_ms
from cadenza.errors import PayloadTooLarge, ValidationFailed
from cadenza.events import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, MODELS, BatchRequest, IngestRequest
from cadenza.governance import KeyKind

router = APIRouter(prefix="/v1", tags=["ingestion (Segment HTTP Tracking API)"])


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (also after gzip)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("body", f"request is {declared} bytes; the limit is {limit} bytes")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise ValidationFailed("Content-Encoding", f"{encoding!r} is not supported; send the "
                               "body as plain JSON or gzip")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("body", f"request is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip" and body:
        body = _gunzip(body, limit)
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate at most `limit` bytes: a small gzip bomb must not become a large allocation."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ValidationFailed("body", "Content-Encoding is gzip but the body is not valid "
                               "gzip") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("body", f"request is over the limit of {limit} bytes once "
                              "decompressed")
    if not inflater.eof:
        raise ValidationFailed("body", "the gzip body is truncated; send the whole stream")
    return plain


def _parse_json(body: bytes) -> Any:
    if not body:
        raise ValidationFailed("body", "the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("body", f"the body is not valid JSON: {exc}") from None


def _sent_at(value: Any) -> int | None:
    if value is None:
        return None
    ms = iso_to_ms(value) if isinstance(value, str) else None
    if ms is not None:
        return ms
    raise ValidationFailed("sentAt", f"{value!r} is not an ISO 8601 time")


async def _authorised_body(ctx: Ctx, request: Request, limit: int) -> Any:
    """The parsed body, once the write key is known good.

    A key in the Authorization header is checked before the body is read; without one the key
    may come as `writeKey` in the body (Segment's batch format), so the body is parsed first.
    """
    key = presented_key(request)
    if key:
        await _check_write_key(ctx, key)
    body = _parse_json(await _read_body(request, limit))
    if not key:
        in_body = body.get("writeKey") if isinstance(body, dict) else None
        await _check_write_key(ctx, in_body if isinstance(in_body, str) else "")
    return body


async def _check_write_key(ctx: Ctx, key: str) -> None:
    # A key not in the cache is read (and its last use written) off the event loop, so a
    # busy database never stalls the requests already in flight.
    if ctx.keys.is_cached(key):
        ctx.keys.check(key, (KeyKind.WRITE,), ctx.clock.now_ms())
    else:
        await asyncio.to_thread(ctx.keys.check, key, (KeyKind.WRITE,), ctx.clock.now_ms())


def _source(request: Request) -> str:
    return request.headers.get("x-cadenza-source", "api")[:64] or "api"


def _single(kind: str) -> Any:
    schema = MODELS[kind].model_json_schema(ref_template="#/components/schemas/{model}")

    async def endpoint(request: Request, ctx: Ctx) -> JSON:
        body = await _authorised_body(ctx, request, MAX_MESSAGE_BYTES)
        result = await ctx.writer.submit(IngestRequest([body], _source(request), implied_type=kind))
        if result.rejected:
            first = result.rejected[0]
            # A problem with the message as a whole is a problem with the body.
            raise ValidationFailed(first.field or "body", first.reason)
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
    body = await _authorised_body(ctx, request, MAX_BATCH_BYTES)
    if not isinstance(body, dict):
        raise ValidationFailed("body", f"must be a JSON object with a 'batch' list, got "
                               f"{type(body).__name__}")
    if not isinstance(body.get("batch"), list):
        raise ValidationFailed("batch", "is required and must be a list of messages")
    messages = body["batch"]
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise ValidationFailed("context", f"must be a JSON object, got {type(context).__name__}")
    result = await ctx.writer.submit(IngestRequest(
        messages, _source(request), batch_sent_at=_sent_at(body.get("sentAt")),
        batch_context=context))
    return JSON(result.to_dict())


router.add_api_route("/import", batch, methods=["POST"], response_class=JSON,
                     include_in_schema=False)
