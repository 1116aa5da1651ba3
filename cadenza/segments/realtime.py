"""Real-time segment membership: a listener on the engine's passes (filled by issue 6)."""

from __future__ import annotations

from typing import Any


def segment_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """The segments domain's engine listeners and periodic jobs."""
    return [], []
