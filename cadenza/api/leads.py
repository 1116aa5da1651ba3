"""/api/leads: lifecycle stages, a contact's stage, sales reps, routing rules, routing,
assignments and first touch. Each route parses, calls `LifecycleService` or
`RoutingService`, renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.leads import LifecycleService, RoutingOptions, RoutingService

router = APIRouter(prefix="/api/leads")

MAX_ID = 2**62
StageKey = Annotated[str, Path(min_length=1, max_length=64, examples=["mql"])]
RepKey = Annotated[str, Path(min_length=1, max_length=128, examples=["ann"])]
RuleKey = Annotated[str, Path(min_length=1, max_length=128, examples=["emea-enterprise"])]
ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]
AssignmentId = Annotated[int, Path(ge=1, le=MAX_ID)]
_STAGES_EXAMPLE = {"stages": [
    {"key": "subscriber", "name": "Subscriber"}, {"key": "lead", "name": "Lead"},
    {"key": "mql", "name": "Marketing qualified lead", "route": True,
     "rules": [{"name": "fit", "when": {"score": "fit", "gte": 60}},
               {"name": "demo", "when": {"count": "Demo Requested", "gte": 1}}]},
    {"key": "customer", "name": "Customer",
     "rules": [{"when": {"count": "Order Completed", "gte": 1}}]}]}
_REP_EXAMPLE = {"name": "Ann Lee", "email": "ann@example.com", "weight": 2, "capacity": 40,
                "attributes": {"territory": "DE", "team": "enterprise"}}
_RULE_EXAMPLE = {"when": {"attr": "country", "in": ["DE", "AT", "CH"]},
                 "pool": {"match": {"territory": "country"}}, "strategy": "round_robin",
                 "sla": "4h", "escalation": {"queue": "sales-managers"}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageMove(_Body):
    """A manual move to a stage."""

    stage: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=1000, description="Why (kept in history)")


class BulkStageMove(StageMove):
    """A manual move of several contacts."""

    contact_ids: list[int] = Field(min_length=1, max_length=10_000)


class Rename(_Body):
    """A stage's new key."""

    to: str = Field(min_length=1, max_length=64)


class Away(_Body):
    """When an away rep is back (none: until marked back)."""

    until: int | None = Field(default=None, ge=0, description="epoch milliseconds")


class RouteBody(_Body):
    """Contacts, or a segment, to route now."""

    contact_ids: list[int] = Field(default_factory=list, max_length=50_000)
    segment: str | None = Field(default=None, min_length=1, max_length=128)


class TouchBody(_Body):
    """A first touch."""

    note: str | None = Field(default=None, max_length=1000)


def _lifecycle(ctx: Ctx) -> LifecycleService:
    return LifecycleService(ctx.store, ctx.clock, RoutingOptions.from_settings(ctx.settings))


def _routing(ctx: Ctx) -> RoutingService:
    return RoutingService(ctx.store, ctx.clock, RoutingOptions.from_settings(ctx.settings))


def _moves(moves: list[Any]) -> JSON:
    return JSON({"moved": [{"contact_id": m.contact_id, "from": m.from_stage,
                            "to": m.to_stage} for m in moves]})


# --- stages ----------------------------------------------------------------------------------


@router.get("/stages", response_class=JSON, tags=["leads"])
def get_stages(ctx: Ctx, _key: AdminKey) -> JSON:
    """The lifecycle stages in order, their rules and how many contacts each holds."""
    return JSON(_lifecycle(ctx).stages())


@router.put("/stages", response_class=JSON, tags=["leads"])
def put_stages(ctx: Ctx, _key: AdminKey,
               document: Annotated[dict[str, Any], Body(examples=[_STAGES_EXAMPLE])]) -> JSON:
    """Replace the stages: add, rename (names), reorder, remove unused; a bad field is
    refused with its path, e.g. `stages[2].rules[0].when`."""
    _lifecycle(ctx).set_stages(document)
    return JSON(_lifecycle(ctx).stages())


