"""Which channels exist: one line per channel module, and the live set a dispatcher uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from cadenza.channels import email, log, sms, task, webhook
from cadenza.channels.base import Channel, ChannelDeps, ChannelSpec
from cadenza.errors import ValidationFailed

_SPECS: dict[str, ChannelSpec] = {
    spec.name: spec
    for spec in (
        log.SPEC,
        webhook.SPEC,
        email.SPEC,
        task.SPEC,
        sms.SPEC,
    )
}


def channel_names() -> tuple[str, ...]:
    """The registered channel names, sorted."""
    return tuple(sorted(_SPECS))


def channel_spec(name: str, field: str = "channel") -> ChannelSpec:
    """The channel called `name`; ValidationFailed with a suggestion when there is none."""
    spec = _SPECS.get(name)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, list(_SPECS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; one of {', '.join(channel_names())}"
    raise ValidationFailed(field, f"{name!r} is not a channel{hint}")


def check_params(channel: str, params: Mapping[str, Any], where: str = "",
                 channel_field: str = "channel") -> None:
    """Publish-time check of a send step: the channel exists and `params` suit it.

    `where` prefixes parameter names in errors (e.g. "steps.welcome.params"); an unknown
    channel is reported under `channel_field`.
    """
    channel_spec(channel, channel_field).check_params(params, where)


class ChannelRegistry:
    """The live channels of one dispatcher, by name."""

    def __init__(self, channels: Iterable[Channel]) -> None:
        self._channels = {channel.name: channel for channel in channels}

    @classmethod
    def build(cls, deps: ChannelDeps, names: Iterable[str] | None = None) -> ChannelRegistry:
        """Every registered channel (or those in `names`) built from `deps`."""
        chosen = channel_names() if names is None else tuple(names)
        return cls(channel_spec(name).create(deps) for name in chosen)

    def get(self, name: str) -> Channel | None:
        """The live channel `name`, if this registry has it."""
        return self._channels.get(name)

    def names(self) -> tuple[str, ...]:
        """Names of the live channels."""
        return tuple(sorted(self._channels))

    async def end_batch(self) -> None:
        """Tell every channel that a dispatch batch is over."""
        for channel in self._channels.values():
            await channel.end_batch()

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close()
