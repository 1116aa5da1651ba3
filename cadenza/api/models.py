"""Predictive models under /api/models: define, train, report, promote through the guard,
roll back, score, explain. Each route parses, calls `PredictiveService`, renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.leads import PredictiveService

router = APIRouter(prefix="/api")

Key = Annotated[str, Path(min_length=1, max_length=128, description="The model's key",
                          examples=["likely-buyer"])]
Version = Annotated[int, Path(ge=1, description="A version number")]
_EXAMPLE = {"name": "Likely to buy within 30 days",
            "outcome": {"event": "Order Completed"}, "horizon_days": 30,
            "features": [{"attr": "plan", "type": "enum"},
                         {"count": "Pricing Viewed", "windows": [7, 30, 90]},
                         {"days_since": "Logged In", "cap": 90}],
            "schedule": {"retrain_every_days": 7, "rescore_every_hours": 24}}


class PromoteBody(BaseModel):
    """Options of a promotion."""

    model_config = ConfigDict(extra="forbid")
    force: bool = Field(default=False, description="Promote even if the guard refuses "
                        "(recorded in the version's note).")
    note: str = Field(default="", max_length=500, description="Why, for the version history.")


class RollbackBody(BaseModel):
    """Which version to bring back."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(default=None, ge=1, description="Default: the version that "
                                "was live most recently before the current one.")


def _service(ctx: Ctx) -> PredictiveService:
    return PredictiveService(ctx.store, ctx.clock, tolerance=ctx.settings.model_auc_tolerance)


@router.get("/models", response_class=JSON, tags=["models"])
def list_models(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every predictive model with its live version's AUC."""
    return JSON({"items": _service(ctx).models()})


@router.put("/models/{key}", response_class=JSON, tags=["models"])
def put_model(ctx: Ctx, _key: AdminKey, key: Key,
              document: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> JSON:
    """Create (201) or replace (200) a model definition; train it next."""
    model, created = _service(ctx).define(document, key)
    return JSON(model, status_code=201 if created else 200)


@router.get("/models/{key}", response_class=JSON, tags=["models"])
def get_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """One model: its definition and live version."""
    return JSON(_service(ctx).get(key))


@router.post("/models/{key}/train", response_class=JSON, tags=["models"])
def train_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Train a candidate version now (synchronously) and return its report."""
    return JSON(_service(ctx).train(key).to_dict(), status_code=201)


@router.get("/models/{key}/versions", response_class=JSON, tags=["models"])
def list_versions(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Every version, newest first, with its headline metrics."""
    return JSON({"items": [v.to_dict(full=False) for v in _service(ctx).versions(key)]})


@router.get("/models/{key}/versions/{version}", response_class=JSON, tags=["models"])
def get_version(ctx: Ctx, _key: AdminKey, key: Key, version: Version) -> JSON:
    """One version's full report: AUC, calibration, lift by decile, importances."""
    return JSON(_service(ctx).version(key, version).to_dict())


@router.post("/models/{key}/versions/{version}/promote", response_class=JSON,
             tags=["models"])
def promote_version(ctx: Ctx, _key: AdminKey, key: Key, version: Version,
                    body: PromoteBody | None = None) -> JSON:
    """Make a candidate live; 409 with both AUCs when the guard refuses it."""
    options = body or PromoteBody()
    return JSON(_service(ctx).promote(key, version, force=options.force,
                                      note=options.note).to_dict(full=False))


@router.post("/models/{key}/rollback", response_class=JSON, tags=["models"])
def rollback_model(ctx: Ctx, _key: AdminKey, key: Key, body: RollbackBody | None = None) -> JSON:
    """Bring back an earlier live version."""
    target = (body or RollbackBody()).version
    return JSON(_service(ctx).rollback(key, target).to_dict(full=False))


@router.post("/models/{key}/score", response_class=JSON, tags=["models"])
def score_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Score every contact with the live version now."""
    return JSON(_service(ctx).score(key).to_dict())


@router.get("/models/{key}/contacts/{contact_id}/explanation", response_class=JSON,
            tags=["models"])
def explain_contact(ctx: Ctx, _key: AdminKey, key: Key,
                    contact_id: Annotated[int, Path(ge=1)]) -> JSON:
    """Every feature's effect on one contact's score now, and the stored explanation."""
    return JSON(_service(ctx).explain(key, contact_id))
