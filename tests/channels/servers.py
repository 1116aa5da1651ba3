"""Real receivers on loopback for delivery tests: an HTTP endpoint that honours
`Idempotency-Key`, and an SMTP server (aiosmtpd) that records what it accepts."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    """One request the HTTP receiver answered."""

    path: str
    key: str | None
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes = b""
    """The body byte for byte (to verify signatures over exactly what was sent)."""


@dataclass
class HttpReceiver:
    """Answers POSTs; `plan[key]` lists statuses to answer first (then 200). A 2xx answer
    applies the key's effect once: `effects[key]` counts effects, `requests` every call."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    effects: Counter[str] = field(default_factory=Counter)
    plan: dict[str, list[int]] = field(default_factory=dict)
    always: int | None = None
    """When set, every request gets this status."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, key: str | None, body: dict[str, Any],
               headers: dict[str, str], raw: bytes = b"") -> int:
        with self.lock:
            planned = self.plan.get(key or "")
            status = self.always or (planned.pop(0) if planned else 200)
            self.requests.append(Received(path, key, status, body, headers, raw))
            if 200 <= status < 300 and key is not None and key not in self.effects:
                self.effects[key] += 1
            return status

    def keys_seen(self) -> Counter[str]:
        """Requests per idempotency key."""
        with self.lock:
            return Counter(r.key for r in self.requests if r.key is not None)


def _handler(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path.startswith("/slow"):
                time.sleep(1.0)
            body = orjson.loads(raw) if raw else {}
            key = self.headers.get("Idempotency-Key")
            status = receiver.answer(self.path, key, body, dict(self.headers.items()), raw)
            if self.path.startswith("/big"):
                self.send_response(status)
                self.send_header("Content-Length", str(50 * 1024 * 1024))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    for _ in range(800):
                        self.wfile.write(chunk)
                except OSError:
                    pass  # the client stopped reading, as it should
                return
            reply = b'{"ok": true}' if status < 400 else b'{"error": "nope"}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client gave up waiting (a timeout test)

    return Handler


class _Server(ThreadingHTTPServer):
    # The dispatcher opens up to 16 connections at once; with the default backlog of 5 the
    # kernel drops some of them and httpx reports a ReadError (a retry 30 s later).
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server running `handler` on a free loopback port, for the duration of the
    block; yields its base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    """A receiver on a free loopback port, for the duration of the block."""
    receiver = HttpReceiver()
    with serving(_handler(receiver)) as url:
        receiver.url = url
        yield receiver


@dataclass
class Mail:
    """One accepted message."""

    rcpt: str
    message_id: str
    subject: str
    mime: EmailMessage


@dataclass
class SmtpSink:
    """What the SMTP server accepted, and how to make it refuse."""

    port: int = 0
    mails: list[Mail] = field(default_factory=list)
    connections: int = 0
    data_replies: dict[str, list[str]] = field(default_factory=dict)
    """Replies to DATA for a recipient, used in order before accepting (e.g. '451 ...')."""
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    """A permanent reply to RCPT for a recipient (e.g. '550 5.1.1 no such user')."""

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0]
        planned = self.data_replies.get(rcpt)
        if planned:
            return planned.pop(0)
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        mime = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(mime, EmailMessage)
        self.mails.append(Mail(rcpt, str(mime["Message-ID"]), str(mime["Subject"]), mime))
        return "250 2.0.0 Ok: queued"


class _CountingController(Controller):
    def __init__(self, sink: SmtpSink, port: int) -> None:
        super().__init__(sink, hostname="127.0.0.1", port=port,
                         server_hostname="smtp.test")
        self.sink = sink

    def factory(self) -> SMTP:
        self.sink.connections += 1
        return super().factory()  # type: ignore[no-any-return]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """An aiosmtpd server on a free loopback port, for the duration of the block."""
    sink = SmtpSink(port=free_port())
    controller = _CountingController(sink, sink.port)
    controller.start()
    sink.connections = 0  # the controller's own start-up probe is not a client
    try:
        yield sink
    finally:
        controller.stop()
