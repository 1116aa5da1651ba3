"""A minimal keep-alive HTTP/1.1 client for load generation.

httpx's connection pool spends more CPU per request than the server under test at a few
hundred requests per second, which turns a latency benchmark into a benchmark of the client.
This client does the least possible: one request at a time per connection, Content-Length
framing, a pool of idle connections that grows on demand.
"""

from __future__ import annotations

import asyncio
import base64


class RawPool:
    """Keep-alive connections to one host; `post` sends a JSON body and returns the status."""

    def __init__(self, host: str, port: int, auth_user: str) -> None:
        self.host = host
        self.port = port
        token = base64.b64encode(f"{auth_user}:".encode()).decode()
        self.auth = f"Authorization: Basic {token}\r\n"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes) -> int:
        """POST `body` (JSON) to `path`; the response status."""
        while self.idle:
            reader, writer = self.idle.pop()
            status = await self._send(reader, writer, path, body)
            if status:
                return status
            writer.close()  # the server closed this idle connection; take another
        reader, writer = await asyncio.open_connection(self.host, self.port)
        status = await self._send(reader, writer, path, body)
        if not status:
            raise ConnectionError("the server closed a fresh connection")
        return status

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    path: str, body: bytes) -> int:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        try:
            status_line = await reader.readline()
        except ConnectionError:
            return 0
        if not status_line:
            return 0
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.idle.append((reader, writer))
        return int(status_line.split()[1])

    def close(self) -> None:
        """Close every idle connection."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
