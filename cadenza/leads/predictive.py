"""Predictive lead scoring (filled by issue 6)."""

from __future__ import annotations

from typing import Any


def predictive_jobs(settings: Any) -> list[Any]:
    """Scheduled retraining and rescoring."""
    return []
