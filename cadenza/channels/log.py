"""The `log` channel: records the rendered message through `logging` and succeeds.

For trying journeys out, demos and tests: nothing leaves the machine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cadenza.channels.base import ChannelDeps, ChannelSpec, NoBatchState, check_known, check_text
from cadenza.channels.models import Message, SendResult

logger = logging.getLogger("cadenza.channels.log")
_KNOWN = frozenset({"subject", "body"})


def check_params(params: Mapping[str, Any], where: str) -> None:
    """Optional inline `subject` and `body`."""
    check_known(params, where, _KNOWN)
    check_text(params, where, "subject")
    check_text(params, where, "body")


class LogChannel(NoBatchState):
    """Writes each message to the `cadenza.channels.log` logger at INFO."""

    name = "log"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = False
    address_kind: str | None = None

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    async def send(self, message: Message) -> SendResult:
        """Log the message; always succeeds."""
        logger.info("message %s to contact %d (journey %s, step %s): %s", message.key,
                    message.contact.id, message.journey, message.step, dict(message.content),
                    extra={"cadenza_key": message.key, "cadenza_contact": message.contact.id})
        return SendResult(provider_ref=f"log:{message.outbox_id}")


def create(_deps: ChannelDeps) -> LogChannel:
    """A log channel."""
    return LogChannel()


SPEC = ChannelSpec("log", check_params, create)
