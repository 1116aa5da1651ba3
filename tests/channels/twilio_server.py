"""A Twilio-compatible Messages API on loopback, speaking the documented subset:

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   (form: To, From|MessagingServiceSid,
                                                            Body, StatusCallback; HTTP Basic)
    201 {"sid": "SM...", "status": "queued", "num_segments": "1", ...}
    400 {"code": 21211, "message": "...", "more_info": "...", "status": 400}   and 21602,
        21603, 21604, 21610, 21614 as Twilio answers them
    401 {"code": 20003, ...}   wrong credentials;   404 {"code": 20404, ...}   other account
    429 with Retry-After;  500 on demand

Behaviour per destination number is set by the test: `errors[number] = code`, `statuses[number]
= [429, 500, ...]` answered in order before accepting.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tests.channels.servers import serving

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
FROM = "+15005550006"
MESSAGES = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number: {to}.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
}
GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTU"
          "VWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà\f^{}\\[~]|€")


@dataclass
class Sent:
    """One message the server accepted."""

    sid: str
    form: dict[str, str]


@dataclass
class TwilioServer:
    """What the server accepted, and how it should answer."""

    url: str = ""
    sent: list[Sent] = field(default_factory=list)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Destination number -> Twilio error code to answer with (400)."""
    statuses: dict[str, list[int]] = field(default_factory=dict)
    """Destination number -> HTTP statuses (429, 500) to answer first, in order."""
    retry_after: str = "7"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, auth: str, form: dict[str, str]) -> tuple[int, dict[str, Any],
                                                                            dict[str, str]]:
        with self.lock:
            self.requests += 1
            expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()
                                                   ).decode()
            if auth != expected:
                return _error(401, 20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
            if path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
                return _error(404, 20404)
            to = form.get("To", "")
            if not to:
                return _error(400, 21604)
            if not form.get("From") and not form.get("MessagingServiceSid"):
                return _error(400, 21603)
            if not form.get("Body"):
                return _error(400, 21602)
            planned = self.statuses.get(to)
            if planned:
                status = planned.pop(0)
                headers = {"Retry-After": self.retry_after} if status == 429 else {}
                return _error(status, 20429 if status == 429 else 20500, headers=headers)
            if not to.startswith("+") or not to[1:].isdigit():
                return _error(400, 21211, to)
            if to in self.errors:
                return _error(400, self.errors[to], to)
            sid = "SM" + hashlib.sha256(f"{len(self.sent)}:{to}".encode()).hexdigest()[:32]
            self.sent.append(Sent(sid, form))
            return 201, _message(sid, form), {}


def _segments(body: str) -> int:
    if all(ch in GSM for ch in body):
        units = sum(2 if ch in "\f^{}\\[~]|€" else 1 for ch in body)
        return 1 if units <= 160 else math.ceil(units / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def _message(sid: str, form: dict[str, str]) -> dict[str, Any]:
    return {"sid": sid, "account_sid": ACCOUNT_SID, "to": form["To"],
            "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"], "status": "queued",
            "num_segments": str(_segments(form["Body"])), "direction": "outbound-api",
            "api_version": "2010-04-01", "error_code": None, "error_message": None,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"}


def _error(status: int, code: int, to: str = "", headers: dict[str, str] | None = None
           ) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"code": code, "message": MESSAGES.get(code, "Internal error").format(to=to),
                    "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}, headers or {}


def _handler(server: TwilioServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
            status, body, headers = server.answer(self.path, self.headers.get(
                "Authorization", ""), form)
            reply = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply)

    return Handler


@contextmanager
def twilio_server() -> Iterator[TwilioServer]:
    """The fake Twilio API on a free loopback port, for the duration of the block."""
    state = TwilioServer()
    with serving(_handler(state)) as url:
        state.url = url
        yield state
