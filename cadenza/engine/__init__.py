"""The engine: durable, set-oriented execution of journeys (enrollments, timers, events,
outbox, leases), driven by an injected clock."""

from cadenza.engine.batch import PARTITIONS, partition
from cadenza.engine.leases import LeaseLost
from cadenza.engine.listeners import Job, Listener, claim_job, listeners_from_settings, run_due_jobs
from cadenza.engine.runner import EngineRunner, run_worker
from cadenza.engine.stats import contact_journeys, journey_stats, shadow_report
from cadenza.engine.worker import Engine, PassReport

__all__ = ["PARTITIONS", "Engine", "EngineRunner", "Job", "LeaseLost", "Listener", "PassReport",
           "claim_job", "contact_journeys", "journey_stats", "listeners_from_settings",
           "partition", "run_due_jobs", "run_worker", "shadow_report"]
