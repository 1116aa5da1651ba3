"""Leads: scoring (rules and predictive), lifecycle stages, routing to sales reps, hand-off."""

from cadenza.leads.lifecycle import LifecycleListener
from cadenza.leads.lifecycle_moves import STAGE_EVENT
from cadenza.leads.lifecycle_service import LifecycleService
from cadenza.leads.predictive import ModelSpec, RetrainJob, parse_model
from cadenza.leads.predictive_queries import VersionRow
from cadenza.leads.predictive_service import PredictiveService, PromotionRefused
from cadenza.leads.routing_assign import ASSIGNED_EVENT, UNASSIGNED_EVENT, RoutingOptions
from cadenza.leads.routing_service import RoutingService
from cadenza.leads.routing_sla import SLA_EVENT, RoutingSlaJob
from cadenza.leads.score_queries import GRADE_EVENT, THRESHOLD_EVENT
from cadenza.leads.score_service import ScoreService
from cadenza.leads.wiring import lead_listeners

__all__ = [
    "ASSIGNED_EVENT",
    "GRADE_EVENT",
    "SLA_EVENT",
    "STAGE_EVENT",
    "THRESHOLD_EVENT",
    "UNASSIGNED_EVENT",
    "LifecycleListener",
    "LifecycleService",
    "ModelSpec",
    "PredictiveService",
    "PromotionRefused",
    "RetrainJob",
    "RoutingOptions",
    "RoutingService",
    "RoutingSlaJob",
    "ScoreService",
    "VersionRow",
    "lead_listeners",
    "parse_model",
]
