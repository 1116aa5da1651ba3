"""Lifecycle stages (filled by issue 6)."""

from __future__ import annotations

from typing import Any


def lifecycle_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """Lifecycle listeners (transition rules on changed contacts) and jobs."""
    return [], []
