"""The `sms` channel: text messages through a Twilio-compatible REST API.

    POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json      (HTTP Basic sid:token)
    To, From | MessagingServiceSid, Body, StatusCallback            (form-encoded)
    201 {"sid": "SM...", "status": "queued", ...}                   -> provider_ref = sid

Twilio has no idempotency key, so the dispatcher records each accepted message at once
(`record_each`) and a failure after the request left is never retried blindly: a timeout while
waiting for the answer dead-letters the row with a note to check Twilio's log before replaying,
since retrying could text the person twice. Errors are classified as Twilio documents them:

    400 code 21211 (invalid To), 21614 (not a mobile number)   undeliverable: row cancelled
    400 code 21610 (recipient replied STOP)                     cancelled + SMS opt-out recorded
    400 other codes                                             failed, not retried
    401 / 403 / 404                                             failed, not retried (settings)
    429                                                         retried after Retry-After
    5xx, connection refused or reset before sending             retried

The text is the rendered `body` (a template for channel sms, or inline `params.body`). Its
encoding and segment count (GSM-7 or UCS-2, see `smsparts`) are recorded with the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.channels.base import ChannelDeps, ChannelSpec, check_known, check_text
from cadenza.channels.errors import ChannelError, Undeliverable
from cadenza.channels.models import Message, SendResult
from cadenza.channels.options import SmsOptions
from cadenza.channels.smsparts import measure
from cadenza.channels.webhook import retry_after_ms
from cadenza.contacts.consent import ConsentChange, ConsentStatus, record_consent
from cadenza.store import Store, schema

logger = logging.getLogger("cadenza.channels.sms")

_KNOWN = frozenset({"body"})
MAX_BODY = 1600
"""Twilio's limit on a message body, in characters."""
UNDELIVERABLE_CODES = {
    21211: "the 'To' number is not a valid phone number",
    21614: "the 'To' number is not a mobile number and cannot receive SMS",
    21610: "the recipient has replied STOP to this sender (opted out)",
}
OPTED_OUT_CODE = 21610
SMS_PURPOSES = ("marketing", "transactional")
"""Purposes a STOP opts out of in any case (besides every purpose the contact has on record)."""


def check_params(params: Mapping[str, Any], where: str) -> None:
    """Inline `body` (a template source; when no template is named) is optional."""
    check_known(params, where, _KNOWN)
    check_text(params, where, "body", max_length=16 * 1024)


def opt_out_of_sms(conn: Connection, contact_id: int, at: int, source: str) -> int:
    """Record an SMS opt-out for every purpose of the contact (all they have on record, and
    marketing and transactional); returns how many consents changed."""
    c = schema.consents
    purposes = set(SMS_PURPOSES) | set(conn.execute(
        sa.select(c.c.purpose).where(c.c.contact_id == contact_id,
                                     c.c.channel == "sms")).scalars())
    return record_consent(conn, [
        ConsentChange(contact_id, "sms", purpose, ConsentStatus.OPTED_OUT, source, at)
        for purpose in sorted(purposes)])


