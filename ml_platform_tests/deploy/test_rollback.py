"""The canary guard on synthetic answers (a fake clock), and on a router with a stand-in challenger."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ml_platform.lib.deploy.process import free_port
from ml_platform.lib.deploy.rollback import CanaryGuard, CanaryThresholds, Rollback, SlidingWindow, p99
from ml_platform.lib.deploy.router import (
    Outcome,
    Router,
    RouterServer,
    RoutingPolicy,
    ThreadedServer,
    Upstream,
)
from ml_platform_tests.deploy.test_router import Fake

CHAMPION = Upstream("http://127.0.0.1:1", "v1", model_version="1")
CHALLENGER = Upstream("http://127.0.0.1:2", "v2", model_version="2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(clock: Clock, status: int | None = 200, ms: float = 10.0, role: str = "challenger") -> Outcome:
    return Outcome(role, "v2", status, ms, clock.now)  # type: ignore[arg-type]


def canary(
    thresholds: CanaryThresholds, share: float = 0.5
) -> tuple[Router, CanaryGuard, Clock, list[Rollback]]:
    clock = Clock()
    router = Router(CHAMPION, CHALLENGER, RoutingPolicy.canary(share))
    recorded: list[Rollback] = []
    guard = CanaryGuard(router, thresholds, on_rollback=recorded.append, clock=clock).attach()
    return router, guard, clock, recorded


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_error_rate"):
        CanaryThresholds(max_error_rate=2)
    with pytest.raises(ValueError, match="min_requests"):
        CanaryThresholds(min_requests=0)
    with pytest.raises(ValueError, match="window_seconds"):
        CanaryThresholds(window_seconds=0)


def test_p99_by_nearest_rank() -> None:
    assert p99([]) is None and p99([5.0]) == 5.0
    assert p99([float(i) for i in range(1, 101)]) == 99.0
    assert p99([float(i) for i in range(1, 1001)]) == 990.0


def test_errors_breach_only_after_min_requests() -> None:
    router, guard, clock, recorded = canary(CanaryThresholds(max_error_rate=0.1, min_requests=10))
    for _ in range(9):
        guard.observe(answer(clock, None))
    assert router.policy.mode == "canary" and not recorded
    assert (
        guard.last_verdict is not None and guard.last_verdict.errors == 9 and not guard.last_verdict.breached
    )
    clock.now += 0.5
    guard.observe(answer(clock, 503))
    assert router.policy == RoutingPolicy.single()
    [rollback] = recorded
    assert rollback.verdict.requests == 10 and rollback.verdict.errors == 10
    assert rollback.reason == "error rate 100.0% (10 of 10) above 10.0%"
    assert rollback.challenger == CHALLENGER and rollback.champion == CHAMPION
    assert rollback.policy == RoutingPolicy.canary(0.5)
    assert rollback.seconds_since_first_failure == pytest.approx(0.5)
    # no canary any more: answers are ignored, nothing else is rolled back
    guard.observe(answer(clock, None))
    assert guard.check() is None and len(recorded) == 1


def test_a_few_errors_and_4xx_do_not_breach() -> None:
    router, guard, clock, recorded = canary(CanaryThresholds(max_error_rate=0.1, min_requests=10))
    for i in range(100):
        guard.observe(answer(clock, 500 if i % 20 == 0 else (422 if i % 3 else 200)))  # 5 % errors
    assert router.policy.mode == "canary" and not recorded
    assert guard.last_verdict is not None and guard.last_verdict.error_rate == pytest.approx(0.05)


def test_champion_and_shadow_answers_are_not_judged() -> None:
    router, guard, clock, recorded = canary(CanaryThresholds(min_requests=5))
    for _ in range(50):
        guard.observe(answer(clock, None, role="champion"))
        guard.observe(answer(clock, None, role="shadow"))
    assert router.policy.mode == "canary" and not recorded and len(guard.window) == 0


def test_slow_answers_breach_p99() -> None:
    router, guard, clock, recorded = canary(CanaryThresholds(max_p99_ms=500, min_requests=50))
    for _ in range(99):
        guard.observe(answer(clock, 200, ms=20.0))
    guard.observe(answer(clock, 200, ms=900.0))  # the single slowest: p99 of 100 is the 99th value
    assert router.policy.mode == "canary"
    guard.observe(answer(clock, 200, ms=900.0))
    assert router.policy.mode == "single"
    assert recorded[0].reason == "p99 latency 900.0 ms above 500 ms"
    assert recorded[0].seconds_since_first_failure is None


def test_old_answers_leave_the_window() -> None:
    thresholds = CanaryThresholds(max_error_rate=0.2, min_requests=10, window_seconds=30)
    router, guard, clock, _recorded = canary(thresholds)
    for _ in range(5):
        guard.observe(answer(clock, None))
    clock.now += 31  # those failures are out of the window
    for _ in range(20):
        guard.observe(answer(clock, 200))
    assert router.policy.mode == "canary" and guard.last_verdict is not None
    assert guard.last_verdict.requests == 20 and guard.last_verdict.errors == 0

    window = SlidingWindow(CanaryThresholds(min_requests=1, window_requests=3))
    for status in (None, None, 200, 200, 200):
        window.add(answer(clock, status))
    assert window.judge(clock.now).errors == 0 and len(window) == 3


def test_the_periodic_check_rolls_back_without_new_answers() -> None:
    router, guard, clock, recorded = canary(CanaryThresholds(min_requests=3, check_interval_s=0.01))
    for _ in range(3):  # answers that reached the window without a check (e.g. before the guard was attached)
        guard.window.add(answer(clock, None))

    async def main() -> None:
        task = guard.start_periodic()
        for _ in range(100):
            if recorded:
                break
            await asyncio.sleep(0.01)
        guard.stop_periodic()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert router.policy.mode == "single" and len(recorded) == 1


def test_a_new_challenger_starts_a_new_window() -> None:
    router, guard, clock, _recorded = canary(CanaryThresholds(max_error_rate=0.1, min_requests=10))
    for _ in range(9):
        guard.observe(answer(clock, None))
    router.set_challenger(Upstream("http://127.0.0.1:3", "v3"))
    guard.observe(answer(clock, None))
    assert router.policy.mode == "canary" and len(guard.window) == 1


def test_a_challenger_that_is_gone_is_rolled_back_on_the_router() -> None:
    """On a live router: a challenger that is gone is rolled back; the champion keeps answering."""
    champion = Fake("1")
    with ThreadedServer(champion.app(), name="fake-1") as upstream_server:
        dead = Upstream(f"http://127.0.0.1:{free_port()}", "v2", model_version="2")
        router = Router(
            Upstream(upstream_server.url, "v1", model_version="1"), dead, RoutingPolicy.canary(0.5)
        )
        recorded: list[Rollback] = []
        thresholds = CanaryThresholds(max_error_rate=0.2, min_requests=5, check_interval_s=0.05)
        guard = CanaryGuard(router, thresholds, on_rollback=recorded.append).attach()
        server = RouterServer(router)

        async def start_guard() -> None:
            guard.start_periodic()

        server.on_loop_started(start_guard)
        with server, httpx.Client(base_url=server.url) as http:
            statuses = [
                (a.status_code, a.headers["X-Served-By"]) for a in (http.get("/p") for _ in range(60))
            ]
            deadline = time.monotonic() + 5
            while not recorded and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.state()["policy"]["mode"] == "single"
            after = [http.get("/p") for _ in range(10)]
        assert {(a.status_code, a.headers["X-Served-By"]) for a in after} == {(200, "champion")}
        assert statuses.count((502, "challenger")) == 5  # the breach came with the 5th failure
        assert all(s == (200, "champion") for s in statuses if s[1] == "champion")
        assert len(recorded) == 1 and recorded[0].verdict.errors == 5
