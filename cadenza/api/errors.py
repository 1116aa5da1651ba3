"""One table from Cadenza errors to HTTP statuses, and clear bodies for request errors."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from cadenza.api.responses import JSON
from cadenza.errors import (
    AuthError,
    CadenzaError,
    Conflict,
    Forbidden,
    ImportFailed,
    NotFound,
    PayloadTooLarge,
    StoreBusy,
    StoreError,
    ValidationFailed,
)

# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[CadenzaError], int], ...] = (
    (PayloadTooLarge, 400),  # Segment's spec answers oversized payloads with 400
    (ValidationFailed, 400),
    (ImportFailed, 400),
    (AuthError, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (StoreBusy, 503),
    (StoreError, 500),
)


def status_for(error: CadenzaError) -> int:
    """The HTTP status of an error."""
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def error_body(request: Request, error: dict[str, Any]) -> dict[str, Any]:
    """The JSON error body: `{"success": false, "error": {...}}`.

    Under /v1 the error's `code` and `message` are repeated at the top level: the Segment and
    RudderStack libraries read `payload["code"]` and `payload["message"]` to raise their
    APIError (which tells them a 4xx must not be retried); without them RudderStack's raises
    KeyError and retries a rejected batch with backoff.
    """
    body: dict[str, Any] = {"success": False, "error": error}
    if request.url.path.startswith("/v1/"):
        body = {"success": False, "code": error["code"], "message": error["message"],
                "error": error}
    return body


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(CadenzaError)
    async def _cadenza(request: Request, exc: CadenzaError) -> JSON:
        status = status_for(exc)
        headers = {"WWW-Authenticate": 'Basic realm="cadenza"'} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": "1"}
        return JSON(error_body(request, exc.to_dict()), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, exc: RequestValidationError) -> JSON:
        errors = [
            {"field": _loc(tuple(e["loc"])), "reason": e["msg"]} for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "reason": "invalid request"}
        return JSON(
            error_body(request, {"code": ValidationFailed.code,
                                 "message": f"{first['field']}: {first['reason']}",
                                 **first, "errors": errors}),
            status_code=400,
        )