class SmsChannel:
    """Sends through one Twilio account; one HTTP connection pool for the channel's life."""

    name = "sms"
    text_fields: tuple[str, ...] = ("body",)
    record_each = True
    address_kind: str | None = "phone"

    def __init__(self, options: SmsOptions | None = None, store: Store | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options or SmsOptions()
        self._store = store
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def check_params(self, params: Mapping[str, Any], where: str) -> None:
        """See the module's `check_params`."""
        check_params(params, where)

    @property
    def messages_url(self) -> str:
        """The Messages resource of the configured account."""
        base = self.options.base_url.rstrip("/")
        return f"{base}/2010-04-01/Accounts/{self.options.account_sid}/Messages.json"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            o = self.options
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(o.timeout_s), follow_redirects=False, trust_env=False,
                transport=self._transport, auth=(o.account_sid or "", o.auth_token or ""),
                headers={"User-Agent": "Cadenza-SMS/1", "Accept": "application/json"})
        return self._client

    def form(self, message: Message) -> dict[str, str]:
        """The form fields of the API request for `message`."""
        o = self.options
        if not o.configured:
            raise ChannelError("sms", "SMS is not configured: set CADENZA_TWILIO_ACCOUNT_SID, "
                               "CADENZA_TWILIO_AUTH_TOKEN and CADENZA_TWILIO_FROM (or "
                               "CADENZA_TWILIO_MESSAGING_SERVICE_SID), then replay the row",
                               retryable=False)
        if not message.address:
            raise Undeliverable("sms", f"contact {message.contact.id} has no phone number")
        body = str(message.content.get("body", ""))
        if not body.strip():
            raise ChannelError("sms", "the message body is empty; give the template or the "
                               "step's `body` some text", retryable=False)
        if len(body) > MAX_BODY:
            raise ChannelError("sms", f"the message is {len(body)} characters; Twilio takes at "
                               f"most {MAX_BODY}", retryable=False)
        fields = {"To": message.address, "Body": body}
        if o.messaging_service_sid:
            fields["MessagingServiceSid"] = o.messaging_service_sid
        else:
            fields["From"] = o.from_number or ""
        if o.status_callback:
            fields["StatusCallback"] = o.status_callback
        return fields

    async def send(self, message: Message) -> SendResult:
        """Create the message at Twilio; the provider reference is its SID."""
        fields = self.form(message)
        parts = measure(fields["Body"])
        try:
            response = await self._http().post(self.messages_url, data=fields)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ChannelError("sms", f"Twilio unreachable: {type(exc).__name__}: {exc}",
                               retryable=True) from None
        except httpx.HTTPError as exc:
            # The request may have reached Twilio: retrying could text the person twice.
            raise ChannelError("sms", f"no answer from Twilio after sending "
                               f"({type(exc).__name__}); the message may have been sent: check "
                               "the Twilio log before replaying", retryable=False) from None
        answer = _json(response)
        if response.status_code in (200, 201):
            sid = answer.get("sid")
            if not isinstance(sid, str) or not sid:
                raise ChannelError("sms", f"Twilio answered {response.status_code} without a "
                                   "message sid; check the Twilio log before replaying",
                                   retryable=False)
            return SendResult(provider_ref=sid, details={"sms": {
                **parts.to_dict(), "num_segments": answer.get("num_segments")}})
        raise await self._failure(message, response, answer)

    async def _failure(self, message: Message, response: httpx.Response,
                       answer: Mapping[str, Any]) -> ChannelError:
        status = response.status_code
        code = answer.get("code")
        text = str(answer.get("message") or response.reason_phrase)[:300]
        described = f"Twilio HTTP {status}" + (f" code {code}" if code else "") + f": {text}"
        if status == 400 and code in UNDELIVERABLE_CODES:
            if code == OPTED_OUT_CODE:
                await self._record_opt_out(message)
            return Undeliverable("sms", f"{UNDELIVERABLE_CODES[code]} ({described})")
        if status in (401, 403):
            return ChannelError("sms", f"{described}; check CADENZA_TWILIO_ACCOUNT_SID and "
                                "CADENZA_TWILIO_AUTH_TOKEN", retryable=False)
        if status == 429 or status >= 500:
            return ChannelError("sms", described, retryable=True, retry_after_ms=retry_after_ms(
                response.headers.get("retry-after"), message.at_ms))
        return ChannelError("sms", described, retryable=False)

    async def _record_opt_out(self, message: Message) -> None:
        store = self._store
        if store is None:
            return

        def work() -> None:
            with store.begin() as conn:
                opt_out_of_sms(conn, message.contact.id, message.at_ms, "twilio:21610")

        try:
            await asyncio.to_thread(work)
        except Exception:  # the send's outcome stands even if the consent write fails
            logger.exception("could not record the SMS opt-out of contact %d",
                             message.contact.id)

    async def end_batch(self) -> None:
        """Connections stay pooled across batches."""

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def create(deps: ChannelDeps) -> SmsChannel:
    """An SMS channel configured from the process settings (`twilio_*`); unconfigured, its
    sends fail with a message naming the settings to set."""
    options = SmsOptions.from_settings(deps.settings) if deps.settings is not None \
        else SmsOptions()
    return SmsChannel(options, store=deps.store)


SPEC = ChannelSpec("sms", check_params, create)
