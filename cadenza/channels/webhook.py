"""The `webhook` channel: POST a JSON body to `params.url` or a saved `params.endpoint`.

Each request carries the outbox row's idempotency key as `Idempotency-Key` (and in the body as
`id`), so a receiver that honours it applies a retried or replayed message once. Bodies are
signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the
endpoint's secret, or with the `webhook_signing_secret` setting for inline URLs. 5xx, 408, 429,
timeouts and connection failures are retried; any other 4xx and redirects (never followed) are
not. Only the first `max_response_bytes` of a response are read.

Every URL passes the SSRF guard (`cadenza.channels.ssrf`): its spelling is checked before the
request, and the connection itself resolves, checks and pins the address it connects to.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from cadenza.channels.base import (
    ChannelDeps,
    ChannelSpec,
    check_known,
    check_text,
    param_path,
)
from cadenza.channels.endpoints import WebhookEndpoint, check_headers, load_endpoints
from cadenza.channels.endpoints import check_key as check_endpoint_key
from cadenza.channels.errors import ChannelError
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import WebhookOptions
from cadenza.channels.signing import signature_headers
from cadenza.channels.ssrf import SsrfGuard, UrlRefused, parse_networks
from cadenza.errors import ValidationFailed
from cadenza.store import Store

_KNOWN = frozenset({"url", "endpoint", "headers", "data", "subject", "body"})
_RETRYABLE_STATUS = frozenset({408, 429})
_SNIPPET = 300


def check_params(params: Mapping[str, Any], where: str) -> None:
    """`url` (http or https) or `endpoint` (a saved endpoint's key) required, or both (the
    step's URL, signed with the endpoint's secret); `headers` (name: text), `data` (an object
    sent as is), inline `subject` and `body` optional.

    Nothing is resolved here (publish needs no network): the URL's spelling and literal
    addresses are checked; its host is resolved and checked at every send. Whether a named
    endpoint exists is the publisher's check (`EndpointService.missing`)."""
    check_known(params, where, _KNOWN)
    url = params.get("url")
    endpoint = params.get("endpoint")
    if url is None and endpoint is None:
        raise ValidationFailed(param_path(where, "url"), "is required (or name a saved "
                               "`endpoint`): the address to POST to")
    if endpoint is not None:
        check_endpoint_key(endpoint, param_path(where, "endpoint"))
    if url is not None:
        if not isinstance(url, str) or not url:
            raise ValidationFailed(param_path(where, "url"), "must be an http(s) URL")
        try:
            require_http_url(httpx.URL(url))
        except (httpx.InvalidURL, ChannelError) as exc:
            raise ValidationFailed(param_path(where, "url"), _reason(exc)) from None
    check_headers(params.get("headers", {}), param_path(where, "headers"))
    if not isinstance(params.get("data", {}), dict):
        raise ValidationFailed(param_path(where, "data"), "must be an object")
    check_text(params, where, "subject")
    check_text(params, where, "body")


def _reason(exc: Exception) -> str:
    if isinstance(exc, UrlRefused):
        return f"is refused: {exc.why}"
    return exc.reason if isinstance(exc, ChannelError) else f"is not a URL: {exc}"


def require_http_url(url: httpx.URL) -> None:
    """Publish-time check: an absolute http(s) URL with a host, spelled plainly."""
    if url.scheme not in ("http", "https"):
        raise ChannelError("webhook", f"{str(url)[:200]!r} must start with http:// or "
                           "https://", retryable=False)
    if not url.host:
        raise ChannelError("webhook", f"{str(url)[:200]!r} names no host", retryable=False)
    if "%" in url.host and ":" not in url.host:
        raise ChannelError("webhook", f"{str(url)[:200]!r}: percent-encoded host names are "
                           "not accepted", retryable=False)


def request_body(message: Message) -> Any:
    """The JSON a receiver gets: a webhook template's rendered JSON as it is (the receiver
    chose its shape: a Slack message, a CRM record), otherwise Cadenza's envelope."""
    if "json" in message.content:
        return message.content["json"]
    contact = message.contact
    body: dict[str, Any] = {
        "id": message.key,
        "journey": message.journey,
        "step": message.step,
        "contact": {"id": contact.id, "email": contact.email, "phone": contact.phone,
                    "user_id": contact.user_id},
        "data": dict(message.params.get("data") or {}),
    }
    for name in ("subject", "body"):
        if name in message.content:
            body[name] = message.content[name]
    return body


