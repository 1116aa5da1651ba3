"""Errors of the delivery path: channels, templates and the outbox.

    CadenzaError (cadenza.errors)
    ├── ChannelError                  channel.failed       (channel, reason, retryable)
    │   └── Undeliverable             channel.undeliverable  (never retried; row cancelled)
    └── ValidationFailed
        └── RenderFailed              template.render_failed (template, reason)

Whether a failed send may be tried again is a property of the error (`retryable`), decided
where the failure is understood: a channel knows that an SMTP 451 or an HTTP 503 is worth
another try and that an SMTP 550 or an HTTP 400 is not. The dispatcher only reads the flag.
"""

from __future__ import annotations

from cadenza.errors import CadenzaError, ValidationFailed


class ChannelError(CadenzaError):
    """A channel could not deliver a message; `retryable` says whether to try again later."""

    code = "channel.failed"

    def __init__(self, channel: str, reason: str, *, retryable: bool,
                 retry_after_ms: int | None = None) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        """Epoch ms before which the receiver asked not to be tried again (HTTP 429
        `Retry-After`, an SMTP 421/454 pause), None when it did not say."""

    def context(self) -> dict[str, object]:
        return {"channel": self.channel, "reason": self.reason, "retryable": self.retryable}


class Undeliverable(ChannelError):
    """The message can never reach this contact (no address for the channel): the outbox row
    is cancelled rather than dead-lettered, since a replay could not succeed either."""

    code = "channel.undeliverable"

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(channel, reason, retryable=False)


class RenderFailed(ValidationFailed):
    """A template (stored or inline) failed to compile or render: a syntax error, an
    undefined variable, an unsafe attribute, or output over the size cap."""

    code = "template.render_failed"

    def __init__(self, template: str, reason: str) -> None:
        ValidationFailed.__init__(self, "template", reason)
        self.message = f"template {template!r}: {reason}"
        self.args = (self.message,)
        self.template = template

    def context(self) -> dict[str, object]:
        return {"field": self.field, "template": self.template, "reason": self.reason}
