"""The Segment HTTP Tracking API spec: message shapes, limits and timestamp correction.

Each message of a batch is validated on its own so that one bad message never costs the others.
Limits follow the spec: 32 KB per message, 500 KB per batch request; a message needs a
`userId` or an `anonymousId`; `track` needs `event`; `alias` needs `previousId` and `userId`;
`group` needs `groupId`. When `sentAt` is given, the event time is corrected for the client's
clock skew: `timestamp = receivedAt - (sentAt - timestamp)`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cadenza.clock import iso_to_ms

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

Id = Annotated[str, Field(min_length=1, max_length=256)]


def _stringify_id(value: Any) -> Any:
    # Client libraries may send numeric ids; Segment treats them as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class _Message(BaseModel):
    """Fields every call shares."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)

    type: str | None = None
    messageId: Id | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    timestamp: dt.datetime | None = None
    originalTimestamp: dt.datetime | None = None
    sentAt: dt.datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)

    _ids = field_validator("userId", "anonymousId", mode="before")(_stringify_id)


class IdentifyMessage(_Message):
    """`identify`: who the user is, with traits."""

    type: Literal["identify"] | None = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class TrackMessage(_Message):
    """`track`: something the user did."""

    type: Literal["track"] | None = "track"
    event: Annotated[str, Field(min_length=1, max_length=256)]
    properties: dict[str, Any] = Field(default_factory=dict)


class PageMessage(_Message):
    """`page`: a web page view."""

    type: Literal["page"] | None = "page"
    name: Annotated[str, Field(max_length=256)] | None = None
    category: Annotated[str, Field(max_length=256)] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class ScreenMessage(_Message):
    """`screen`: a mobile screen view."""

    type: Literal["screen"] | None = "screen"
    name: Annotated[str, Field(max_length=256)] | None = None
    category: Annotated[str, Field(max_length=256)] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class GroupMessage(_Message):
    """`group`: the user belongs to a company (account)."""

    type: Literal["group"] | None = "group"
    groupId: Id
    traits: dict[str, Any] = Field(default_factory=dict)

    _group = field_validator("groupId", mode="before")(_stringify_id)


class AliasMessage(_Message):
    """`alias`: `previousId` and `userId` are the same person."""

    type: Literal["alias"] | None = "alias"
    previousId: Id
    userId: Id

    _previous = field_validator("previousId", mode="before")(_stringify_id)


class BatchRequest(BaseModel):
    """`batch`: up to 500 KB of messages, each with its own `type`."""

    model_config = ConfigDict(extra="allow")

    batch: list[dict[str, Any]]
    sentAt: dt.datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    writeKey: str | None = None


MODELS: dict[str, type[_Message]] = {
    "identify": IdentifyMessage,
    "track": TrackMessage,
    "page": PageMessage,
    "screen": ScreenMessage,
    "group": GroupMessage,
    "alias": AliasMessage,
}


@dataclass(slots=True)
class Message:
    """A validated message, ready to be stored."""

    index: int
    type: str
    message_id: str
    name: str
    timestamp: int
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why message `index` of a request was not stored."""

    index: int
    field: str
    reason: str
    message_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for API responses."""
        return {"index": self.index, "messageId": self.message_id, "field": self.field,
                "reason": self.reason}


class _Bad(Exception):
    """A field of a message is invalid (internal to `parse`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _id(raw: dict[str, Any], name: str, *, numbers: bool = True) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(name, f"must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= 256:
        raise _Bad(name, "must be 1 to 256 characters long")
    return value


def _text(raw: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise _Bad(name, "is required")
        return None
    if not isinstance(value, str):
        raise _Bad(name, f"must be a string, got {type(value).__name__}")
    if len(value) > 256 or (required and not value):
        raise _Bad(name, "must be 1 to 256 characters long")
    return value


def _object(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(name, f"must be a JSON object, got {type(value).__name__}")
    return value


def _time(raw: dict[str, Any], name: str) -> int | None:
    """Epoch ms from an ISO 8601 string (or a Unix time in seconds or milliseconds)."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        ms = iso_to_ms(value)
        if ms is None:
            raise _Bad(name, f"{value[:40]!r} is not an ISO 8601 time such as "
                       "2026-05-01T09:30:00.000Z")
        return ms
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Like pydantic: numbers above 2e10 are milliseconds, below are seconds.
        return int(value if abs(value) > 2e10 else value * 1000)
    raise _Bad(name, f"must be an ISO 8601 string, got {type(value).__name__}")


