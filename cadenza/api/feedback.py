"""Public feedback routes: open and click tracking, unsubscribe and the preference centre,
provider event webhooks and DSNs; the topics admin under /api.

The public routes take no API key: a signed token in the path is the credential (see
`cadenza.channels.tokens`). A bad token gets a 404 page, never a redirect and never a hint
about which check failed. GET never changes anything; only POST unsubscribes.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cadenza.api.auth import AdminKey, Ctx, presented_key
from cadenza.api.context import AppContext
from cadenza.api.responses import JSON
from cadenza.channels.bounces import FeedbackService, parse_report, report_signals
from cadenza.channels.esp_webhooks import (
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    PostmarkVerifier,
    SendGridVerifier,
    postmark_signals,
    sendgrid_signals,
)
from cadenza.channels.tokens import MAX_TOKEN_CHARS, TokenInvalid, TokenSigner
from cadenza.channels.tracking import Hit, TrackingService
from cadenza.channels.unsubscribe import TopicService, UnsubscribeService
from cadenza.errors import AuthError, PayloadTooLarge, ValidationFailed
from cadenza.governance import KeyKind

router = APIRouter()

Token = Annotated[str, Path(min_length=1, max_length=MAX_TOKEN_CHARS)]
TopicKey = Annotated[str, Path(min_length=1, max_length=64)]
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A transparent 1x1 GIF."""
MAX_HOOK_BYTES = 10 * 1024 * 1024
_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
             "Pragma": "no-cache", "Expires": "0"}
_PAGE_HEADERS = {**_NO_STORE, "X-Robots-Tag": "noindex, nofollow",
                 "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                            "form-action 'self'; frame-ancestors 'none'"}
_pages = Environment(loader=PackageLoader("cadenza.channels", "pages"), autoescape=True,
                     undefined=StrictUndefined)


@dataclass
class _Services:
    """The feedback services of one app, built on first use from its settings."""

    ctx: AppContext

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner.from_settings(self.ctx.settings)

    @cached_property
    def tracking(self) -> TrackingService:
        return TrackingService(self.ctx.store, self.ctx.clock, self.signer,
                               window_s=self.ctx.settings.bot_click_seconds)

    @cached_property
    def unsubscribe(self) -> UnsubscribeService:
        return UnsubscribeService(self.ctx.store, self.ctx.clock, self.signer,
                                  self.ctx.settings.public_url)

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.ctx.store, self.ctx.clock,
                               soft_bounce_limit=self.ctx.settings.soft_bounce_limit)

    @cached_property
    def topics(self) -> TopicService:
        return TopicService(self.ctx.store, self.ctx.clock)

    @cached_property
    def postmark(self) -> PostmarkVerifier:
        return PostmarkVerifier(self.ctx.settings.postmark_webhook_username,
                                self.ctx.settings.postmark_webhook_password)

    def sendgrid(self) -> SendGridVerifier:
        key = self.ctx.settings.sendgrid_webhook_public_key
        if not key:
            raise AuthError("SendGrid webhooks are off: set CADENZA_SENDGRID_WEBHOOK_PUBLIC_KEY "
                            "to the verification key of SendGrid's Signed Event Webhook")
        return SendGridVerifier(key, self.ctx.settings.webhook_max_age_s)


def _services(request: Request, ctx: AppContext) -> _Services:
    found: _Services | None = getattr(request.app.state, "cadenza_feedback", None)
    if found is None or found.ctx is not ctx:
        found = _Services(ctx)
        request.app.state.cadenza_feedback = found
    return found


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("shadow", False)
    return HTMLResponse(_pages.get_template(name).render(**values), status_code=status,
                        headers=_PAGE_HEADERS)


def _invalid() -> HTMLResponse:
    return _page("invalid.html", status=404)


def _hit(request: Request) -> Hit:
    return Hit(request.headers.get("user-agent", ""),
               request.client.host if request.client else None, request.method,
               {k.lower(): v for k, v in request.headers.items()})


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


# --- tracking -----------------------------------------------------------------------------

@router.get("/t/o/{token}", include_in_schema=False)
def open_pixel(request: Request, ctx: Ctx, token: Token) -> Response:
    """The open pixel: always the GIF (a broken image helps no one); records `email.opened`
    when the token is genuine."""
    with contextlib.suppress(TokenInvalid):
        _services(request, ctx).tracking.opened(token, _hit(request))
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


