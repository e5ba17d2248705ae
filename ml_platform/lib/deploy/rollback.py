"""Automatic rollback of a canary: the challenger's recent answers against error and latency limits.

:class:`CanaryGuard` listens to the router's :class:`~ml_platform.lib.deploy.router.Outcome` s. While
the policy is a canary it keeps the challenger's answers of the last ``window_seconds`` (at most
``window_requests`` of them) and judges them after each one and every ``check_interval_s`` (a
periodic task on the router's loop):

* error rate: 5xx answers plus answers that never came (connection errors, timeouts: the router's
  502), over the answers in the window;
* p99 latency (nearest rank) of those answers.

Once the window holds ``min_requests`` answers, an error rate above ``max_error_rate`` or a p99
above ``max_p99_ms`` is a breach: the guard sets the policy back to single (every request to the
champion, from the next one on) and hands a :class:`Rollback` to ``on_rollback`` (which records it;
it runs in a worker thread, never on the request path). A challenger that fails on every request
is therefore rolled back after ``min_requests`` of its answers, within milliseconds of the last
one, far inside the 60 s the platform promises.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ml_platform.lib.deploy.router import Outcome, Role, Router, RoutingPolicy, Upstream

logger = logging.getLogger("ml_platform.deploy.rollback")
ROLLBACK_ACTOR: Final = "policy:canary-guard"


@dataclass(frozen=True)
class CanaryThresholds:
    """When a canary is rolled back (see the module doc)."""

    max_error_rate: float = 0.05
    max_p99_ms: float = 2000.0
    min_requests: int = 20
    window_seconds: float = 60.0
    window_requests: int = 1000
    check_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"max_error_rate must be within [0, 1], got {self.max_error_rate}")
        for name in ("max_p99_ms", "window_seconds", "check_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.min_requests <= self.window_requests:
            raise ValueError(
                f"min_requests must be within [1, window_requests={self.window_requests}],"
                f" got {self.min_requests}"
            )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "max_error_rate": self.max_error_rate,
            "max_p99_ms": self.max_p99_ms,
            "min_requests": self.min_requests,
            "window_seconds": self.window_seconds,
            "window_requests": self.window_requests,
        }


@dataclass(frozen=True)
class Verdict:
    """The judgement of one window."""

    requests: int
    errors: int
    p99_ms: float | None
    #: Why it breached (empty: it did not).
    reasons: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        return bool(self.reasons)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "reasons": list(self.reasons),
        }


def p99(latencies: list[float]) -> float | None:
    """The 99th percentile by nearest rank (None for no values)."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class SlidingWindow:
    """The challenger's answers of the last ``window_seconds``, at most ``window_requests``."""

    def __init__(self, thresholds: CanaryThresholds) -> None:
        self.thresholds = thresholds
        self._items: deque[tuple[float, bool, float]] = deque(maxlen=thresholds.window_requests)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, outcome: Outcome) -> None:
        self._items.append((outcome.at, outcome.failed, outcome.latency_ms))

    def clear(self) -> None:
        self._items.clear()

    def judge(self, now: float) -> Verdict:
        """Drop what is older than the window, then compare the rest with the thresholds."""
        limit = now - self.thresholds.window_seconds
        while self._items and self._items[0][0] < limit:
            self._items.popleft()
        requests = len(self._items)
        errors = sum(1 for _, failed, _ in self._items if failed)
        latency = p99([ms for _, _, ms in self._items])
        reasons: list[str] = []
        t = self.thresholds
        if requests >= t.min_requests:
            rate = errors / requests
            if rate > t.max_error_rate:
                reasons.append(f"error rate {rate:.1%} ({errors} of {requests}) above {t.max_error_rate:.1%}")
            if latency is not None and latency > t.max_p99_ms:
                reasons.append(f"p99 latency {latency:.1f} ms above {t.max_p99_ms:g} ms")
        return Verdict(requests, errors, latency, tuple(reasons))