def nul_path(value: Any, path: str) -> str | None:
    """Where the first NUL character is in `value` (PostgreSQL stores none, in text or jsonb)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path
            found = nul_path(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for number, item in enumerate(value):
            found = nul_path(item, f"{path}[{number}]")
            if found is not None:
                return found
    return None


def parse(
    raw: Any,
    index: int,
    *,
    received_at: int,
    implied_type: str | None = None,
    batch_sent_at: int | None = None,
    batch_context: dict[str, Any] | None = None,
    encoded_size: int | None = None,
) -> Message | Rejection:
    """Validate one raw message and correct its timestamp; never raises on bad input.

    Hand-written rather than pydantic on this path: it runs for every event (100,000+/s) and
    is several times faster. The pydantic models above describe the same shapes for the API
    docs; tests check that both agree.
    """
    if not isinstance(raw, dict):
        return Rejection(index, "", f"must be a JSON object, got {type(raw).__name__}")
    message_id = raw.get("messageId") if isinstance(raw.get("messageId"), str) else None
    encoded: bytes | None = None
    if encoded_size is not None:
        size = encoded_size
    else:
        try:
            encoded = orjson.dumps(raw)
            size = len(encoded)
        except (TypeError, orjson.JSONEncodeError) as exc:
            return Rejection(index, "", f"is not JSON-encodable ({exc}); numbers must fit in "
                             "64 bits", message_id)
    if size > MAX_MESSAGE_BYTES:
        return Rejection(index, "", f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} "
                         "bytes (32 KB) per message", message_id)
    kind = implied_type or raw.get("type")
    if not isinstance(kind, str) or kind not in MODELS:
        return Rejection(index, "type", f"must be one of {', '.join(MESSAGE_TYPES)}, "
                         f"got {kind!r}", message_id)
    if implied_type and raw.get("type") not in (None, implied_type):
        return Rejection(index, "type", f"is {raw.get('type')!r} but this endpoint takes "
                         f"{implied_type!r}", message_id)
    # orjson writes a NUL as the escape \u0000: without it in the bytes there is nothing to find.
    nul = nul_path(raw, "") if encoded is None or b"\\u0000" in encoded else None
    if nul is not None:
        return Rejection(index, nul, "contains a NUL character (\\u0000), which cannot be "
                         "stored; remove it", message_id)
    try:
        message = _build(raw, kind, index, received_at, batch_sent_at, batch_context)
    except _Bad as bad:
        return Rejection(index, bad.field, bad.reason, message_id)
    return message


def _build(raw: dict[str, Any], kind: str, index: int, received_at: int,
           batch_sent_at: int | None, batch_context: dict[str, Any] | None) -> Message:
    message_id = _id(raw, "messageId", numbers=False)
    user_id = _id(raw, "userId")
    anonymous_id = _id(raw, "anonymousId")
    if kind == "alias":
        if user_id is None:
            raise _Bad("userId", "is required for alias")
    elif user_id is None and anonymous_id is None:
        raise _Bad("userId", "a userId or an anonymousId is required")
    context = _object(raw, "context")
    _object(raw, "integrations")
    if batch_context and not context:
        context = batch_context
    sent = _time(raw, "sentAt")
    if sent is None:
        sent = batch_sent_at
    stamp = _time(raw, "timestamp")
    if stamp is None:
        stamp = _time(raw, "originalTimestamp")
    if stamp is None:
        timestamp = received_at
    elif sent is not None:
        timestamp = received_at - (sent - stamp)
    else:
        timestamp = stamp
    message = Message(index=index, type=kind,
                      message_id=message_id or f"cadenza-{uuid.uuid4()}", name=kind,
                      timestamp=timestamp, user_id=user_id, anonymous_id=anonymous_id,
                      context=context)
    if kind == "track":
        message.name = _text(raw, "event", required=True) or kind
        message.properties = _object(raw, "properties")
    elif kind in ("page", "screen"):
        message.name = _text(raw, "name") or kind
        properties = _object(raw, "properties")
        category = _text(raw, "category")
        message.properties = {**properties, "category": category} if category else properties
    elif kind == "identify":
        # RudderStack's SDKs send identify traits only in `context.traits` (the spec allows
        # traits there too); top-level traits win where both name the same trait.
        context_traits = context.get("traits")
        if context_traits is None:
            context_traits = {}
        elif not isinstance(context_traits, dict):
            raise _Bad("context.traits", "must be a JSON object, got "
                       f"{type(context_traits).__name__}")
        message.traits = {**context_traits, **_object(raw, "traits")}
    elif kind == "group":
        group_id = _id(raw, "groupId")
        if group_id is None:
            raise _Bad("groupId", "is required for group")
        message.group_id = group_id
        message.traits = _object(raw, "traits")
    else:
        previous = _id(raw, "previousId")
        if previous is None:
            raise _Bad("previousId", "is required for alias")
        message.previous_id = previous
    return message