@router.api_route("/t/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def click(request: Request, ctx: Ctx, token: Token) -> Response:
    """A tracked link: 302 to the URL signed into the token, after recording
    `email.clicked`; a bad token is a 404 page."""
    try:
        url = _services(request, ctx).tracking.clicked(token, _hit(request))
    except TokenInvalid:
        return _invalid()
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


# --- unsubscribe and preferences ----------------------------------------------------------

@router.get("/u/{token}", include_in_schema=False)
def unsubscribe_page(request: Request, ctx: Ctx, token: Token) -> HTMLResponse:
    """What unsubscribing does, with a button (a POST). Changes nothing."""
    try:
        view = _services(request, ctx).unsubscribe.view(token)
    except TokenInvalid:
        return _invalid()
    return _page("unsubscribe.html", view=view, shadow=view.shadow)


@router.post("/u/{token}", include_in_schema=False)
async def unsubscribe(request: Request, ctx: Ctx, token: Token) -> Response:
    """Unsubscribe. With the RFC 8058 body `List-Unsubscribe=One-Click` (a mail client's
    one-click button) the answer is a bare 200; otherwise the confirmation page."""
    form = await request.form()
    one_click = str(form.get("List-Unsubscribe", "")).lower() == "one-click"
    services = _services(request, ctx)
    try:
        await run_in_threadpool(services.unsubscribe.unsubscribe, token, _ip(request),
                                one_click=one_click)
        if one_click:
            return PlainTextResponse("unsubscribed\n", headers=_NO_STORE)
        view = await run_in_threadpool(services.unsubscribe.view, token)
    except TokenInvalid:
        return _invalid() if not one_click else PlainTextResponse(
            "this unsubscribe link is not valid\n", status_code=404)
    return _page("unsubscribed.html", purpose=view.purpose, channel=view.channel,
                 address=view.address, preferences_url=view.preferences_url,
                 shadow=view.shadow)


@router.get("/preferences/{token}", include_in_schema=False)
def preferences_page(request: Request, ctx: Ctx, token: Token) -> HTMLResponse:
    """The preference centre: one switch per topic, and unsubscribe from all marketing."""
    try:
        prefs = _services(request, ctx).unsubscribe.preferences(token)
    except TokenInvalid:
        return _invalid()
    return _page("preferences.html", prefs=prefs, shadow=prefs.shadow, saved=False,
                 error=None)


@router.post("/preferences/{token}", include_in_schema=False)
async def save_preferences(request: Request, ctx: Ctx, token: Token) -> HTMLResponse:
    """Apply the preference form."""
    form = await request.form()
    topics = {str(v) for v in form.getlist("topic")}
    marketing_off = str(form.get("unsubscribe_all", "")) in ("1", "on", "true", "yes")
    service = _services(request, ctx).unsubscribe
    try:
        prefs = await run_in_threadpool(service.update, token, topics, marketing_off,
                                        _ip(request))
    except TokenInvalid:
        return _invalid()
    except ValidationFailed as exc:
        prefs = await run_in_threadpool(service.preferences, token)
        return _page("preferences.html", status=400, prefs=prefs, shadow=prefs.shadow,
                     saved=False, error=exc.reason)
    return _page("preferences.html", prefs=prefs, shadow=prefs.shadow, saved=True,
                 error=None)


# --- provider webhooks and DSNs -----------------------------------------------------------

async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_HOOK_BYTES:
        raise PayloadTooLarge("body", f"is over {MAX_HOOK_BYTES:,} bytes")
    body = await request.body()
    if len(body) > MAX_HOOK_BYTES:
        raise PayloadTooLarge("body", f"is over {MAX_HOOK_BYTES:,} bytes")
    return body


@router.post("/hooks/sendgrid", response_class=JSON, tags=["feedback"])
async def sendgrid_hook(request: Request, ctx: Ctx) -> JSON:
    """SendGrid Event Webhook (signed): delivery, bounce, complaint, open, click and
    unsubscribe events become message events."""
    services = _services(request, ctx)
    body = await _body(request)
    services.sendgrid().verify(request.headers.get(SENDGRID_SIGNATURE),
                               request.headers.get(SENDGRID_TIMESTAMP), body,
                               ctx.clock.now_ms())
    signals = sendgrid_signals(body, ctx.clock.now_ms())
    report = await run_in_threadpool(services.feedback.apply, signals)
    return JSON(report.to_dict())


@router.post("/hooks/postmark", response_class=JSON, tags=["feedback"])
async def postmark_hook(request: Request, ctx: Ctx) -> JSON:
    """Postmark webhooks (HTTP Basic): Delivery, Bounce, SpamComplaint, Open, Click,
    SubscriptionChange."""
    services = _services(request, ctx)
    services.postmark.verify(request.headers.get("authorization"))
    signals = postmark_signals(await _body(request), ctx.clock.now_ms())
    report = await run_in_threadpool(services.feedback.apply, signals)
    return JSON(report.to_dict())


@router.post("/hooks/dsn", response_class=JSON, tags=["feedback"])
async def dsn_hook(request: Request, ctx: Ctx) -> JSON:
    """A raw DSN (RFC 3464) or ARF complaint, as the bounce mailbox received it;
    `Authorization: Bearer <CADENZA_DSN_SECRET or an admin key>`."""
    presented = presented_key(request)
    secret = ctx.settings.dsn_secret
    if not (secret and presented and hmac.compare_digest(presented.encode(), secret.encode())):
        await run_in_threadpool(ctx.keys.check, presented, (KeyKind.ADMIN,),
                                ctx.clock.now_ms())
    raw = await _body(request)
    now = ctx.clock.now_ms()
    signals = report_signals(parse_report(raw), now)
    report = await run_in_threadpool(_services(request, ctx).feedback.apply, signals)
    return JSON(report.to_dict())


# --- topics (admin) -----------------------------------------------------------------------

class TopicBody(BaseModel):
    """A subscription topic."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256, examples=["Product news"])
    description: str = Field(default="", max_length=2000)
    channel: str = Field(default="email", max_length=32)


@router.get("/api/topics", response_class=JSON, tags=["feedback"])
def list_topics(request: Request, ctx: Ctx, _key: AdminKey) -> JSON:
    """Every topic of the preference centre."""
    return JSON({"items": [t.to_dict() for t in _services(request, ctx).topics.all()]})


@router.put("/api/topics/{key}", response_class=JSON, tags=["feedback"])
def put_topic(request: Request, ctx: Ctx, _key: AdminKey, key: TopicKey,
              body: TopicBody) -> JSON:
    """Create (201) or update (200) a topic; its key is the consent purpose."""
    topic, created = _services(request, ctx).topics.add(key, body.name, body.description,
                                                        body.channel)
    return JSON(topic.to_dict(), status_code=201 if created else 200)


@router.delete("/api/topics/{key}", response_class=JSON, tags=["feedback"])
def delete_topic(request: Request, ctx: Ctx, _key: AdminKey, key: TopicKey) -> JSON:
    """Remove a topic (consents recorded for it stay)."""
    _services(request, ctx).topics.remove(key)
    return JSON({"removed": key})
