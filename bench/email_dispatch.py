"""Email throughput end to end: outbox rows -> claim -> render -> SMTP -> record.

    uv run python bench/email_dispatch.py [--messages 20000] [--batch 500] [--pool 4]
        [--concurrency 16] [--db PATH]

Builds (untimed) a fresh SQLite store with `--messages` contacts, a personalised HTML email
template with a text part, and one pending outbox row per contact. Starts an aiosmtpd server
in a child process (so the server does not share the dispatcher's core or GIL), then runs the
real `Dispatcher` in batches of `--batch` rows until every row is recorded, and prints the
emails per second delivered (bar: at least 2,000), the messages the server accepted, the
rows recorded as sent, and the SQL statements the dispatcher ran per message.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from cadenza.channels import ChannelDeps, ChannelRegistry, SmtpOptions, TemplateService
from cadenza.clock import SystemClock
from cadenza.engine.dispatch import Dispatcher
from cadenza.engine.retry import RetryPolicy
from cadenza.store import Store, dumps, insert_rows, schema, upgrade

HTML = """<!doctype html><html><body style="font-family: sans-serif">
<h1>Hello {{ contact.attributes.name }}</h1>
<p>Your plan is <b>{{ contact.attributes.plan }}</b>. Here is what is new this week:</p>
<ul>{% for item in ["Faster reports", "Dark mode", "A new API"] %}<li>{{ item }}</li>{% endfor %}
</ul><p><a href="https://example.com/offer?c={{ contact.user_id }}">See the offer</a></p>
<p style="color: #888">You receive this because you signed up.</p></body></html>"""


def sink_main(port: int, accepted: Synchronized[int], ready: Any) -> None:
    """Child process: an aiosmtpd server that accepts everything and counts it.

    It runs on uvloop: the same aiosmtpd protocol code (every command and DATA line read and
    parsed, the envelope built) on a cheaper event loop, so that the test server is not what
    the benchmark measures."""
    import uvloop
    from aiosmtpd.controller import Controller

    class Counting:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if not envelope.content or not envelope.rcpt_tos:
                return "554 5.6.0 empty message"
            with accepted.get_lock():
                accepted.value += 1
            return "250 2.0.0 Ok: queued"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port,
                            server_hostname="bench.local", loop=uvloop.new_event_loop())
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def build(url: str, messages: int) -> Store:
    """A store with `messages` contacts, one template and one pending email row each."""
    upgrade(url)
    store = Store.create(url)
    clock = SystemClock()
    now = clock.now_ms()
    TemplateService(store, clock).save("weekly", "email",
                                       "News for {{ contact.attributes.name }}", HTML)
    with store.begin() as conn:
        insert_rows(conn, schema.contacts, ("id", "email", "user_id", "attributes",
                                            "created_at", "updated_at"),
                    [(i, f"c{i}@bench.test", f"u{i}",
                      dumps({"name": f"Contact {i}", "plan": "pro"}), now, now)
                     for i in range(1, messages + 1)])
        insert_rows(conn, schema.outbox, (
            "idempotency_key", "contact_id", "node", "part", "shadow", "channel", "template",
            "payload", "status", "attempts", "next_attempt_at", "created_at"),
            [(f"bench:{i}", i, "send", 0, False, "email", "weekly",
              dumps({"params": {}, "entry": {}, "journey": "bench", "step": "send"}),
              "pending", 0, now, now) for i in range(1, messages + 1)])
    return store


def count_statements(store: Store) -> list[int]:
    """A counter of the SQL statements the store runs from now on."""
    counter = [0]

    def on_execute(*_: Any) -> None:
        counter[0] += 1

    sa_event.listen(store.engine, "before_cursor_execute", on_execute)
    return counter


async def drain(dispatcher: Dispatcher, batch: int) -> int:
    """Run batches until a batch claims nothing; return rows recorded as sent."""
    sent = 0
    try:
        while True:
            report = await dispatcher.run_once(batch)
            if report.claimed == 0:
                return sent
            sent += report.sent
    finally:
        await dispatcher.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--uvloop", action="store_true",
                        help="run the dispatcher on uvloop (as under `cadenza serve`, whose "
                        "uvicorn picks uvloop when it is installed)")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        store = build(url, args.messages)
        from tests.channels.servers import free_port

        port = free_port()
        accepted: Synchronized[int] = multiprocessing.Value("q", 0)  # type: ignore[assignment]
        ready = multiprocessing.Event()
        sink = multiprocessing.Process(target=sink_main, args=(port, accepted, ready),
                                       daemon=True)
        sink.start()
        ready.wait(30)
        clock = SystemClock()
        smtp = SmtpOptions(host="127.0.0.1", port=port, timeout_s=30)
        deps = ChannelDeps(store, clock, smtp=smtp, settings=_Settings(args.pool))
        dispatcher = Dispatcher(store, clock, ChannelRegistry.build(deps, ["email"]),
                                TemplateService(store, clock), RetryPolicy(),
                                random.Random(1), concurrency=args.concurrency)
        statements = count_statements(store)
        started = time.perf_counter()
        cpu_before = time.process_time()
        sent = asyncio.run(drain(dispatcher, args.batch))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server_cpu = _cpu_seconds(sink.pid)
        sink.terminate()
        sink.join(5)
        with store.read() as conn:
            recorded = conn.execute(sa.select(sa.func.count()).select_from(schema.outbox)
                                    .where(schema.outbox.c.status == "sent")).scalar_one()
        store.dispose()
    rate = sent / seconds
    print(f"messages: {args.messages}  batch: {args.batch}  pool: {args.pool}  "
          f"concurrency: {args.concurrency}  loop: {'uvloop' if args.uvloop else 'asyncio'}")
    print(f"sent: {sent}  recorded sent: {recorded}  accepted by the server: {accepted.value}")
    print(f"seconds: {seconds:.2f}  emails/s: {rate:,.0f}  (bar: 2,000)")
    print(f"SQL statements per message: {statements[0] / max(1, sent):.2f}")
    print(f"CPU seconds: dispatcher process {cpu:.2f}, SMTP server process {server_cpu:.2f}")
    return 0 if rate >= 2000 and recorded == args.messages else 1


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Settings:
    """The few settings the email channel reads (the benchmark's own, not the environment)."""

    def __init__(self, pool: int) -> None:
        self.smtp_pool_size = pool


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
