"""Email through an ESP's HTTP API instead of SMTP: SendGrid (v3 Mail Send) and Postmark.

Both send the same parts as SMTP (`email_parts`) and carry our idempotency key so that their
event webhooks map back to the outbox row: SendGrid as the custom argument `cadenza_key`,
Postmark as the metadata field `cadenza_key`; both also as the `X-Cadenza-Key` header. The
provider reference is the id the ESP reports in its webhooks: SendGrid's `X-Message-Id`
response header (its events' `sg_message_id` starts with it), Postmark's `MessageID`.

Neither API takes an idempotency key, so, as with SMTP, the dispatcher records each
accepted message at once. Replies map to retries like this:

    SendGrid                                  Postmark
    202 + X-Message-Id   sent                 200, ErrorCode 0   sent
    400 {"errors": [...]} not retried         422 ErrorCode 406  undeliverable (inactive)
    401, 403             not retried (key)    422 other codes    not retried
    413                  not retried (size)   401                not retried (token)
    429                  retried after        429                retried after
                         Retry-After or                          Retry-After
                         X-RateLimit-Reset;
                         the provider pauses
    5xx, timeouts        retried              5xx, timeouts      retried
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from cadenza.channels import mime
from cadenza.channels.base import ChannelDeps
from cadenza.channels.email import bucket_for, check_params, default_sender, resolve_sender
from cadenza.channels.email_parts import EmailParts, SenderBook, email_parts
from cadenza.channels.errors import ChannelError, Undeliverable
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import SmtpOptions
from cadenza.channels.ratelimit import RateLimited, TokenBucket, reset_after_s, retry_after_s
from cadenza.clock import Clock
from cadenza.errors import ConfigError

KEY_FIELD = "cadenza_key"
"""Name of the custom argument (SendGrid) and metadata field (Postmark) holding our key."""
DEFAULT_RETRY_AFTER_S = 1.0
"""How long a 429 without Retry-After pauses the provider."""
_SNIPPET = 300


@dataclass(frozen=True)
class EspOptions:
    """How to reach one ESP's API."""

    provider: str
    """sendgrid or postmark."""
    api_key: str
    """SendGrid API key (Bearer) or Postmark server token."""
    base_url: str
    """API root (https://api.sendgrid.com, https://api.postmarkapp.com, or a test server)."""
    rate_per_s: float = 0.0
    """Messages per second this process may submit; 0 is unlimited."""
    timeout_s: float = 30.0
    """Seconds for connecting and each read; a timeout is retried."""
    broadcast_stream: str = "broadcast"
    """Postmark message stream of marketing mail."""
    transactional_stream: str = "outbound"
    """Postmark message stream of transactional mail."""

    def __post_init__(self) -> None:
        if self.provider not in ("sendgrid", "postmark"):
            raise ValueError(f"{self.provider!r} is not an ESP; sendgrid or postmark")
        if not self.api_key:
            raise ValueError(f"the {self.provider} API key is empty")
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"the {self.provider} base URL must start with https://, got "
                             f"{self.base_url!r}")
        if self.rate_per_s < 0:
            raise ValueError("the ESP rate limit cannot be negative (0 is unlimited)")
        if self.timeout_s <= 0:
            raise ValueError("the ESP timeout must be positive")

    @classmethod
    def from_settings(cls, provider: str, settings: Any) -> EspOptions:
        """Options from the `sendgrid_*` or `postmark_*` settings."""
        key_setting = "sendgrid_api_key" if provider == "sendgrid" else "postmark_server_token"
        default_url = ("https://api.sendgrid.com" if provider == "sendgrid"
                       else "https://api.postmarkapp.com")
        return cls(
            provider=provider, api_key=str(getattr(settings, key_setting, None) or ""),
            base_url=str(getattr(settings, f"{provider}_base_url", None) or default_url),
            rate_per_s=float(getattr(settings, f"{provider}_rate_per_s", 0.0) or 0.0),
            timeout_s=float(getattr(settings, "esp_timeout_s", 30.0) or 30.0),
            broadcast_stream=str(getattr(settings, "postmark_broadcast_stream", None)
                                 or "broadcast"),
            transactional_stream=str(getattr(settings, "postmark_transactional_stream", None)
                                     or "outbound"))


