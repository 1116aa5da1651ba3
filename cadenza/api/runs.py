"""Journeys at run time under /api: enroll through the API, statistics, a contact's journeys.

Parse, call the engine, render. Admin keys go in `Authorization: Bearer <key>`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.admin import ContactId
from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.engine import contact_journeys, journey_stats, shadow_report

router = APIRouter(prefix="/api", tags=["journeys"])

JourneyKey = Annotated[str, Path(min_length=1, max_length=128,
                                 pattern=r"^[a-z0-9][a-z0-9_-]{0,127}$")]


class EnrollBody(BaseModel):
    """Contacts to enroll through the journey's `api` entry trigger."""

    model_config = ConfigDict(extra="forbid")
    contact_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        min_length=1, max_length=10_000, description="Contacts to enroll (at most 10,000).")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Entry data the journey's steps and templates see "
        "as `entry`.")
    entry_key: str | None = Field(
        default=None, max_length=200, description="Enter each contact once per key: a retried "
        "request with the same key enrolls nobody twice.")


@router.post("/journeys/{key}/enroll", response_class=JSON)
def enroll(key: JourneyKey, body: EnrollBody, ctx: Ctx, _key: AdminKey) -> dict[str, Any]:
    """Enroll contacts now; the journey's entry rules (re-entry, one active) still apply."""
    created = ctx.engine.enroll(key, body.contact_ids, body.payload, body.entry_key)
    if ctx.runner is not None:
        ctx.runner.wake()
    return {"journey": key, "enrolled": len(created), "enrollment_ids": created,
            "skipped": len(set(body.contact_ids)) - len(created)}


@router.get("/journeys/{key}/stats", response_class=JSON)
def stats(key: JourneyKey, ctx: Ctx, _key: AdminKey) -> dict[str, Any]:
    """Per version: each step's entered/left/here, each edge, conversions, enrollments."""
    with ctx.store.read() as conn:
        return journey_stats(conn, key)


@router.get("/journeys/{key}/shadow-report", response_class=JSON)
def shadow(key: JourneyKey, ctx: Ctx, _key: AdminKey) -> dict[str, Any]:
    """The shadow version against the live one over the same entries: outcomes, messages
    and conversions, with rates per entry."""
    with ctx.store.read() as conn:
        return shadow_report(conn, key)


@router.get("/contacts/{contact_id}/journeys", response_class=JSON)
def journeys_of_contact(contact_id: ContactId, ctx: Ctx, _key: AdminKey) -> dict[str, Any]:
    """The contact's enrollments with every step taken and the values each decision saw."""
    with ctx.store.read() as conn:
        return {"contact_id": contact_id, "enrollments": contact_journeys(conn, contact_id)}
