"""The engine: durable, set-oriented execution of journeys (enrollments, timers, events,
outbox, leases), driven by an injected clock."""

from cadenza.engine.batch import PARTITIONS, partition
from cadenza.engine.leases import LeaseLost
from cadenza.engine.worker import Engine, PassReport

__all__ = ["PARTITIONS", "Engine", "LeaseLost", "PassReport", "partition"]