class EspChannel:
    """The email channel over an ESP's HTTP API (one HTTP client, pooled connections)."""

    name = "email"
    text_fields: tuple[str, ...] = ("subject", "body")
    record_each = True
    address_kind: str | None = "email"

    def __init__(self, esp: EspOptions, options: SmtpOptions, clock: Clock, *,
                 senders: SenderBook | None = None,
                 limiter: TokenBucket | None = None) -> None:
        self.esp = esp
        self.options = options
        self.clock = clock
        self.senders = senders
        self.default_sender = default_sender(options)
        self.limiter = limiter or bucket_for(options, esp.rate_per_s)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """Same parameters as SMTP email."""
        check_params(params, where)

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.esp.base_url, timeout=self.esp.timeout_s, follow_redirects=False,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
                headers=self._auth_headers())
            self._loop = loop
        return self._client

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _request(self, parts: EmailParts, message: Message) -> tuple[str, bytes]:
        raise NotImplementedError

    def _accepted(self, response: httpx.Response) -> str | None:
        """The provider reference of an accepted message; None when the reply is an error."""
        raise NotImplementedError

    def _refusal(self, response: httpx.Response) -> ChannelError:
        raise NotImplementedError

    async def send(self, message: Message) -> SendResult:
        """POST the message; the provider reference is the ESP's message id."""
        parts = email_parts(message, self.options, await resolve_sender(self, message),
                            self.default_sender)
        path, body = self._request(parts, message)
        wait = await self.limiter.acquire(self.options.max_wait_s)
        if wait is not None:
            raise RateLimited("email", f"the {self.esp.provider} rate limit "
                              f"({self.esp.rate_per_s:g}/s) has no room within "
                              f"{self.options.max_wait_s:g} s",
                              self.clock.now_ms() + int(wait * 1000) + 1)
        try:
            response = await self._http().post(path, content=body, headers={
                "Content-Type": "application/json", "Accept": "application/json"})
        except httpx.HTTPError as exc:
            self.limiter.refund()
            raise ChannelError("email", f"{self.esp.provider} {self.esp.base_url}: "
                               f"{type(exc).__name__}: {exc}", retryable=True) from None
        ref = self._accepted(response)
        if ref is not None:
            return SendResult(provider_ref=ref)
        self.limiter.refund()
        if response.status_code == 429:
            now = self.clock.now_ms()
            pause = (retry_after_s(response.headers.get("Retry-After"), now)
                     or reset_after_s(response.headers.get("X-RateLimit-Reset"), now)
                     or DEFAULT_RETRY_AFTER_S)
            self.limiter.pause(pause)
            raise ChannelError("email", f"{self.esp.provider} 429: rate limited; every send "
                               f"pauses {pause:g} s", retryable=True,
                               retry_after_ms=now + int(pause * 1000))
        raise self._refusal(response)

    async def end_batch(self) -> None:
        """Connections stay in the HTTP client's pool."""

    async def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _snippet(response: httpx.Response) -> str:
    return response.text[:_SNIPPET].replace("\n", " ")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _status_error(provider: str, response: httpx.Response, reason: str) -> ChannelError:
    status = response.status_code
    return ChannelError("email", f"{provider} {status}: {reason}",
                        retryable=status >= 500 or status == 408)


class SendGridChannel(EspChannel):
    """SendGrid v3 `POST /v3/mail/send`."""

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.esp.api_key}"}

    def _request(self, parts: EmailParts, message: Message) -> tuple[str, bytes]:
        sender = parts.sender
        content = []
        if parts.text:
            content.append({"type": "text/plain", "value": parts.text})
        if parts.html:
            content.append({"type": "text/html", "value": parts.html})
        if not content:  # SendGrid refuses an empty body
            content.append({"type": "text/plain", "value": " "})
        custom = {KEY_FIELD: parts.key, "outbox_id": str(message.outbox_id)}
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": parts.to}], "custom_args": custom}],
            "from": _named(sender.envelope_from, sender.from_name),
            "subject": parts.subject or " ",
            "content": content,
            "headers": _extra_headers(parts),
        }
        if parts.reply_to:
            body["reply_to"] = {"email": _bare(parts.reply_to)}
        return "/v3/mail/send", orjson.dumps(body)

    def _accepted(self, response: httpx.Response) -> str | None:
        if response.status_code != 202:
            return None
        ref = response.headers.get("X-Message-Id")
        return ref or None

    def _refusal(self, response: httpx.Response) -> ChannelError:
        status = response.status_code
        if status == 202:
            return ChannelError("email", "sendgrid 202 without X-Message-Id: the message may "
                                "have been queued; check SendGrid's activity before replaying",
                                retryable=False)
        errors = _json(response).get("errors")
        listed = "; ".join(
            (f"{e.get('field')}: " if e.get("field") else "") + str(e.get("message", ""))
            for e in errors if isinstance(e, dict)) if isinstance(errors, list) else ""
        detail = listed or _snippet(response)
        if status in (401, 403):
            return ChannelError("email", f"sendgrid {status}: {detail} (check "
                                "CADENZA_SENDGRID_API_KEY: it needs the Mail Send permission)",
                                retryable=False)
        if status == 413:
            return ChannelError("email", f"sendgrid 413: the message is too large for "
                                f"SendGrid (30 MB at most): {detail}", retryable=False)
        return _status_error("sendgrid", response, detail)


