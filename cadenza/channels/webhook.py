"""The `webhook` channel: POST a JSON body to `params.url`.

Each request carries the outbox row's idempotency key as `Idempotency-Key` (and in the body as
`id`), so a receiver that honours it applies a retried or replayed message once. 5xx, 408, 429,
timeouts and connection failures are retried; any other 4xx and redirects (never followed) are
not. Only the first `max_response_bytes` of a response are read.

The URL passes through a guard before any connection is made. The default guard only insists
on http(s) and a host; the SSRF guard (resolve, refuse private, loopback and link-local
addresses, pin the resolved address) plugs in here as another `UrlGuard`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
from cadenza.channels.errors import ChannelError
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import WebhookOptions
from cadenza.errors import ValidationFailed

UrlGuard = Callable[[httpx.URL], None]
"""Raises ChannelError (not retryable) for a URL that must not be called."""

_KNOWN = frozenset({"url", "headers", "data", "subject", "body"})
_RESERVED_HEADERS = frozenset({"idempotency-key", "content-type", "content-length", "host",
                               "transfer-encoding", "connection"})
_RETRYABLE_STATUS = frozenset({408, 429})
_SNIPPET = 300


def check_params(params: Mapping[str, Any], where: str) -> None:
    """`url` (http or https) required; `headers` (name: text), `data` (an object sent as is),
    inline `subject` and `body` optional."""
    check_known(params, where, _KNOWN)
    url = params.get("url")
    if not isinstance(url, str) or not url:
        raise ValidationFailed(param_path(where, "url"), "is required: the address to POST to")
    try:
        require_http_url(httpx.URL(url))
    except (httpx.InvalidURL, ChannelError) as exc:
        raise ValidationFailed(param_path(where, "url"), _reason(exc)) from None
    headers = params.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValidationFailed(param_path(where, "headers"), "must map header names to text")
    reserved = sorted(k for k in headers if k.lower() in _RESERVED_HEADERS)
    if reserved:
        raise ValidationFailed(param_path(where, f"headers.{reserved[0]}"),
                               "is set by Cadenza and cannot be overridden")
    if not isinstance(params.get("data", {}), dict):
        raise ValidationFailed(param_path(where, "data"), "must be an object")
    check_text(params, where, "subject")
    check_text(params, where, "body")


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ChannelError) else f"is not a URL: {exc}"


def require_http_url(url: httpx.URL) -> None:
    """The default guard: an absolute http(s) URL with a host."""
    if url.scheme not in ("http", "https"):
        raise ChannelError("webhook", f"{str(url)[:200]!r} must start with http:// or "
                           "https://", retryable=False)
    if not url.host:
        raise ChannelError("webhook", f"{str(url)[:200]!r} names no host", retryable=False)


def request_body(message: Message) -> dict[str, Any]:
    """The JSON a receiver gets."""
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
    """POSTs JSON with httpx; one connection pool for the channel's life."""

    name = "webhook"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = False
    address_kind: str | None = None

    def __init__(self, options: WebhookOptions | None = None,
                 guard: UrlGuard = require_http_url,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options or WebhookOptions()
        self.guard = guard
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout_s), follow_redirects=False,
                transport=self._transport, trust_env=False,
                headers={"User-Agent": self.options.user_agent})
        return self._client

    async def send(self, message: Message) -> SendResult:
        """POST the message; classify the answer."""
        raw = str(message.params.get("url", ""))
        try:
            url = httpx.URL(raw)
        except httpx.InvalidURL as exc:
            raise ChannelError("webhook", f"{raw[:200]!r} is not a URL: {exc}",
                               retryable=False) from None
        self.guard(url)
        headers = {**dict(message.params.get("headers") or {}),
                   "Idempotency-Key": message.key, "Content-Type": "application/json"}
        content = orjson.dumps(request_body(message), option=orjson.OPT_NON_STR_KEYS)
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
        return _result(url, response, head)

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
        """Connections stay pooled across batches."""

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _result(url: httpx.URL, response: httpx.Response, head: bytes) -> SendResult:
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
    raise ChannelError("webhook", reason, retryable=retryable)


def create(deps: ChannelDeps) -> WebhookChannel:
    """A webhook channel with the configured options."""
    return WebhookChannel(deps.webhook)


SPEC = ChannelSpec("webhook", check_params, create)
