"""Adaptive batching: concurrent requests share one model call, a lone request waits for nothing.

:class:`AdaptiveBatcher` sits between the request handlers (on the event loop) and the scoring
function (in one dedicated worker thread). A handler :meth:`~AdaptiveBatcher.submit`\\ s its
flights and awaits their results. While the worker is idle, a submission is scored at once, alone:
no batching window, so a single client pays no wait. While it is busy, new submissions queue up; when
the running call returns, *everything queued* (up to ``max_batch`` flights, whole submissions) goes
into the next call. The batch size thus follows the load: 1 at low traffic, larger exactly when
requests arrive faster than one call takes, which is when merging them saves time (the fixed cost
of a call, the feature lookup round trip and the torch forward, is paid once per batch).

Why not BentoML's ``@bentoml.api(batchable=True)``: its dispatcher hands the batch function the
concatenated inputs only, without the requests they came from (their request ids, start times and
endpoints, which every answer and prediction-log line needs), and batching the single-flight
endpoint through it means calling the service through its own HTTP proxy, a second pass through the
whole ASGI stack per request. Here only the model call is batched; each request keeps its own
context.

One thread scores, so the scoring function never runs concurrently with itself (the online
store's connection and torch need no locking) and the event loop stays free to parse and validate
the next requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@dataclass
class _Job(Generic[I, O]):
    items: list[I]
    future: asyncio.Future[list[O]]


@dataclass
class BatchStats:
    """What the batcher did so far (for tests and logs)."""

    calls: int = 0
    items: int = 0
    largest: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))

    def record(self, size: int) -> None:
        self.calls += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.sizes.append(size)


class AdaptiveBatcher(Generic[I, O]):
    """Merge concurrent submissions into calls of ``process`` (one result per item, in order).

    Args:
        process: Scores a list of items; returns one result per item, in the same order. Runs in
            the batcher's thread.
        max_batch: Most items per call. A submission is never split; one larger than this is
            scored alone.
        thread_name: Name of the worker thread.
    """

    def __init__(
        self, process: Callable[[list[I]], Sequence[O]], *, max_batch: int, thread_name: str = "scoring"
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.process = process
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._pending: deque[_Job[I, O]] = deque()
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None  # a reference, so it is not collected
        self._closed = False

    def run_in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` in the scoring thread and return its result (blocking; for setup)."""
        return self._executor.submit(func, *args).result()

    async def submit(self, items: Sequence[I]) -> list[O]:
        """Score ``items`` (with whatever else is queued) and return their results.

        Raises:
            RuntimeError: the batcher is closed.
            Exception: whatever ``process`` raised for the call that held these items.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = asyncio.get_running_loop()
        job: _Job[I, O] = _Job(list(items), loop.create_future())
        self._pending.append(job)
        if not self._draining:
            self._draining = True
            self._drain_task = loop.create_task(self._drain())
        return await job.future

    def _next_batch(self) -> list[_Job[I, O]]:
        jobs = [self._pending.popleft()]
        size = len(jobs[0].items)
        while self._pending and size + len(self._pending[0].items) <= self.max_batch:
            job = self._pending.popleft()
            size += len(job.items)
            jobs.append(job)
        return jobs

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                jobs = [job for job in self._next_batch() if not job.future.done()]
                if not jobs:
                    continue  # every waiter gave up (cancelled): nothing to score
                items = [item for job in jobs for item in job.items]
                self.stats.record(len(items))
                try:
                    results = await loop.run_in_executor(self._executor, self.process, items)
                    if len(results) != len(items):
                        raise RuntimeError(f"scoring returned {len(results)} results for {len(items)} items")
                except Exception as exc:
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                start = 0
                for job in jobs:
                    end = start + len(job.items)
                    if not job.future.done():
                        job.future.set_result(list(results[start:end]))
                    start = end
        finally:
            self._draining = False

    def close(self) -> None:
        """Refuse new submissions and stop the thread once the running call has returned."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
