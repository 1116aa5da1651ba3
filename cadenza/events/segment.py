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
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

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
_ADAPTERS = {name: TypeAdapter(model) for name, model in MODELS.items()}


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


def _ms(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def _loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


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
    """Validate one raw message and correct its timestamp; never raises on bad input."""
    if not isinstance(raw, dict):
        return Rejection(index, "", f"must be a JSON object, got {type(raw).__name__}")
    message_id = raw.get("messageId") if isinstance(raw.get("messageId"), str) else None
    size = encoded_size if encoded_size is not None else len(orjson.dumps(raw))
    if size > MAX_MESSAGE_BYTES:
        return Rejection(index, "", f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES} "
                         "bytes (32 KB) per message", message_id)
    kind = implied_type or raw.get("type")
    if kind not in MODELS:
        return Rejection(index, "type", f"must be one of {', '.join(MESSAGE_TYPES)}, "
                         f"got {kind!r}", message_id)
    if implied_type and raw.get("type") not in (None, implied_type):
        return Rejection(index, "type", f"is {raw.get('type')!r} but this endpoint takes "
                         f"{implied_type!r}", message_id)
    try:
        msg = _ADAPTERS[kind].validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return Rejection(index, _loc(first["loc"]), first["msg"], message_id)
    if kind != "alias" and msg.userId is None and msg.anonymousId is None:
        return Rejection(index, "userId", "a userId or an anonymousId is required", message_id)
    context = msg.context
    if batch_context and not context:
        context = batch_context
    sent = _ms(msg.sentAt) if msg.sentAt else batch_sent_at
    stamp = msg.timestamp or msg.originalTimestamp
    if stamp is None:
        timestamp = received_at
    elif sent is not None:
        timestamp = received_at - (sent - _ms(stamp))
    else:
        timestamp = _ms(stamp)
    message = Message(
        index=index,
        type=kind,
        message_id=msg.messageId or f"cadenza-{uuid.uuid4()}",
        name=kind,
        timestamp=timestamp,
        user_id=msg.userId,
        anonymous_id=msg.anonymousId,
        context=context,
    )
    if isinstance(msg, TrackMessage):
        message.name = msg.event
        message.properties = msg.properties
    elif isinstance(msg, PageMessage | ScreenMessage):
        message.name = msg.name or kind
        message.properties = {**msg.properties, **({"category": msg.category}
                                                   if msg.category else {})}
    elif isinstance(msg, IdentifyMessage):
        message.traits = msg.traits
    elif isinstance(msg, GroupMessage):
        message.group_id = msg.groupId
        message.traits = msg.traits
    elif isinstance(msg, AliasMessage):
        message.previous_id = msg.previousId
    return message
