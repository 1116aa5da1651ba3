"""Send-time policies under /api/policies: consent modes, frequency caps and quiet hours, per
workspace and per journey. Each route parses, calls `PolicyService`, renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.channels.policies import PolicyService
from cadenza.errors import NotFound

router = APIRouter(prefix="/api")

Scope = Annotated[str, Path(min_length=1, max_length=160,
                            description="'workspace' or 'journey:<key>'",
                            examples=["workspace", "journey:trial-onboarding"])]
_EXAMPLE = {"timezone": "Europe/Berlin", "consent": {"email": "opt_in", "sms": "opt_in"},
            "caps": [{"channel": "email", "limit": 2, "window": "1d"},
                     {"channel": "sms", "limit": 1, "window": "7d", "on_exceed": "defer"}],
            "quiet_hours": {"start": "21:00", "end": "08:00", "channels": ["sms", "email"]}}


def _service(ctx: Ctx) -> PolicyService:
    return PolicyService(ctx.store, ctx.clock)


@router.get("/policies", response_class=JSON, tags=["policies"])
def list_policies(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every stored policy, the workspace first."""
    return JSON({"items": [p.to_dict() for p in _service(ctx).all()]})


@router.get("/policies/{scope}", response_class=JSON, tags=["policies"])
def get_policy(ctx: Ctx, _key: AdminKey, scope: Scope) -> JSON:
    """One scope's policy (the workspace's default when none is stored)."""
    return JSON(_service(ctx).get(scope).to_dict())


@router.put("/policies/{scope}", response_class=JSON, tags=["policies"])
def put_policy(ctx: Ctx, _key: AdminKey, scope: Scope,
               document: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> JSON:
    """Create (201) or replace (200) a scope's policy; the next dispatch batch applies it.
    A bad field is refused with its path, e.g. `caps[1].window`."""
    stored, created = _service(ctx).set(scope, document)
    return JSON(stored.to_dict(), status_code=201 if created else 200)


@router.delete("/policies/{scope}", response_class=JSON, tags=["policies"])
def delete_policy(ctx: Ctx, _key: AdminKey, scope: Scope) -> JSON:
    """Remove a scope's policy (the workspace falls back to the default)."""
    if not _service(ctx).delete(scope):
        raise NotFound("policy", scope)
    return JSON({"scope": scope, "deleted": True})
