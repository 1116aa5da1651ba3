"""Per-message links: the seam between the dispatcher and tracking/unsubscribe.

The dispatcher asks a `LinkBuilder` for a message's signed URLs before rendering (templates
see them as `links` and `unsubscribe_url`; the email channel puts them in `List-Unsubscribe`)
and lets it decorate the rendered content afterwards (click-tracking redirects, the open
pixel). `NoLinks` builds nothing and changes nothing: a dispatcher without a public URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class MessageRef:
    """What a link may name: the outbox row, its contact, channel and consent purpose."""

    outbox_id: int
    contact_id: int
    channel: str
    purpose: str
    shadow: bool = False


class LinkBuilder(Protocol):
    """Builds a message's signed links and decorates its rendered content."""

    def links(self, ref: MessageRef) -> dict[str, str]:
        """Signed URLs by name: unsubscribe, one_click, preferences (any may be absent)."""
        ...

    def decorate(self, ref: MessageRef, content: Mapping[str, Any]) -> dict[str, Any]:
        """The rendered content with tracking applied (a copy; the input is not changed)."""
        ...


class NoLinks:
    """No links and no tracking."""

    def links(self, ref: MessageRef) -> dict[str, str]:
        """None."""
        return {}

    def decorate(self, ref: MessageRef, content: Mapping[str, Any]) -> dict[str, Any]:
        """Unchanged."""
        return dict(content)
