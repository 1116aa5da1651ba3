"""Segments: the condition language (one definition, evaluated for one contact in Python and,
with the segments issue, compiled to SQL for whole sets)."""

from cadenza.segments.conditions import Condition, Facts, Needs, load_facts, parse_condition

__all__ = ["Condition", "Facts", "Needs", "load_facts", "parse_condition"]