class PostmarkChannel(EspChannel):
    """Postmark `POST /email`."""

    def _auth_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.esp.api_key}

    def _request(self, parts: EmailParts, message: Message) -> tuple[str, bytes]:
        body: dict[str, Any] = {
            "From": _display(parts.sender.from_name, parts.sender.envelope_from),
            "To": parts.to, "Subject": parts.subject,
            "Headers": [{"Name": k, "Value": v} for k, v in _extra_headers(parts).items()],
            "Metadata": {KEY_FIELD: parts.key, "outbox_id": str(message.outbox_id)},
            "MessageStream": (self.esp.transactional_stream if message.transactional
                              else self.esp.broadcast_stream),
        }
        if parts.html:
            body["HtmlBody"] = parts.html
        if parts.text or not parts.html:
            body["TextBody"] = parts.text or " "
        if parts.reply_to:
            body["ReplyTo"] = parts.reply_to
        return "/email", orjson.dumps(body)

    def _accepted(self, response: httpx.Response) -> str | None:
        if response.status_code != 200:
            return None
        body = _json(response)
        ref = body.get("MessageID")
        return str(ref) if body.get("ErrorCode") == 0 and ref else None

    def _refusal(self, response: httpx.Response) -> ChannelError:
        status = response.status_code
        body = _json(response)
        code = body.get("ErrorCode")
        text = str(body.get("Message") or _snippet(response))
        if status == 401 or code == 10:
            return ChannelError("email", f"postmark {status}: {text} (check "
                                "CADENZA_POSTMARK_SERVER_TOKEN: a server token, not an "
                                "account token)", retryable=False)
        if status == 422 and code == 406:
            return Undeliverable("email", f"postmark 422 (406): {text}")
        if status == 422:
            return ChannelError("email", f"postmark 422 (ErrorCode {code}): {text}",
                                retryable=False)
        if status == 200:
            return ChannelError("email", f"postmark 200 with ErrorCode {code}: {text}",
                                retryable=False)
        return _status_error("postmark", response, text)


def _extra_headers(parts: EmailParts) -> dict[str, str]:
    """Headers the ESP passes through: ours and the list headers (already one line each)."""
    headers = {"X-Cadenza-Key": mime.header_text(parts.key),
               "X-Cadenza-Message-ID": parts.message_id}
    headers.update(parts.list_headers)
    return headers


def _named(address: str, name: str) -> dict[str, str]:
    return {"email": address, "name": name} if name else {"email": address}


def _display(name: str, address: str) -> str:
    """`"Name" <address>` as JSON APIs take it (UTF-8 names as they are, quotes escaped)."""
    if not name:
        return address
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'


def _bare(mailbox: str) -> str:
    return mailbox.rsplit("<", 1)[-1].rstrip(">") if "<" in mailbox else mailbox


def create(provider: str, deps: ChannelDeps, senders: SenderBook) -> EspChannel:
    """The channel of `provider` configured by the settings; ConfigError when it lacks
    its key."""
    try:
        esp = EspOptions.from_settings(provider, deps.settings)
    except ValueError as exc:
        name = ("SENDGRID_API_KEY" if provider == "sendgrid" else "POSTMARK_SERVER_TOKEN") \
            if "key" in str(exc) else f"{provider.upper()}_BASE_URL"
        raise ConfigError(f"CADENZA_{name}", str(exc)) from None
    kind = SendGridChannel if provider == "sendgrid" else PostmarkChannel
    return kind(esp, deps.smtp, deps.clock, senders=senders)