@dataclass(frozen=True)
class Rollback:
    """A canary sent back: what was judged, and who served before and after."""

    occurred_at: datetime
    verdict: Verdict
    champion: Upstream
    challenger: Upstream
    #: The canary policy that was in force.
    policy: RoutingPolicy
    #: Seconds from the first failed answer in the window to the policy change.
    seconds_since_first_failure: float | None
    reason: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", "; ".join(self.verdict.reasons))


class CanaryGuard:
    """Rolls a canary back on a breach (see the module doc); attach with :meth:`attach`."""

    def __init__(
        self,
        router: Router,
        thresholds: CanaryThresholds | None = None,
        *,
        on_rollback: Callable[[Rollback], object] | None = None,
        roles: tuple[Role, ...] = ("challenger",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.thresholds = thresholds or CanaryThresholds()
        self.on_rollback = on_rollback
        self.roles = roles
        self.clock = clock
        self.window = SlidingWindow(self.thresholds)
        self.rollbacks: list[Rollback] = []
        self.last_verdict: Verdict | None = None
        self._first_failure: float | None = None
        challenger = router.challenger
        self._watching = None if challenger is None else challenger.url  # whom the window is about
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def attach(self) -> CanaryGuard:
        """Listen to the router's answers."""
        if self.observe not in self.router.listeners:
            self.router.listeners.append(self.observe)
        return self

    @property
    def active(self) -> bool:
        """A canary is running (for ``roles`` with ``shadow``: a shadow too)."""
        mode = self.router.policy.mode
        return self.router.challenger is not None and (
            mode == "canary" or (mode == "shadow" and "shadow" in self.roles)
        )

    def observe(self, outcome: Outcome) -> None:
        """Take one answer of the router (a listener): judge the window when it is the challenger's."""
        if outcome.role not in self.roles or not self.active:
            return
        self._follow_challenger()
        self.window.add(outcome)
        if outcome.failed and self._first_failure is None:
            self._first_failure = outcome.at
        self.check()

    def check(self) -> Verdict | None:
        """Judge the window now; roll back on a breach. None when no canary runs."""
        if not self.active:
            return None
        self._follow_challenger()
        verdict = self.window.judge(self.clock())
        self.last_verdict = verdict
        if verdict.breached:
            self._roll_back(verdict)
        return verdict

    async def run_periodically(self) -> None:
        """Call :meth:`check` every ``check_interval_s`` until cancelled (run it on the router's loop)."""
        while True:
            await asyncio.sleep(self.thresholds.check_interval_s)
            try:
                self.check()
            except Exception:
                logger.exception("canary guard check failed")

    def start_periodic(self) -> asyncio.Task[None]:
        """Start :meth:`run_periodically` on the running loop (kept; cancelled by :meth:`stop_periodic`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run_periodically())
        return self._task

    def stop_periodic(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ---------------------------------------------------------------------------------- helpers

    def _follow_challenger(self) -> None:
        challenger = self.router.challenger
        name = None if challenger is None else challenger.url
        if name != self._watching:  # a new canary: start a new window
            self._watching = name
            self.window.clear()
            self._first_failure = None

    def _roll_back(self, verdict: Verdict) -> None:
        challenger = self.router.challenger
        assert challenger is not None
        policy = self.router.set_policy(RoutingPolicy.single())
        now = self.clock()
        rollback = Rollback(
            occurred_at=datetime.now(UTC),
            verdict=verdict,
            champion=self.router.champion,
            challenger=challenger,
            policy=policy,
            seconds_since_first_failure=None if self._first_failure is None else now - self._first_failure,
        )
        self.rollbacks.append(rollback)
        self.window.clear()
        self._first_failure = None
        logger.warning(
            "canary of %s rolled back to %s: %s", challenger.name, rollback.champion.name, rollback.reason
        )
        if self.on_rollback is not None:
            self._hand_over(rollback)

    def _hand_over(self, rollback: Rollback) -> None:
        assert self.on_rollback is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.on_rollback(rollback)
            return
        future = loop.run_in_executor(None, self._record, rollback)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _record(self, rollback: Rollback) -> None:
        assert self.on_rollback is not None
        try:
            self.on_rollback(rollback)
        except Exception:
            logger.exception("recording the rollback of %s failed", rollback.challenger.name)
