"""The production wiring for end-to-end tests: Settings, the app on a real loopback server,
a dispatcher from `dispatcher_from_settings`, and a DSN built the way an MTA builds one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import httpx
import sqlalchemy as sa

from cadenza.api import create_app
from cadenza.clock import FakeClock
from cadenza.engine import Engine
from cadenza.engine.dispatch import DispatchReport, dispatcher_from_settings
from cadenza.events import EventService
from cadenza.journeys import JourneyService
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.api.support import serving_app

SECRET = "end-to-end-secret-0123456789-0123456789-abcdef"
PUBLIC = "https://mail.example.org"
"""`public_url`: https, so that email carries the RFC 8058 one-click header."""
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
DAY = 86_400_000


def e2e_settings(store_url: str, **overrides: Any) -> Settings:
    """Settings as an operator writes them: the test store, a public URL, no background
    engine in the app (the test steps the engine itself)."""
    values: dict[str, Any] = {"database_url": store_url, "secret_key": SECRET,
                              "key_cache_seconds": 0, "engine": False, "public_url": PUBLIC,
                              "smtp_host": "127.0.0.1", "smtp_pool_size": 1,
                              "smtp_timeout_s": 5, "track_opens": True, "track_clicks": True}
    values.update(overrides)
    return Settings.load(**values)


@contextmanager
def serve_app(settings: Settings, store: Store, clock: FakeClock) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server on loopback; a client of it (relative paths)."""
    with serving_app(create_app(settings, store=store, clock=clock)) as url, \
            httpx.Client(base_url=url, timeout=10, headers={"User-Agent": BROWSER}) as http:
        yield http


def public_path(url: str) -> str:
    """The path of a link this server handed out (it must be under `public_url`)."""
    assert url.startswith(PUBLIC + "/"), url
    return url.removeprefix(PUBLIC)


def publish(store: Store, clock: FakeClock, text: str) -> None:
    """Save and publish a journey the way the API and CLI do (templates checked)."""
    journeys = JourneyService(store, clock)
    version = journeys.save_draft(text)
    journeys.publish(version.key)


def start_engine(store: Store, clock: FakeClock) -> Engine:
    """An engine on the fake clock."""
    engine = Engine(store, clock, batch_size=1_000)
    engine.start()
    return engine


def identify(events: EventService, user: str, **traits: Any) -> int:
    """An identify call; the contact's id."""
    result = events.ingest([{"type": "identify", "userId": user, "messageId": f"id-{user}",
                             "traits": traits}])
    assert not result.rejected, result.rejected
    return int(result.contact_ids[0])


def track(events: EventService, user: str, name: str, message_id: str) -> None:
    """A track call."""
    result = events.ingest([{"type": "track", "userId": user, "event": name,
                             "messageId": message_id}])
    assert not result.rejected, result.rejected


def dispatch(store: Store, clock: FakeClock, settings: Settings) -> DispatchReport:
    """Everything due, delivered by a dispatcher wired like production (one worker run)."""

    async def run() -> DispatchReport:
        dispatcher = dispatcher_from_settings(store, clock, settings)
        total = DispatchReport()
        try:
            while True:
                report = await dispatcher.run_once()
                total = total.merged(report)
                if report.claimed == 0:
                    return total
        finally:
            await dispatcher.close()

    return asyncio.run(run())


def outbox_by_node(store: Store) -> dict[str, dict[str, Any]]:
    """Outbox rows by journey step (each test's steps send once per contact)."""
    o = schema.outbox
    with store.read() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(o).order_by(o.c.id)).mappings()]
    by_node = {str(r["node"]): r for r in rows}
    assert len(by_node) == len(rows), "a step wrote more than one row"
    return by_node


def events_named(store: Store, name: str) -> list[dict[str, Any]]:
    """Stored events called `name`, oldest first."""
    e = schema.events
    with store.read() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(e.c.contact_id, e.c.properties, e.c.source)
            .where(e.c.name == name).order_by(e.c.id)).mappings()]


def build_dsn(original: EmailMessage, rcpt: str, *, status: str = "5.1.1",
              report_id: str = "<dsn-1@mx.example.net>") -> bytes:
    """A delivery status notification (RFC 3464) for `original`, as a receiving MTA sends
    it back: a human-readable part, the machine-readable status, and the returned message."""
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {rcpt}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; 550 {status} mailbox does not exist"
    delivery_status = MIMEBase("message", "delivery-status")
    delivery_status.set_payload([per_message, per_recipient])
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net"
    report["To"] = "bounces@example.org"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = report_id
    report.attach(MIMEText(f"Your message to <{rcpt}> could not be delivered.\n"))
    report.attach(delivery_status)
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def header_map(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names in lower case (what `standardwebhooks` looks up)."""
    return {k.lower(): v for k, v in headers.items()}
