"""Routing of qualified leads to sales reps (filled by issue 6)."""

from __future__ import annotations

from typing import Any


def routing_jobs(settings: Any) -> list[Any]:
    """SLA checks: escalation and reassignment when first touch is late."""
    return []