@router.post("/stages/{key}/rename", response_class=JSON, tags=["leads"])
def rename_stage(ctx: Ctx, _key: AdminKey, key: StageKey, body: Rename) -> JSON:
    """Change a stage's key; its contacts move with it."""
    _lifecycle(ctx).rename(key, body.to)
    return JSON(_lifecycle(ctx).stages())


@router.post("/stages/apply", response_class=JSON, tags=["leads"])
def apply_stages(ctx: Ctx, _key: AdminKey) -> JSON:
    """Apply the transition rules to every contact now (set-wise, in chunks)."""
    return JSON(_lifecycle(ctx).apply())


@router.post("/stages/set", response_class=JSON, tags=["leads"])
def set_stages_of(ctx: Ctx, _key: AdminKey, body: BulkStageMove) -> JSON:
    """Move contacts to a stage by hand (any direction), with a reason."""
    return _moves(_lifecycle(ctx).set_stage(body.contact_ids, body.stage, body.reason))


@router.get("/contacts/{contact_id}", response_class=JSON, tags=["leads"])
def contact_stage(ctx: Ctx, _key: AdminKey, contact_id: ContactId) -> JSON:
    """A contact's stage, since when, its stage history and its assignments."""
    shown = _lifecycle(ctx).contact(contact_id)
    shown["assignments"] = _routing(ctx).assignments(contact_id=contact_id).items
    return JSON(shown)


@router.put("/contacts/{contact_id}/stage", response_class=JSON, tags=["leads"])
def set_contact_stage(ctx: Ctx, _key: AdminKey, contact_id: ContactId, body: StageMove) -> JSON:
    """Move one contact to a stage by hand, with a reason."""
    return _moves(_lifecycle(ctx).set_stage([contact_id], body.stage, body.reason))


# --- reps ------------------------------------------------------------------------------------


