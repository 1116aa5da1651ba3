"""Routing of qualified leads to sales reps: the periodic jobs.

The parts: `reps` (who), `routing_rules` (which pool, which strategy, which SLA),
`routing_assign` (assigning a batch, with the hand-off task and events), `routing_sla`
(first touch, the SLA job with escalation and reassignment) and `routing_service` (the use
cases the API and the CLI call).
"""

from __future__ import annotations

from typing import Any

from cadenza.leads.routing_sla import sla_jobs


def routing_jobs(settings: Any) -> list[Any]:
    """SLA checks: escalation and reassignment when first touch is late."""
    return list(sla_jobs(settings))
