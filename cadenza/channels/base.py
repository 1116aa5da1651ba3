"""The channel protocol: what a channel module provides, and helpers for checking params.

A channel is one module exporting `SPEC`, a `ChannelSpec` with its name, a publish-time
`check_params` that needs no connection, and `create(deps)` that builds the live channel.
Adding a channel is that module plus one line in `registry.py`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import SmtpOptions, WebhookOptions
from cadenza.clock import Clock
from cadenza.errors import ValidationFailed
from cadenza.store import Store

CheckParams = Callable[[Mapping[str, Any], str], None]


class Channel(Protocol):
    """A live channel: sends rendered messages and says whether a failure may be retried."""

    name: str
    text_fields: tuple[str, ...]
    """Parameters rendered as templates when given inline (e.g. subject, body, title)."""
    address_kind: str | None
    """'email' or 'phone' when messages go to such an address of the contact."""
    record_each: bool
    """The receiver cannot drop a repeat (SMTP has no idempotency key): the dispatcher records
    each accepted message at once, so a crash repeats at most the one in flight."""

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """Raise ValidationFailed naming `where` and the parameter when `params` are wrong."""
        ...

    async def send(self, message: Message) -> SendResult:
        """Deliver `message`; raise ChannelError (with `retryable`) when it was not."""
        ...

    async def end_batch(self) -> None:
        """Release what one dispatch batch held (an SMTP connection)."""
        ...

    async def close(self) -> None:
        """Release everything (HTTP client pools); the channel is not used again."""
        ...


@dataclass(frozen=True)
class ChannelDeps:
    """What a channel may need to be built: the store and clock, and provider options."""

    store: Store
    clock: Clock
    smtp: SmtpOptions = field(default_factory=SmtpOptions)
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    settings: Any = None
    """The process's `Settings`, for channels that read their own provider settings (None in
    tests that build channels from options)."""


@dataclass(frozen=True)
class ChannelSpec:
    """A channel kind as the registry knows it."""

    name: str
    check_params: CheckParams
    create: Callable[[ChannelDeps], Channel]


class NoBatchState:
    """Mixin for channels that hold nothing between messages."""

    async def end_batch(self) -> None:
        """Nothing to release."""

    async def close(self) -> None:
        """Nothing to release."""


def param_path(where: str, name: str) -> str:
    """The dotted field name of parameter `name` under `where`."""
    return f"{where}.{name}" if where else name


def check_text(params: Mapping[str, Any], where: str, name: str, *, required: bool = False,
               max_length: int = 256 * 1024) -> None:
    """`params[name]` is a string (a template source) of sensible length."""
    value = params.get(name)
    if value is None:
        if required:
            raise ValidationFailed(param_path(where, name), "is required")
        return
    if not isinstance(value, str):
        raise ValidationFailed(param_path(where, name),
                               f"must be text, got {type(value).__name__}")
    if len(value) > max_length:
        raise ValidationFailed(param_path(where, name),
                               f"is {len(value)} characters; the limit is {max_length}")


COMMON_PARAMS = frozenset({"purpose"})
"""Parameters every channel accepts: `purpose` names the consent purpose (issue 5 checks it)."""


def check_known(params: Mapping[str, Any], where: str, known: frozenset[str]) -> None:
    """Every key of `params` is one the channel reads (a typo is an error, not ignored)."""
    known = known | COMMON_PARAMS
    for name in params:
        if name in known:
            continue
        close = difflib.get_close_matches(str(name), sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (
            f"; known: {', '.join(sorted(known))}" if known else "")
        raise ValidationFailed(param_path(where, str(name)),
                               f"is not a parameter of this channel{hint}")
