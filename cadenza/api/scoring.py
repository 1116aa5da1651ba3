"""/api/scores: rule-based score models (define, validate, archive, score now), top contacts,
distributions, and one contact's scores explained. Each route parses, calls
`ScoreService`, renders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.responses import JSON
from cadenza.errors import ValidationFailed
from cadenza.leads.score_service import MAX_BUCKETS, MAX_TOP, ScoreService

router = APIRouter(prefix="/api")

Key = Annotated[str, Path(min_length=1, max_length=128, description="The model's key",
                          examples=["fit"])]
_EXAMPLE = {
    "key": "engagement", "name": "Engagement", "half_life": "14d",
    "rules": [
        {"id": "pricing", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 5,
         "cap": {"points": 20, "per": "1d"}},
        {"id": "demo", "event": "Demo Requested", "points": 30},
        {"id": "unsubscribed", "event": "Email Unsubscribed", "points": -20}],
    "grades": [{"grade": "1", "min": 60}, {"grade": "2", "min": 25}, {"grade": "3"}],
    "thresholds": [60]}


def _service(ctx: Ctx) -> ScoreService:
    return ScoreService(ctx.store, ctx.clock)


def _mapping(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed("model", "the body must be a JSON object (a score model)")
    return body


@router.get("/scores/models", response_class=JSON, tags=["scores"])
def list_models(ctx: Ctx, _key: AdminKey, archived: bool = False) -> JSON:
    """Rules and matrix models (`archived=true` includes archived ones)."""
    return JSON({"items": [m.to_dict() for m in
                           _service(ctx).list_models(include_archived=archived)]})


@router.post("/scores/models", response_class=JSON, status_code=201, tags=["scores"])
def create_model(ctx: Ctx, _key: AdminKey,
                 body: Annotated[Any, Body(examples=[_EXAMPLE])]) -> JSON:
    """Create a model (409 when the key is taken); score it with POST .../score."""
    return JSON(_service(ctx).create(_mapping(body)).to_dict(), status_code=201)


@router.post("/scores/models/validate", response_class=JSON, tags=["scores"])
def validate_model(ctx: Ctx, _key: AdminKey,
                   body: Annotated[Any, Body(examples=[_EXAMPLE])]) -> JSON:
    """Check a model without saving it: its normalised form, or a 422 naming the field."""
    model = _service(ctx).validate(_mapping(body))
    return JSON({"valid": True, "definition": model.to_json()})


@router.get("/scores/models/{key}", response_class=JSON, tags=["scores"])
def get_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """One model, active or archived."""
    return JSON(_service(ctx).get(key).to_dict())


@router.put("/scores/models/{key}", response_class=JSON, tags=["scores"])
def put_model(ctx: Ctx, _key: AdminKey, key: Key,
              body: Annotated[Any, Body(examples=[_EXAMPLE])]) -> JSON:
    """Create (201) or replace (200) a model; the next scoring round applies it."""
    stored, created = _service(ctx).save(_mapping(body), key=key)
    return JSON(stored.to_dict(), status_code=201 if created else 200)


@router.post("/scores/models/{key}/archive", response_class=JSON, tags=["scores"])
def archive_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Stop scoring a model and drop its scores (409 while a matrix uses it)."""
    return JSON(_service(ctx).archive(key).to_dict())


@router.post("/scores/models/{key}/score", response_class=JSON, tags=["scores"])
def score_model(ctx: Ctx, _key: AdminKey, key: Key) -> JSON:
    """Score every contact in the model now (and the matrices built on it)."""
    return JSON({"items": _service(ctx).score_all(key)})


@router.post("/scores/score", response_class=JSON, tags=["scores"])
def score_everything(ctx: Ctx, _key: AdminKey) -> JSON:
    """Score every contact in every active model now."""
    return JSON({"items": _service(ctx).score_all()})


@router.get("/scores/models/{key}/top", response_class=JSON, tags=["scores"])
def top_contacts(ctx: Ctx, _key: AdminKey, key: Key,
                 limit: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20) -> JSON:
    """The highest-scored contacts of a model."""
    return JSON({"model": key, "items": _service(ctx).top(key, limit)})


@router.get("/scores/models/{key}/distribution", response_class=JSON, tags=["scores"])
def distribution(ctx: Ctx, _key: AdminKey, key: Key,
                 buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 10) -> JSON:
    """A histogram of a model's scores and the count per grade."""
    return JSON(_service(ctx).distribution(key, buckets))


@router.get("/contacts/{contact_id}/scores", response_class=JSON, tags=["scores"])
def contact_scores(ctx: Ctx, _key: AdminKey,
                   contact_id: Annotated[int, Path(ge=1, le=2**62)],
                   model: Annotated[str | None, Query(max_length=128)] = None) -> JSON:
    """One contact's score and grade per model, with the points of each rule and what it
    matched."""
    return JSON(_service(ctx).contact_scores(contact_id, model))


@router.get("/scores/models/{key}/contacts/{contact_id}", response_class=JSON,
            tags=["scores"])
def model_contact_score(ctx: Ctx, _key: AdminKey, key: Key,
                        contact_id: Annotated[int, Path(ge=1, le=2**62)]) -> JSON:
    """One contact's score in one model, explained."""
    return JSON(_service(ctx).contact_scores(contact_id, key)["models"][0])
