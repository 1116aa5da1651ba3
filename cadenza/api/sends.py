"""The emergency stop under /api/sends: stop every send at once, resume, status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.channels.stop import SendSwitch
from cadenza.governance import ApiKey, AuditService

router = APIRouter(prefix="/api")


def _switch(ctx: Ctx) -> SendSwitch:
    return SendSwitch(ctx.store, ctx.clock,
                      AuditService(ctx.store, ctx.clock, ctx.settings.secret_key))


def _actor(key: ApiKey) -> str:
    return f"key:{key.prefix}"


@router.get("/sends", response_class=JSON, tags=["sends"])
def send_status(ctx: Ctx, _key: AdminKey) -> JSON:
    """Whether sends are stopped, since when, by whom and why."""
    state = _switch(ctx).status()
    return JSON(state.to_dict() if state else {"stopped": False})


@router.post("/sends/stop", response_class=JSON, tags=["sends"])
def stop_all(ctx: Ctx, key: AdminKey,
             reason: Annotated[str, Body(embed=True, min_length=1, max_length=500,
                                         examples=["wrong price in the spring campaign"])]
             ) -> JSON:
    """Emergency stop: no message leaves until sends are resumed."""
    return JSON(_switch(ctx).stop(_actor(key), reason).to_dict())


@router.post("/sends/resume", response_class=JSON, tags=["sends"])
def resume_all(ctx: Ctx, key: AdminKey) -> JSON:
    """Let sends go again; held messages go out in order."""
    lifted = _switch(ctx).resume(_actor(key))
    return JSON({"stopped": False, "lifted": lifted.to_dict() if lifted else None})
