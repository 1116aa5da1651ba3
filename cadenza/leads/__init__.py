"""Leads: scoring (rules and predictive), lifecycle stages, routing to sales reps, hand-off."""

from cadenza.leads.wiring import lead_listeners

__all__ = ["lead_listeners"]
