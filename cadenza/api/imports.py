"""CSV import over HTTP: upload a file, get the row report; read a past import's report."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Annotated, BinaryIO, cast

from fastapi import APIRouter, Query, Request

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.errors import PayloadTooLarge

router = APIRouter(prefix="/api/imports", tags=["admin"])

MAX_UPLOAD = 1024 * 1024 * 1024  # 1 GiB; larger files belong on the CLI next to the server
_SPOOL = 8 * 1024 * 1024


@router.post("", response_class=JSON, status_code=201, openapi_extra={"requestBody": {
    "required": True, "content": {"text/csv": {"schema": {"type": "string",
                                                          "format": "binary"}}}}})
async def upload(
    request: Request,
    ctx: Ctx,
    _key: AdminKey,
    filename: Annotated[str, Query(max_length=200)] = "upload.csv",
    encoding: Annotated[str | None, Query(max_length=32)] = None,
    allow_resubscribe: Annotated[bool, Query(description=(
        "Let consent cells turn an opt-out back into opted_in or pending; without it such a "
        "cell fails its row."))] = False,
) -> JSON:
    """Import contacts from the CSV in the request body (`Content-Type: text/csv`).

    The body is streamed to a temporary file, then imported in batches; the response is the
    import report (counts and the rows that failed, by line, column and reason). Safe to
    repeat: importing the same file again changes nothing.
    """
    from cadenza.events import import_contacts

    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise PayloadTooLarge("", f"upload is over {MAX_UPLOAD // 2**20} MiB; import "
                                      "large files with `cadenza contacts import`")
            spool.write(chunk)
        spool.seek(0)
        stream = cast(BinaryIO, spool)  # a SpooledTemporaryFile is a binary file object
        report = await asyncio.to_thread(import_contacts, ctx.store, ctx.clock, stream,
                                         filename, encoding=encoding,
                                         allow_resubscribe=allow_resubscribe)
    return JSON(report.to_dict(), status_code=201)


@router.get("/{import_id}", response_class=JSON)
def get(ctx: Ctx, _key: AdminKey, import_id: int) -> JSON:
    """A past import: status, counts and its row errors."""
    return JSON(ctx.events.get_import(import_id))
