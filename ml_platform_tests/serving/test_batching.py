"""AdaptiveBatcher: a lone request is scored at once; concurrent ones share a call."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ml_platform.lib.serving.batching import AdaptiveBatcher


class Recorder:
    """A scoring function that records its calls and can be held (to make requests pile up)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(5)
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return [item * 10 for item in items]


def test_a_lone_request_is_scored_alone_without_waiting() -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch=8)

    async def main() -> list[list[int]]:
        results = []
        for i in range(3):
            started = time.perf_counter()
            results.append(await batcher.submit([i]))
            assert time.perf_counter() - started < 0.5
        return results

    try:
        assert asyncio.run(main()) == [[0], [10], [20]]
    finally:
        batcher.close()
    assert recorder.calls == [[0], [1], [2]]
    assert batcher.stats.calls == 3 and batcher.stats.largest == 1
    assert len(recorder.threads) == 1 and next(iter(recorder.threads)).startswith("scoring")


def test_requests_arriving_while_scoring_share_the_next_call() -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch=100)

    async def main() -> list[list[int]]:
        recorder.release.clear()  # the first call blocks until the others are queued
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(batcher.submit([i, i + 1])) for i in (10, 20, 30)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        return [await first, *[await o for o in others]]

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert results == [[10], [100, 110], [200, 210], [300, 310]]
    # one call for the first request, one for everything that queued meanwhile, in order
    assert recorder.calls == [[1], [10, 11, 20, 21, 30, 31]]
    assert batcher.stats.largest == 6 and batcher.stats.items == 7


def test_max_batch_splits_between_submissions_never_inside_one() -> None:
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch=4)

    async def main() -> None:
        recorder.release.clear()
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(list(range(n)))) for n in (3, 2, 6, 1)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        await asyncio.gather(first, *queued)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert [len(call) for call in recorder.calls] == [1, 3, 2, 6, 1]
    assert all(len(call) <= 4 for call in recorder.calls if len(call) != 6)


def test_an_exception_reaches_every_request_of_its_call_only() -> None:
    calls = 0

    def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if 13 in items:
            raise ValueError("bad luck")
        return items

    batcher = AdaptiveBatcher(flaky, max_batch=8)

    async def main() -> None:
        with pytest.raises(ValueError, match="bad luck"):
            await batcher.submit([13])
        assert await batcher.submit([1, 2]) == [1, 2]

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert calls == 2


def test_a_wrong_result_count_is_an_error() -> None:
    batcher = AdaptiveBatcher(lambda items: items[:-1], max_batch=8)
    try:
        with pytest.raises(RuntimeError, match="2 results for 3 items"):
            asyncio.run(batcher.submit([1, 2, 3]))
    finally:
        batcher.close()


def test_closed_batcher_refuses_and_setup_runs_in_the_thread() -> None:
    batcher = AdaptiveBatcher(lambda items: items, max_batch=2)
    assert batcher.run_in_thread(lambda: threading.current_thread().name).startswith("scoring")
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(batcher.submit([1]))
    with pytest.raises(ValueError, match="at least 1"):
        AdaptiveBatcher(lambda items: items, max_batch=0)
