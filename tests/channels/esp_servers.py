"""Loopback ESP APIs speaking the documented subset: SendGrid v3 `POST /v3/mail/send` and
Postmark `POST /email`, with their request validation, answers and error bodies.

SendGrid: Bearer key or 401 `{"errors": [...]}`; personalizations/to, from.email, subject,
content (text/plain before text/html, values not empty), string headers that are not
reserved, string custom_args — else 400 `{"errors": [{"message", "field"}]}`; 202 with an
`X-Message-Id` header. Postmark: `X-Postmark-Server-Token` or 401 ErrorCode 10; JSON
required (422 ErrorCode 409); From, To and a body (422 ErrorCode 300); a known message
stream (422 ErrorCode 1235); inactive recipients (422 ErrorCode 406); 200 with
`{"ErrorCode": 0, "MessageID": ...}`. `plan` holds (status, headers, body) answers to give
first, for 429, 5xx and the like.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from tests.channels.servers import serving

SENDGRID_KEY = "SG.test-key"
POSTMARK_TOKEN = "pm-server-token"
RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
            "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"}
STREAMS = {"outbound", "broadcast"}

Answer = tuple[int, dict[str, str], dict[str, Any] | None]


@dataclass
class EspServer:
    """What the loopback ESP received and accepted."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request: path, headers and JSON body."""
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(message id, body) of each accepted message."""
    plan: list[Answer] = field(default_factory=list)
    inactive: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sendgrid(server: EspServer, headers: dict[str, str], body: Any) -> Answer:
    if headers.get("authorization") != f"Bearer {SENDGRID_KEY}":
        return 401, {}, {"errors": [{"field": None, "message": "The provided authorization "
                                     "grant is invalid, expired, or revoked"}]}
    errors = _sendgrid_errors(body)
    if errors:
        return 400, {}, {"errors": [{"message": m, "field": f} for f, m in errors]}
    ref = uuid.uuid4().hex[:22]
    server.accepted.append((ref, body))
    return 202, {"X-Message-Id": ref}, None


def _sendgrid_errors(body: Any) -> list[tuple[str, str]]:
    if not isinstance(body, dict):
        return [("", "The request body must be a JSON object.")]
    errors = []
    people = body.get("personalizations")
    if not isinstance(people, list) or not people:
        errors.append(("personalizations", "The personalizations field is required and "
                       "must have at least one personalization."))
    else:
        for i, person in enumerate(people):
            to = person.get("to") if isinstance(person, dict) else None
            if not isinstance(to, list) or not to or not all(
                    isinstance(t, dict) and "@" in str(t.get("email", "")) for t in to):
                errors.append((f"personalizations.{i}.to", "The to array is required for "
                               "all personalization objects, and must have at least one "
                               "email object with a valid email address."))
            args = person.get("custom_args", {}) if isinstance(person, dict) else {}
            if not all(isinstance(v, str) for v in args.values()):
                errors.append((f"personalizations.{i}.custom_args",
                               "Custom args values must be strings."))
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        errors.append(("from.email", "The from email does not contain a valid address."))
    if not str(body.get("subject", "")).strip():
        errors.append(("subject", "The subject is required. You can get around this "
                       "requirement if you use a template with a subject defined."))
    content = body.get("content")
    if not isinstance(content, list) or not content:
        errors.append(("content", "Unless a valid template_id is provided, the content "
                       "parameter is required."))
    else:
        kinds = [c.get("type") for c in content if isinstance(c, dict)]
        if "text/plain" in kinds and kinds.index("text/plain") != 0:
            errors.append(("content", "If present, text/plain must be first."))
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not part.get("value"):
                errors.append((f"content.{i}.value", "The content value must be a string "
                               "at least one character in length."))
    for name, value in (body.get("headers") or {}).items():
        if name.lower() in RESERVED:
            errors.append((f"headers.{name}", f"The header {name} is reserved."))
        elif not isinstance(value, str):
            errors.append((f"headers.{name}", "Header values must be strings."))
    return errors


def _postmark(server: EspServer, headers: dict[str, str], body: Any) -> Answer:
    if headers.get("x-postmark-server-token") != POSTMARK_TOKEN:
        return 401, {}, {"ErrorCode": 10, "Message": "Request does not contain a valid "
                         "Server token."}
    if "application/json" not in headers.get("content-type", "") or "application/json" \
            not in headers.get("accept", ""):
        return 422, {}, {"ErrorCode": 409, "Message": "JSON required."}
    if not isinstance(body, dict) or not body.get("From") or not body.get("To"):
        return 422, {}, {"ErrorCode": 300, "Message": "Invalid email request: From and To "
                         "are required."}
    if not (body.get("HtmlBody") or body.get("TextBody")):
        return 422, {}, {"ErrorCode": 300, "Message": "Provide either email TextBody or "
                         "HtmlBody or both."}
    stream = body.get("MessageStream", "outbound")
    if stream not in STREAMS:
        return 422, {}, {"ErrorCode": 1235, "Message": f"The message stream '{stream}' "
                         "was not found."}
    if body["To"] in server.inactive:
        return 422, {}, {"ErrorCode": 406, "Message": "You tried to send to recipient(s) "
                         "that have been marked as inactive. Found inactive addresses: "
                         f"{body['To']}."}
    if not all(isinstance(h, dict) and set(h) == {"Name", "Value"}
               for h in body.get("Headers", [])):
        return 422, {}, {"ErrorCode": 300, "Message": "Invalid 'Headers' value."}
    ref = str(uuid.uuid4())
    server.accepted.append((ref, body))
    return 200, {}, {"To": body["To"], "SubmittedAt": "2026-01-01T00:00:00Z",
                     "MessageID": ref, "ErrorCode": 0, "Message": "OK"}


def _handler(server: EspServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body: Any = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = None
            with server.lock:
                server.requests.append({"path": self.path, "headers": headers, "body": body})
                if server.plan:
                    status, extra, reply = server.plan.pop(0)
                elif self.path == "/v3/mail/send":
                    status, extra, reply = _sendgrid(server, headers, body)
                elif self.path == "/email":
                    status, extra, reply = _postmark(server, headers, body)
                else:
                    status, extra, reply = 404, {}, {"errors": [{"message": "not found"}]}
            data = orjson.dumps(reply) if reply is not None else b""
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def esp_server() -> Iterator[EspServer]:
    """Both APIs on one free loopback port, for the duration of the block."""
    state = EspServer()
    with serving(_handler(state)) as url:
        state.url = url
        yield state
