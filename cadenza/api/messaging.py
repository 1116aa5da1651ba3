"""SMS and webhook routes: Twilio's status callbacks and inbound messages (signed with
`X-Twilio-Signature`, no API key), and the saved webhook endpoints under /api (admin key).
Each route parses, calls a service, renders."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cadenza.api.auth import AdminKey, Ctx
from cadenza.api.context import AppContext
from cadenza.api.responses import JSON
from cadenza.channels.endpoints import EndpointService
from cadenza.channels.options import WebhookOptions
from cadenza.channels.smshooks import KeywordReplies, SmsHooks, signature_valid, twiml
from cadenza.channels.ssrf import SsrfGuard, parse_networks
from cadenza.errors import Forbidden, PayloadTooLarge, ValidationFailed

router = APIRouter()

EndpointKey = Annotated[str, Path(min_length=1, max_length=64)]
MAX_FORM_BYTES = 64 * 1024
SIGNATURE_HEADER = "X-Twilio-Signature"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointBody(_Body):
    """A webhook endpoint: where to POST, extra headers, and optionally its signing secret."""

    url: str = Field(max_length=2048, examples=["https://crm.example.com/hooks/cadenza"])
    headers: dict[str, str] = Field(default_factory=dict,
                                    examples=[{"X-Team": "growth"}])
    secret: str | None = Field(default=None, description="whsec_... (generated when left "
                               "out for a new endpoint; kept on update)")


class RotateBody(_Body):
    """A new secret to use, or nothing to have one generated."""

    secret: str | None = Field(default=None, description="whsec_...")


def endpoint_service(ctx: AppContext) -> EndpointService:
    """Endpoints checked with the process's SSRF allow-list."""
    options = WebhookOptions.from_settings(ctx.settings)
    return EndpointService(ctx.store, ctx.clock,
                           SsrfGuard(parse_networks(options.allow_networks)))


async def _signed_form(request: Request, ctx: AppContext) -> dict[str, str]:
    """The form Twilio posted, after its signature checked out (403 otherwise)."""
    token = ctx.settings.twilio_auth_token
    if not token:
        raise Forbidden("Twilio is not configured here: set CADENZA_TWILIO_AUTH_TOKEN so that "
                        "its requests can be verified")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise PayloadTooLarge("body", f"is {len(raw)} bytes; a Twilio callback is far smaller")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ValidationFailed("body", "is not UTF-8 form data") from None
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature or not any(signature_valid(token, url, pairs, signature)
                                for url in _signed_urls(request, ctx)):
        raise Forbidden(f"the {SIGNATURE_HEADER} header does not match this request; check "
                        "CADENZA_TWILIO_AUTH_TOKEN and that CADENZA_PUBLIC_URL is the address "
                        "Twilio calls")
    return dict(pairs)


def _signed_urls(request: Request, ctx: AppContext) -> list[str]:
    """The URLs Twilio may have signed: the public one (behind a proxy), then as received."""
    query = f"?{request.url.query}" if request.url.query else ""
    urls = []
    public = getattr(ctx.settings, "public_url", None)
    if public:
        urls.append(f"{str(public).rstrip('/')}{request.url.path}{query}")
    urls.append(str(request.url))
    return urls


def _hooks(ctx: AppContext) -> SmsHooks:
    s = ctx.settings
    return SmsHooks(ctx.store, ctx.clock, KeywordReplies(
        help=s.sms_help_text, stop=s.sms_stop_text, start=s.sms_start_text))


@router.post("/hooks/twilio/status", response_class=JSON, tags=["sms"])
async def twilio_status(request: Request, ctx: Ctx) -> JSON:
    """Twilio's delivery status for a message: becomes sms.sent/delivered/undelivered/failed."""
    form = await _signed_form(request, ctx)
    result = await run_in_threadpool(_hooks(ctx).status, form)
    return JSON({"sid": result.sid, "status": result.status, "recorded": result.recorded})


@router.post("/hooks/twilio/inbound", tags=["sms"])
async def twilio_inbound(request: Request, ctx: Ctx) -> Response:
    """A message to our number: keywords update consent; the answer is TwiML."""
    form = await _signed_form(request, ctx)
    result = await run_in_threadpool(_hooks(ctx).inbound, form)
    return Response(twiml(result.reply), media_type="application/xml")


@router.get("/api/webhook-endpoints", response_class=JSON, tags=["webhooks"])
def list_endpoints(ctx: Ctx, _key: AdminKey) -> JSON:
    """Every saved endpoint (secrets are never listed)."""
    return JSON({"items": [e.to_dict() for e in endpoint_service(ctx).all()]})


@router.get("/api/webhook-endpoints/{key}", response_class=JSON, tags=["webhooks"])
def get_endpoint(ctx: Ctx, _key: AdminKey, key: EndpointKey) -> JSON:
    """One endpoint (without its secret)."""
    return JSON(endpoint_service(ctx).get(key).to_dict())


@router.put("/api/webhook-endpoints/{key}", response_class=JSON, tags=["webhooks"])
async def put_endpoint(ctx: Ctx, _key: AdminKey, key: EndpointKey, body: EndpointBody) -> JSON:
    """Create (201, the generated secret shown this once) or update (200) an endpoint; the
    URL is resolved and refused when it reaches a private, loopback or metadata address."""
    saved = await endpoint_service(ctx).save(key, body.url, body.headers, body.secret)
    return JSON(saved.to_dict(), status_code=201 if saved.created else 200)


@router.post("/api/webhook-endpoints/{key}/rotate", response_class=JSON, tags=["webhooks"])
def rotate_endpoint(ctx: Ctx, _key: AdminKey, key: EndpointKey, body: RotateBody) -> JSON:
    """A new signing secret, shown this once."""
    return JSON(endpoint_service(ctx).rotate(key, body.secret).to_dict())


@router.delete("/api/webhook-endpoints/{key}", status_code=204, tags=["webhooks"])
def delete_endpoint(ctx: Ctx, _key: AdminKey, key: EndpointKey) -> Response:
    """Remove an endpoint; steps naming it fail until it is saved again."""
    endpoint_service(ctx).remove(key)
    return Response(status_code=204)
