"""Journeys and their versions as the service hands them out (rows, not specs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

JourneyStatus = Literal["draft", "live", "paused", "archived"]
"""draft: never published; live: new entries go to the live version; paused: no new
entries and no steps run; archived: ended for good (its enrollments were exited)."""

VersionStatus = Literal["draft", "published"]
"""A draft can be replaced; a published version never changes again."""

ACTIVE_ENROLLMENT = ("ready", "waiting")
"""Statuses of enrollments still in a journey."""


@dataclass(frozen=True)
class Journey:
    """A journey: its key, status, and which versions are live, in shadow and in draft."""

    id: int
    key: str
    name: str
    status: JourneyStatus
    live_version_id: int | None
    shadow_version_id: int | None
    live_version: int | None
    """Number of the live version."""
    shadow_version: int | None
    """Number of the version running in shadow."""
    draft_version: int | None
    """Number of the open draft, if any."""
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "key": self.key, "name": self.name, "status": self.status,
                "live_version": self.live_version, "shadow_version": self.shadow_version,
                "draft_version": self.draft_version, "live_version_id": self.live_version_id,
                "shadow_version_id": self.shadow_version_id, "created_at": self.created_at,
                "updated_at": self.updated_at}


@dataclass(frozen=True)
class JourneyVersion:
    """One version of a journey's definition."""

    id: int
    journey_id: int
    key: str
    number: int
    status: VersionStatus
    definition: Mapping[str, Any]
    content_hash: str | None
    """sha256 of the canonical definition; set when published."""
    created_at: int
    published_at: int | None
    live: bool = False
    """It is the journey's live version."""
    shadow: bool = False
    """It runs in shadow."""

    def to_dict(self, definition: bool = True) -> dict[str, Any]:
        """JSON-ready form (with the definition unless told otherwise)."""
        data: dict[str, Any] = {
            "id": self.id, "journey": self.key, "number": self.number, "status": self.status,
            "content_hash": self.content_hash, "created_at": self.created_at,
            "published_at": self.published_at, "live": self.live, "shadow": self.shadow}
        if definition:
            data["definition"] = dict(self.definition)
        return data
