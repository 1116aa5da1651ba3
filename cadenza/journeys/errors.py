"""Errors of the journeys domain.

    CadenzaError
    └── ValidationFailed              input.invalid
        └── JourneyInvalid            journey.invalid     (journey, problems)

Illegal transitions (publishing an archived journey, changing a published version) raise
`cadenza.errors.Conflict`; unknown journeys and versions `cadenza.errors.NotFound`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cadenza.errors import ValidationFailed


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a journey definition."""

    step: str | None
    """The id of the step it is in; None for the journey's header (entry, goals, ...)."""
    field: str
    """Dotted path of the offending value: relative to the step when `step` is set, from
    the document's root otherwise; empty when the problem is the step as a whole."""
    reason: str
    """What is wrong and how to fix it."""

    def describe(self, journey: str | None = None) -> str:
        """One line: `journey 'j', step 's', goto: 'x' names no step (did you mean 'y'?)`."""
        name = f"journey {journey!r}" if journey else "the journey"
        located = self.located()
        return f"{name}, {located}" if self.step is not None or self.field \
            else f"{name}: {located}"

    def located(self) -> str:
        """The line without the journey: `step 's', goto: 'x' names no step`."""
        parts = [f"step {self.step!r}"] if self.step is not None else []
        if self.field:
            parts.append(self.field)
        return ", ".join(parts) + ": " + self.reason if parts else self.reason

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"step": self.step, "field": self.field, "reason": self.reason}


class JourneyInvalid(ValidationFailed):
    """A journey definition breaks one or more rules; `problems` lists every one found."""

    code = "journey.invalid"

    def __init__(self, journey: str | None, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("JourneyInvalid needs at least one problem")
        first = problems[0]
        path = ".".join(p for p in (f"steps.{first.step}" if first.step else "", first.field)
                        if p)
        super().__init__(path, first.reason)
        self.journey = journey
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            self.message = first.describe(journey)
        else:
            name = f"journey {journey!r}" if journey else "the journey"
            lines = [f"{name} has {len(self.problems)} problems:"]
            lines += [f"  - {p.located()}" for p in self.problems]
            self.message = "\n".join(lines)
        self.args = (self.message,)

    def context(self) -> dict[str, object]:
        return {"journey": self.journey, "field": self.field, "reason": self.reason,
                "problems": [p.to_dict() for p in self.problems]}
