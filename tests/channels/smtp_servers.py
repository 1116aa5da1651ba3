"""SMTP servers for the email provider tests: TLS (STARTTLS or implicit) with a self-signed
certificate made here, AUTH with a fixed user, and a throttling server that refuses a share
of messages at random and enforces a per-second cap (the issue's reliability bar)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.channels.servers import Mail, SmtpSink, free_port

USER, PASSWORD = "mailer", "s3cret-pass"


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """The TLS context of a server presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path) -> Certificate:
    """Generate the certificate (RSA 2048, valid for a day) in `directory`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file = directory / "smtp-cert.pem"
    key_file = directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(cert_file, key_file)


def _authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535


class _Controller(Controller):
    def __init__(self, sink: Any, port: int, **kwargs: Any) -> None:
        super().__init__(sink, hostname="127.0.0.1", port=port, server_hostname="smtp.test",
                         **kwargs)
        self.sink = sink

    def factory(self) -> SMTP:
        self.sink.connections += 1
        return super().factory()  # type: ignore[no-any-return]


@contextmanager
def secure_sink(certificate: Certificate, *, implicit: bool = False,
                auth: bool = True) -> Iterator[SmtpSink]:
    """An SMTP server that requires STARTTLS (or speaks TLS from the start when
    `implicit`) and, with `auth`, a login as USER/PASSWORD before it accepts mail."""
    sink = SmtpSink(port=free_port())
    context = certificate.server_context()
    kwargs: dict[str, Any] = {"auth_required": auth, "authenticator": _authenticate}
    if implicit:
        # aiosmtpd cannot tell that a connection wrapped by the listener is TLS: it would
        # hide AUTH, which it only offers over TLS. Here every connection is TLS.
        kwargs.update(ssl_context=context, auth_require_tls=False)
    else:
        kwargs.update(tls_context=context, require_starttls=True)
    controller = _Controller(sink, sink.port, **kwargs)
    controller.start()
    sink.connections = 0
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class RawSink(SmtpSink):
    """An SmtpSink that also keeps each accepted message's bytes as received."""

    raw: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            content = envelope.content
            self.raw.append(content if isinstance(content, bytes) else str(content).encode())
        return reply


@contextmanager
def raw_sink(port: int | None = None) -> Iterator[RawSink]:
    """A RawSink on `port` (a free one by default), for the duration of the block."""
    sink = RawSink(port=port or free_port())
    controller = _Controller(sink, sink.port)
    controller.start()
    sink.connections = 0
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class ThrottlingSink:
    """Refuses `refuse_share` of the messages at random with 454 (at RCPT), and enforces a
    cap of `cap` accepted messages per second as providers do, with a token bucket that
    may save up `burst_s` seconds of it (454 "maximum sending rate exceeded" above it, at
    DATA). A refused message does not count against the cap. Counts every attempt and
    what it accepted, by Message-ID."""

    cap: int
    refuse_share: float = 0.2
    burst_s: float = 0.2
    seed: int = 5
    port: int = 0
    connections: int = 0
    attempts: int = 0
    """Transactions that reached RCPT: what the client tried."""
    random_refusals: int = 0
    cap_refusals: int = 0
    accepted: Counter[str] = field(default_factory=Counter)
    """Accepted copies by Message-ID."""
    first_at: float = 0.0
    last_at: float = 0.0
    _tokens: float = -1.0
    _updated: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        with self._lock:
            self.attempts += 1
            if self._rng.random() < self.refuse_share:
                self.random_refusals += 1
                return "454 4.7.0 Temporary failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        head = raw.split(b"\r\n\r\n", 1)[0]
        mid = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                    if line.lower().startswith(b"message-id:")), "")
        with self._lock:
            size = self.cap * self.burst_s
            if self._tokens < 0:
                self._tokens, self._updated = size, now
            self._tokens = min(size, self._tokens + (now - self._updated) * self.cap)
            self._updated = now
            if self._tokens < 1:
                self.cap_refusals += 1
                return "454 4.7.0 Throttling failure: Maximum sending rate exceeded"
            self._tokens -= 1
            self.accepted[mid] += 1
            self.first_at = self.first_at or now
            self.last_at = now
        return "250 2.0.0 Ok: queued"

    def report(self) -> dict[str, Any]:
        """What the server saw, as plain data."""
        with self._lock:
            return {"attempts": self.attempts, "random_refusals": self.random_refusals,
                    "cap_refusals": self.cap_refusals, "accepted": dict(self.accepted),
                    "first_at": self.first_at, "last_at": self.last_at,
                    "connections": self.connections}


def _throttling_main(conn: Any, port: int, cap: int, refuse_share: float) -> None:
    """Child process: run a ThrottlingSink until asked for its report."""
    sink = ThrottlingSink(cap=cap, refuse_share=refuse_share, port=port)
    controller = _Controller(sink, port)
    controller.start()
    sink.connections = 0
    conn.send("ready")
    conn.recv()
    controller.stop()
    conn.send(sink.report())


@dataclass
class ThrottlingServer:
    """A ThrottlingSink running in a process of its own (so that it does not share the
    dispatcher's interpreter lock, as a real server would not)."""

    port: int
    report: dict[str, Any] = field(default_factory=dict)
    """Filled when the block ends: attempts, refusals, accepted by Message-ID, times."""


@contextmanager
def throttling_server(cap: int, refuse_share: float = 0.2) -> Iterator[ThrottlingServer]:
    """A ThrottlingSink on a free loopback port in a child process, for the block."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = ThrottlingServer(free_port())
    process = context.Process(target=_throttling_main,
                              args=(theirs, server.port, cap, refuse_share), daemon=True)
    process.start()
    try:
        if not ours.poll(60) or ours.recv() != "ready":
            raise RuntimeError("the throttling SMTP server did not start")
        yield server
        ours.send("report")
        if ours.poll(60):
            server.report = ours.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def parse(raw: bytes) -> EmailMessage:
    """A received message, parsed."""
    mime = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mime, EmailMessage)
    return mime


__all__ = ["PASSWORD", "USER", "Certificate", "Mail", "RawSink", "ThrottlingServer",
           "ThrottlingSink", "make_certificate", "parse", "raw_sink", "secure_sink",
           "throttling_server"]
