"""Credentials: write keys as Segment sends them (HTTP Basic username), admin keys as Bearer."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from cadenza.api.context import AppContext, context
from cadenza.errors import AuthError
from cadenza.governance import ApiKey, KeyKind


def presented_key(request: Request) -> str:
    """The key in the Authorization header: Basic (username part) or Bearer."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("the Basic credentials are not valid base64 of 'key:'") from None
        return decoded.partition(":")[0]
    if scheme == "bearer":
        return value.strip()
    if header.strip():
        # Not echoed back: a key sent without a scheme would land in the error message.
        raise AuthError("the Authorization header must be 'Basic <base64 of key:>' (write "
                        "keys, as Segment libraries send them) or 'Bearer <key>'")
    return ""


def _require(kinds: tuple[KeyKind, ...]):  # type: ignore[no-untyped-def]
    def dependency(request: Request, ctx: Annotated[AppContext, Depends(context)]) -> ApiKey:
        key = ctx.keys.check(presented_key(request), kinds, ctx.clock.now_ms())
        request.state.api_key = key
        return key

    return dependency


require_admin = _require((KeyKind.ADMIN,))
AdminKey = Annotated[ApiKey, Depends(require_admin)]
Ctx = Annotated[AppContext, Depends(context)]
