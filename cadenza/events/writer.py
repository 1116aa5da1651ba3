"""Group commit for the HTTP API: concurrent requests share one transaction.

Each request waits for its own result, so nothing is acknowledged before it is committed, but a
burst of N requests costs one commit instead of N. The writer drains whatever is queued (up to
`max_messages`), runs `EventService.ingest_many` in one worker thread (SQLite has one writer
anyway), and resolves every waiting request with its own result.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from cadenza.events.service import EventService, IngestRequest, IngestResult


@dataclass
class _Job:
    request: IngestRequest
    future: asyncio.Future[IngestResult]


class BatchingWriter:
    """Queue requests from many coroutines; commit them in groups from one worker."""

    def __init__(self, service: EventService, max_messages: int = 10_000) -> None:
        self.service = service
        self.max_messages = max_messages
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker on the running loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="cadenza-ingest-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, request: IngestRequest) -> IngestResult:
        """Store one request; returns once it is committed (or raises what storing raised)."""
        if self._queue is None:
            raise RuntimeError("BatchingWriter.start() was not awaited")
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(request, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            size = len(jobs[0].request.messages)
            while size < self.max_messages and not queue.empty():
                job = queue.get_nowait()
                jobs.append(job)
                size += len(job.request.messages)
            try:
                await self._commit(jobs)
            finally:
                for _ in jobs:
                    queue.task_done()

    async def _commit(self, jobs: list[_Job]) -> None:
        try:
            results = await asyncio.to_thread(
                self.service.ingest_many, [job.request for job in jobs])
        except Exception as exc:
            if len(jobs) > 1:
                # One request must not fail its neighbours: commit each on its own.
                for job in jobs:
                    await self._commit([job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
