"""The leads domain's engine listeners and periodic jobs, gathered from its parts."""

from __future__ import annotations

from typing import Any

from cadenza.leads.lifecycle import lifecycle_listeners
from cadenza.leads.predictive import predictive_jobs
from cadenza.leads.routing import routing_jobs
from cadenza.leads.scoring import scoring_listeners


def lead_listeners(settings: Any) -> tuple[list[Any], list[Any]]:
    """Score and lifecycle listeners; decay, retraining and SLA jobs."""
    listeners: list[Any] = []
    jobs: list[Any] = []
    for found_listeners, found_jobs in (scoring_listeners(settings),
                                        lifecycle_listeners(settings)):
        listeners.extend(found_listeners)
        jobs.extend(found_jobs)
    jobs.extend(predictive_jobs(settings))
    jobs.extend(routing_jobs(settings))
    return listeners, jobs
