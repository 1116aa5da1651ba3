"""Rule-based lead scoring (filled by issue 6)."""

from __future__ import annotations

from typing import Any


def scoring_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """Score listeners (event points in real time) and jobs (decay)."""
    return [], []