@router.get("/reps", response_class=JSON, tags=["leads"])
def list_reps(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every sales rep with its open assignments."""
    return JSON({"items": _routing(ctx).reps()})


@router.get("/reps/{key}", response_class=JSON, tags=["leads"])
def get_rep(ctx: Ctx, _key: AdminKey, key: RepKey) -> JSON:
    """One rep."""
    return JSON(_routing(ctx).rep(key))


@router.put("/reps/{key}", response_class=JSON, tags=["leads"])
def put_rep(ctx: Ctx, _key: AdminKey, key: RepKey,
            document: Annotated[dict[str, Any], Body(examples=[_REP_EXAMPLE])]) -> JSON:
    """Create (201) or update (200; the fields given) a rep."""
    service = _routing(ctx)
    _, created = service.save_rep(key, document)
    return JSON(service.rep(key), status_code=201 if created else 200)


@router.delete("/reps/{key}", response_class=JSON, tags=["leads"])
def delete_rep(ctx: Ctx, _key: AdminKey, key: RepKey) -> JSON:
    """Remove a rep that never had a lead (otherwise mark it inactive)."""
    _routing(ctx).delete_rep(key)
    return JSON({"key": key, "deleted": True})


@router.post("/reps/{key}/away", response_class=JSON, tags=["leads"])
def rep_away(ctx: Ctx, _key: AdminKey, key: RepKey, body: Away) -> JSON:
    """Mark a rep away (until a time, or until marked back): routing skips them."""
    service = _routing(ctx)
    service.set_availability(key, "away", body.until)
    return JSON(service.rep(key))


@router.post("/reps/{key}/back", response_class=JSON, tags=["leads"])
def rep_back(ctx: Ctx, _key: AdminKey, key: RepKey) -> JSON:
    """Mark a rep active again."""
    service = _routing(ctx)
    service.set_availability(key, "active")
    return JSON(service.rep(key))


# --- rules -----------------------------------------------------------------------------------


@router.get("/rules", response_class=JSON, tags=["leads"])
def list_rules(ctx: Ctx, _key: AdminKey) -> JSON:
    """Routing rules in the order they are tried (first match wins)."""
    return JSON({"items": [r.to_dict() for r in _routing(ctx).rules()]})


@router.get("/rules/{key}", response_class=JSON, tags=["leads"])
def get_rule(ctx: Ctx, _key: AdminKey, key: RuleKey) -> JSON:
    """One routing rule."""
    return JSON(_routing(ctx).rule(key).to_dict())


@router.put("/rules/{key}", response_class=JSON, tags=["leads"])
def put_rule(ctx: Ctx, _key: AdminKey, key: RuleKey,
             document: Annotated[dict[str, Any], Body(examples=[_RULE_EXAMPLE])]) -> JSON:
    """Create (201) or replace (200) a rule; `position` places it (default: last)."""
    rule, created = _routing(ctx).save_rule(key, document)
    return JSON(rule.to_dict(), status_code=201 if created else 200)


@router.post("/rules/{key}/validate", response_class=JSON, tags=["leads"])
def validate_rule(ctx: Ctx, _key: AdminKey, key: RuleKey,
                  document: Annotated[dict[str, Any], Body(examples=[_RULE_EXAMPLE])]) -> JSON:
    """Check a rule as saving would, without saving it."""
    return JSON({"valid": True, "rule": _routing(ctx).validate_rule(key, document).to_dict()})


@router.delete("/rules/{key}", response_class=JSON, tags=["leads"])
def delete_rule(ctx: Ctx, _key: AdminKey, key: RuleKey) -> JSON:
    """Remove a rule."""
    _routing(ctx).delete_rule(key)
    return JSON({"key": key, "deleted": True})


# --- routing and assignments ---------------------------------------------------------------


@router.post("/route", response_class=JSON, tags=["leads"])
def route(ctx: Ctx, _key: AdminKey, body: RouteBody) -> JSON:
    """Route contacts (or a segment's members) now; contacts already assigned are left
    alone."""
    return JSON(_routing(ctx).route(body.contact_ids, body.segment).to_dict())


@router.get("/assignments", response_class=JSON, tags=["leads"])
def list_assignments(
    ctx: Ctx, _key: AdminKey,
    rep: Annotated[str | None, Query(max_length=128, description="a rep's queue")] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    sla: Annotated[str | None, Query(max_length=16,
                                     description="on_time, due_soon, lapsed, met, none")] = None,
    contact_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    """Assignments newest first, with their SLA state."""
    page = _routing(ctx).assignments(rep=rep, status=status, sla=sla, contact_id=contact_id,
                                     cursor=cursor, limit=limit)
    return JSON(page.to_dict())


@router.get("/assignments/{assignment_id}", response_class=JSON, tags=["leads"])
def get_assignment(ctx: Ctx, _key: AdminKey, assignment_id: AssignmentId) -> JSON:
    """One assignment."""
    return JSON(_routing(ctx).assignment(assignment_id))


@router.post("/assignments/{assignment_id}/touch", response_class=JSON, tags=["leads"])
def touch_assignment(ctx: Ctx, _key: AdminKey, assignment_id: AssignmentId,
                     body: TouchBody | None = None) -> JSON:
    """Record the first touch (a repeat changes nothing)."""
    shown, changed = _routing(ctx).touch(assignment_id, body.note if body else None)
    return JSON({**shown, "changed": changed})


@router.post("/assignments/{assignment_id}/close", response_class=JSON, tags=["leads"])
def close_assignment(ctx: Ctx, _key: AdminKey, assignment_id: AssignmentId) -> JSON:
    """Close an assignment (worked or given up)."""
    shown, changed = _routing(ctx).close(assignment_id)
    return JSON({**shown, "changed": changed})


@router.post("/sla/check", response_class=JSON, tags=["leads"])
def check_slas(ctx: Ctx, _key: AdminKey) -> JSON:
    """Run one SLA round now: escalate and reassign lapsed first touches."""
    return JSON(_routing(ctx).check_slas().to_dict())
