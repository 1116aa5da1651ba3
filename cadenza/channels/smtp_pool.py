"""A pool of SMTP connections, reused across dispatch batches.

Up to `pool_size` connections carry mail in parallel, one transaction at a time each. A
connection goes back to the pool after a transaction that ended with a server reply (even
a refusal: aiosmtplib resets the envelope), and is dropped after anything that leaves its
state unknown (a timeout, a disconnect, a 421); the next send opens a fresh one. Idle
connections are closed after `idle_timeout_s`, by a timer and again before reuse.

Connections belong to the event loop that opened them. A channel used from another loop
later (a CLI command after another, a test) finds the old ones gone and opens new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib

from cadenza.channels.options import SmtpOptions


@dataclass
class PooledConnection:
    """One open SMTP connection and when it was last used."""

    smtp: aiosmtplib.SMTP
    last_used: float
    broken: bool = field(default=False)
    """Set by the user when the connection's state is unknown: it is closed, not reused."""


class SmtpPool:
    """At most `options.pool_size` open connections to one SMTP server."""

    def __init__(self, options: SmtpOptions, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self._monotonic = monotonic
        self._idle: list[PooledConnection] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self.connections_opened = 0
        """Connections opened so far (for tests and metrics)."""

    def connection(self) -> _Lease:
        """A connection for one transaction (`async with`); back to the pool afterwards
        unless broken."""
        return _Lease(self)

    def _give_back(self, conn: PooledConnection) -> None:
        if conn.broken or not conn.smtp.is_connected:
            conn.smtp.close()
        else:
            conn.last_used = self._monotonic()
            self._idle.append(conn)

    @property
    def idle(self) -> int:
        """Open connections waiting for a transaction."""
        return len(self._idle)

    async def _take(self) -> PooledConnection:
        now = self._monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.smtp.is_connected and now - conn.last_used < self.options.idle_timeout_s:
                return conn
            conn.smtp.close()
        return PooledConnection(await self._open(), now)

    async def _open(self) -> aiosmtplib.SMTP:
        o = self.options
        # STARTTLS and AUTH are done here rather than inside `connect`, so that a failed
        # upgrade closes the plain socket under it (aiosmtplib leaves that one to the GC).
        smtp = aiosmtplib.SMTP(hostname=o.host, port=o.port, use_tls=o.implicit_tls,
                               start_tls=False, timeout=o.timeout_s,
                               tls_context=self._tls_context())
        plain: asyncio.BaseTransport | None = None
        try:
            await smtp.connect()
            await _hello(smtp)
            if o.starttls:
                plain = smtp.transport
                await smtp.starttls(tls_context=self._tls_context())
                await _hello(smtp)
            if o.username is not None and o.password is not None:
                await smtp.login(o.username, o.password)
        except BaseException:
            smtp.close()
            if plain is not None and not plain.is_closing():
                plain.close()
            raise
        self.connections_opened += 1
        return smtp

    def _tls_context(self) -> ssl.SSLContext | None:
        if not (self.options.starttls or self.options.implicit_tls):
            return None
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.options.ca_file)
        return self._tls

    def schedule_reap(self) -> None:
        """Close connections still idle `idle_timeout_s` from now (call after a batch)."""
        if self._loop is None or self._loop.is_closed():
            return
        if self._reaper is not None:
            self._reaper.cancel()
        self._reaper = self._loop.call_later(self.options.idle_timeout_s, self.reap)

    def reap(self) -> None:
        """Close the connections idle for `idle_timeout_s` or longer."""
        now = self._monotonic()
        keep = []
        for conn in self._idle:
            if now - conn.last_used >= self.options.idle_timeout_s:
                conn.smtp.close()
            else:
                keep.append(conn)
        self._idle = keep

    async def close(self) -> None:
        """Say QUIT on every idle connection and close it."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, []
        if self._loop is not asyncio.get_running_loop():
            _abandon(idle)
            return

        async def quit_one(conn: PooledConnection) -> None:
            try:
                await conn.smtp.quit(timeout=min(5.0, self.options.timeout_s))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                conn.smtp.close()

        await asyncio.gather(*(quit_one(c) for c in idle))

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            # The connections of a previous loop cannot be used from this one.
            _abandon(self._idle)
            self._idle = []
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
            self._slots = asyncio.Semaphore(self.options.pool_size)
            self._loop = loop
        return self._slots


class _Lease:
    """One use of a pooled connection: a slot, then a connection (an idle one or a new one).

    A class rather than a generator-based context manager: it runs for every message."""

    __slots__ = ("_conn", "_pool", "_slots")

    def __init__(self, pool: SmtpPool) -> None:
        self._pool = pool
        self._slots: asyncio.Semaphore | None = None
        self._conn: PooledConnection | None = None

    async def __aenter__(self) -> PooledConnection:
        slots = self._pool._bind()
        await slots.acquire()
        try:
            self._conn = await self._pool._take()
        except BaseException:
            slots.release()
            raise
        self._slots = slots
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        conn, slots = self._conn, self._slots
        assert conn is not None
        assert slots is not None
        # A reply leaves the connection usable (the envelope was reset); a timeout, a
        # disconnect or a cancellation leaves its state unknown.
        if exc is not None and not isinstance(exc, aiosmtplib.SMTPResponseException):
            conn.broken = True
        try:
            self._pool._give_back(conn)
        finally:
            slots.release()


async def _hello(smtp: aiosmtplib.SMTP) -> None:
    if smtp.is_ehlo_or_helo_needed:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            await smtp.helo()


async def transaction(smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes,
                      timeout_s: float) -> None:
    """One mail transaction (MAIL, RCPT, DATA) for addresses already checked by
    `mime.check_address`, within `timeout_s` in all; raises aiosmtplib's reply errors
    after resetting the envelope, TimeoutError when the server is too slow.

    aiosmtplib's `sendmail` parses every address again on each call and runs each command
    under a timeout of its own (a task per command); at thousands of messages per second
    that was most of the client's time. These addresses are plain `local@domain` already,
    and one deadline covers the transaction."""
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("the connection was closed")
    # Straight to the protocol: the client's wrappers check the connection and the EHLO
    # state again for each command, which this pool has done when it opened the connection.
    async with asyncio.timeout(timeout_s):
        reply = await protocol.execute_command(
            b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", timeout=None)
        if reply.code != 250:
            await _reset(smtp)
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        reply = await protocol.execute_command(
            b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", timeout=None)
        if reply.code not in (250, 251):
            await _reset(smtp)
            raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
        try:
            await protocol.execute_data_command(data, timeout=None)
        except aiosmtplib.SMTPResponseException:
            await _reset(smtp)
            raise


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refusal, so the connection can carry the next transaction."""
    if not smtp.is_connected:
        return
    with contextlib.suppress(aiosmtplib.SMTPResponseException, ConnectionError):
        await smtp.rset(timeout=None)


def _abandon(connections: list[PooledConnection]) -> None:
    for conn in connections:
        with contextlib.suppress(RuntimeError):  # its loop is closed already
            conn.smtp.close()