class WebhookChannel:
    """POSTs signed JSON with httpx through the SSRF-pinned transport; one connection pool
    for the channel's life."""

    name = "webhook"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = False
    address_kind: str | None = None

    def __init__(self, options: WebhookOptions | None = None,
                 guard: SsrfGuard | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 store: Store | None = None) -> None:
        """`guard` defaults to one that allows only public addresses and the options'
        allow-list; `transport` replaces the pinned transport (tests only: it bypasses the
        connect-time check); `store` is needed for steps that name an `endpoint`."""
        self.options = options or WebhookOptions()
        self.guard = guard or SsrfGuard(parse_networks(self.options.allow_networks))
        self._transport = transport
        self._store = store
        self._client: httpx.AsyncClient | None = None
        self._endpoints: dict[str, WebhookEndpoint | None] = {}

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout_s), follow_redirects=False,
                transport=self._transport or self.guard.transport(), trust_env=False,
                headers={"User-Agent": self.options.user_agent})
        return self._client

    async def _endpoint(self, key: str) -> WebhookEndpoint:
        if key not in self._endpoints:  # read once per batch
            store = self._store
            if store is None:
                raise ChannelError("webhook", f"endpoint {key!r}: this channel has no store to "
                                   "read saved endpoints from", retryable=False)

            def load() -> WebhookEndpoint | None:
                with store.read() as conn:
                    return load_endpoints(conn, [key]).get(key)

            self._endpoints[key] = await asyncio.to_thread(load)
        found = self._endpoints[key]
        if found is None:
            raise ChannelError("webhook", f"endpoint {key!r} does not exist; save it with "
                               "`cadenza webhooks add` and replay the row", retryable=False)
        return found

    async def target(self, message: Message) -> tuple[str, str | None, dict[str, str]]:
        """Where the message goes: URL, signing secret (None: unsigned) and extra headers."""
        params = message.params
        headers = dict(params.get("headers") or {})
        key = params.get("endpoint")
        if key:
            endpoint = await self._endpoint(str(key))
            url = str(params.get("url") or endpoint.url)
            return url, endpoint.secret or None, {**endpoint.headers, **headers}
        return str(params.get("url", "")), self.options.signing_secret, headers

    async def send(self, message: Message) -> SendResult:
        """POST the message; classify the answer."""
        raw, secret, extra = await self.target(message)
        url = self.guard.check_shape(raw)
        content = orjson.dumps(request_body(message), option=orjson.OPT_NON_STR_KEYS)
        headers = {**extra, "Idempotency-Key": message.key, "Content-Type": "application/json"}
        if secret:
            headers.update(signature_headers(secret, message.key, message.at_ms, content))
        try:
            async with self._http().stream("POST", url, content=content,
                                           headers=headers) as response:
                head = await self._read_capped(response)
        except httpx.TimeoutException as exc:
            raise ChannelError("webhook", f"POST {url.host}: timed out "
                               f"({type(exc).__name__})", retryable=True) from None
        except httpx.HTTPError as exc:
            raise ChannelError("webhook", f"POST {url.host}: {type(exc).__name__}: {exc}",
                               retryable=True) from None
        return _result(url, response, head, message.at_ms)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """At most `max_response_bytes` of the body; the rest is never read."""
        cap = self.options.max_response_bytes
        head = bytearray()
        async for chunk in response.aiter_raw():
            head.extend(chunk[: max(0, cap - len(head))])
            if len(head) >= cap:
                break
        return bytes(head)

    async def end_batch(self) -> None:
        """Connections stay pooled across batches; endpoints are read again next batch."""
        self._endpoints.clear()

    async def close(self) -> None:
        """Close the connection pool."""
        self._endpoints.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _result(url: httpx.URL, response: httpx.Response, head: bytes, now_ms: int) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        ref = response.headers.get("x-request-id") or f"http:{status}"
        return SendResult(provider_ref=ref[:256])
    snippet = head[:_SNIPPET].decode("utf-8", "replace").strip()
    reason = f"POST {url.host}: HTTP {status}" + (f": {snippet}" if snippet else "")
    if 300 <= status < 400:
        raise ChannelError("webhook", f"{reason} (redirects are not followed; use the final "
                           "URL)", retryable=False)
    retryable = status >= 500 or status in _RETRYABLE_STATUS
    retry_after = retry_after_ms(response.headers.get("retry-after"), now_ms)
    raise ChannelError("webhook", reason, retryable=retryable,
                       retry_after_ms=retry_after if retryable else None)


def retry_after_ms(value: str | None, now_ms: int, cap_ms: int = 3_600_000) -> int | None:
    """Epoch ms from a `Retry-After` header (seconds or an HTTP date), at most `cap_ms` ahead;
    None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return now_ms + min(int(text) * 1000, cap_ms)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(now_ms, int(when.timestamp() * 1000)), now_ms + cap_ms)


def create(deps: ChannelDeps) -> WebhookChannel:
    """A webhook channel: options from the process settings when given, else `deps.webhook`;
    the SSRF guard is always on."""
    options = WebhookOptions.from_settings(deps.settings) if deps.settings is not None \
        else deps.webhook
    return WebhookChannel(options, store=deps.store)


SPEC = ChannelSpec("webhook", check_params, create)
