"""Segments: the condition language (one definition, evaluated for one contact in Python and,
with the segments issue, compiled to SQL for whole sets)."""

from cadenza.segments.conditions import MAX_DEPTH, MAX_ITEMS, parse_condition
from cadenza.segments.durations import MAX_DURATION_MS, format_duration, parse_duration
from cadenza.segments.facts import BUILTIN_ATTRIBUTES, Facts, Needs, load_facts
from cadenza.segments.nodes import (
    CONSENT_STATUSES,
    COUNT_OPERATORS,
    OPERATORS,
    AllOf,
    AnyOf,
    AttributeCondition,
    Condition,
    ConsentCondition,
    CountCondition,
    EventPropertyCondition,
    Not,
    PropertyCondition,
    TagCondition,
)
from cadenza.segments.realtime import segment_listeners

__all__ = [
    "BUILTIN_ATTRIBUTES",
    "CONSENT_STATUSES",
    "COUNT_OPERATORS",
    "MAX_DEPTH",
    "MAX_DURATION_MS",
    "MAX_ITEMS",
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "AttributeCondition",
    "Condition",
    "ConsentCondition",
    "CountCondition",
    "EventPropertyCondition",
    "Facts",
    "Needs",
    "Not",
    "PropertyCondition",
    "TagCondition",
    "format_duration",
    "load_facts",
    "parse_condition",
    "parse_duration",
    "segment_listeners",
]
