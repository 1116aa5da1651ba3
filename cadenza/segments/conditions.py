"""The condition language, evaluated in Python over facts loaded for a whole batch.

INTERFACE STUB — being completed (parse, evaluation, fact loading).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Needs:
    """What a set of conditions needs loaded to be evaluated."""

    attributes: bool = False
    tags: bool = False
    counts: frozenset[tuple[str, int]] = frozenset()
    """(event name, window in ms) pairs whose per-contact counts are needed."""
    consents: frozenset[tuple[str, str]] = frozenset()
    """(channel, purpose) pairs whose status is needed."""

    def __or__(self, other: Needs) -> Needs:
        return Needs(self.attributes or other.attributes, self.tags or other.tags,
                     self.counts | other.counts, self.consents | other.consents)


@dataclass
class Facts:
    """What a condition may look at for one contact."""

    contact_id: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    entry: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    consents: Mapping[tuple[str, str], str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()


class Condition:
    """Base of every condition node."""

    def needs(self) -> Needs:
        """What must be loaded to evaluate this condition."""
        raise NotImplementedError

    def evaluate(self, facts: Facts, seen: dict[str, Any] | None = None) -> bool:
        """Whether the condition holds; record the values looked at in `seen`."""
        raise NotImplementedError


def parse_condition(value: Any, where: str, attributes: Sequence[str] | None = None) -> Condition:
    """Parse a condition from its JSON form (see docs/conditions.md)."""
    raise NotImplementedError


def load_facts(conn: Connection, contact_ids: Sequence[int], needs: Needs,
               now_ms: int) -> dict[int, Facts]:
    """Facts for every contact in `contact_ids`: one statement per kind of need."""
    raise NotImplementedError
