"""Deployments against live ``bentoml serve`` processes behind the router, under concurrent load.

* a blue-green hot swap from model version 1 to version 2 while 8 clients keep sending requests:
  not one request fails, both versions answer, and after the switch only the new one does;
* a canary whose challenger dies: the guard sends every request back to the champion within
  seconds (the platform promises 60 s), and the champion never fails a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml_platform.lib.deploy.events import DeploymentLog
from ml_platform.lib.deploy.process import ServedProcess
from ml_platform.lib.deploy.rollback import CanaryGuard, CanaryThresholds, Rollback
from ml_platform.lib.deploy.router import Router, RouterServer, RoutingPolicy, Upstream
from ml_platform_tests.deploy.conftest import ServeFactory, Versions

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.live]


@dataclass(frozen=True)
class Answer:
    at: float
    status: int
    version: str | None
    served_by: str | None
    request_id: str
    echoed_id: str | None


def upstream_of(process: ServedProcess, model_version: str, tag: str) -> Upstream:
    return Upstream(process.url, f"v{model_version}", model_version=model_version, bento_tag=tag)


async def load(
    url: str, flights: list[dict[str, Any]], stop: asyncio.Event, clients: int = 8
) -> list[Answer]:
    """``clients`` concurrent callers posting flights until ``stop``; every answer, failed or not."""
    answers: list[Answer] = []

    async def caller(http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            request_id = f"load-{n}-{i}"
            body = flights[(n * 7 + i) % len(flights)]
            try:
                r = await http.post("/predict", json=body, headers={"X-Request-ID": request_id})
                status, headers = r.status_code, r.headers
                echoed = r.json().get("request_id") if status == 200 else None
            except httpx.HTTPError:
                status, headers, echoed = 0, httpx.Headers(), None
            answers.append(
                Answer(
                    time.monotonic(),
                    status,
                    headers.get("X-Model-Version"),
                    headers.get("X-Served-By"),
                    request_id,
                    echoed,
                )
            )
            i += 1

    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        await asyncio.gather(*[caller(http, n) for n in range(clients)])
    return answers


def test_blue_green_hot_swap_under_load_drops_nothing(
    serve: ServeFactory, versions: Versions, flights: list[dict[str, Any]]
) -> None:
    blue = serve("blue", versions.first.tag)
    router = Router(upstream_of(blue, versions.first.model_version, versions.first.tag))
    with RouterServer(router) as server:

        async def main() -> tuple[list[Answer], float, bool]:
            stop = asyncio.Event()
            running = asyncio.create_task(load(server.url, flights, stop))
            await asyncio.sleep(1.0)
            green = await asyncio.to_thread(serve, "green", versions.second.tag)  # starts under load
            new = upstream_of(green, versions.second.model_version, versions.second.tag)
            drained = await asyncio.to_thread(server.replace_champion, new)
            switched = time.monotonic()
            await asyncio.to_thread(blue.stop)
            await asyncio.sleep(1.5)
            stop.set()
            return await running, switched, drained

        answers, switched, drained = asyncio.run(main())
        assert not blue.alive() and drained
        failed = [a for a in answers if a.status != 200]
        assert not failed, f"{len(failed)} of {len(answers)} failed, e.g. {failed[:3]}"
        assert len(answers) > 100
        assert all(a.echoed_id == a.request_id and a.served_by == "champion" for a in answers)
        assert {a.version for a in answers} == {versions.first.model_version, versions.second.model_version}
        assert {a.version for a in answers if a.at > switched + 0.1} == {versions.second.model_version}
        assert server.state()["champion"]["model_version"] == versions.second.model_version


def test_a_failing_canary_is_rolled_back_while_the_champion_answers(
    serve: ServeFactory, versions: Versions, flights: list[dict[str, Any]], tmp_path: Path
) -> None:
    champion = serve("champion", versions.first.tag)
    challenger = serve("challenger", versions.second.tag)
    router = Router(
        upstream_of(champion, versions.first.model_version, versions.first.tag),
        upstream_of(challenger, versions.second.model_version, versions.second.tag),
        RoutingPolicy.canary(0.3),
    )
    log = DeploymentLog(tmp_path / "deployments")
    record = log.rollback_recorder("policy:canary-guard")
    rolled_back: list[tuple[float, Rollback]] = []

    def on_rollback(rollback: Rollback) -> None:
        rolled_back.append((time.monotonic(), rollback))
        record(rollback)

    thresholds = CanaryThresholds(max_error_rate=0.2, max_p99_ms=5000, min_requests=10, check_interval_s=1.0)
    guard = CanaryGuard(router, thresholds, on_rollback=on_rollback).attach()
    server = RouterServer(router)

    async def start_guard() -> None:
        guard.start_periodic()

    server.on_loop_started(start_guard)
    with server:

        async def main() -> tuple[list[Answer], float]:
            stop = asyncio.Event()
            running = asyncio.create_task(load(server.url, flights, stop, clients=4))
            await asyncio.sleep(1.5)  # a healthy canary: both answer, nothing is rolled back
            assert not rolled_back
            killed = time.monotonic()
            await asyncio.to_thread(challenger.kill)  # the challenger crashes, workers and all
            await _until(lambda: bool(rolled_back), 60)
            await asyncio.sleep(1.0)
            stop.set()
            return await running, killed

        answers, killed = asyncio.run(main())
    assert rolled_back, f"no rollback within 60 s: {guard.last_verdict} {router.state()}"
    at, rollback = rolled_back[0]
    took = at - killed
    assert took < 60 and took < 10, f"rollback took {took:.1f} s"
    assert router.policy == RoutingPolicy.single() and len(rolled_back) == 1
    assert rollback.challenger.model_version == versions.second.model_version
    assert rollback.champion.model_version == versions.first.model_version
    assert "error rate" in rollback.reason and rollback.verdict.errors >= 3
    before = [a for a in answers if a.at < killed]
    assert {(a.status, a.served_by, a.version) for a in before} == {
        (200, "champion", versions.first.model_version),
        (200, "challenger", versions.second.model_version),
    }
    # the champion never failed; only challenger answers between the kill and the rollback did
    assert all(a.status == 200 for a in answers if a.served_by == "champion")
    failed = [a for a in answers if a.status != 200]
    assert failed and {(a.status, a.served_by) for a in failed} == {(502, "challenger")}
    assert all(killed <= a.at <= at + 0.5 for a in failed)
    after = [a for a in answers if a.at > at + 0.5]
    assert after and {(a.status, a.served_by) for a in after} == {(200, "champion")}
    # recorded, with the challenger's tag and version
    deadline = time.monotonic() + 10
    while not log.events() and time.monotonic() < deadline:
        time.sleep(0.05)
    [event] = log.events()
    assert (event.action, event.bento_tag, event.model_version) == (
        "rollback",
        versions.second.tag,
        versions.second.model_version,
    )
    assert event.previous_model_version == versions.first.model_version and log.verify() == 1
    print(f"rollback {took * 1000:.0f} ms after the kill; {len(failed)} challenger requests failed")


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
