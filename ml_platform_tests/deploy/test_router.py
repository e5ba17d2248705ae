"""The router against stand-in upstreams (tiny starlette apps under uvicorn in threads).

Pass-through of requests and answers, the 502 of an upstream that is gone, the canary share
(random and sticky), shadow copies that never touch the caller's answer, the atomic policy swap
and a blue-green switch with requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ml_platform.lib.deploy.process import free_port
from ml_platform.lib.deploy.router import (
    Outcome,
    Router,
    RouterServer,
    RoutingPolicy,
    ThreadedServer,
    Upstream,
)


@dataclass
class Fake:
    """A stand-in model server: echoes what it got, as ``version``; can be slowed or broken."""

    version: str
    delay_s: float = 0.0
    status: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            body = await request.body()
            self.seen.append({"path": request.url.path, "id": request.headers.get("x-request-id")})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if request.url.path == "/missing":
                return JSONResponse(
                    {"error": "not here"}, status_code=404, headers={"X-Model-Version": self.version}
                )
            payload = {
                "version": self.version,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "body": body.decode(),
                "authorization": request.headers.get("authorization"),
                "request_id": request.headers.get("x-request-id"),
                "custom": request.headers.get("x-custom"),
            }
            return JSONResponse(payload, status_code=self.status, headers={"X-Model-Version": self.version})

        return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE"])])


@pytest.fixture
def fakes() -> Iterator[dict[str, tuple[Fake, ThreadedServer]]]:
    started: dict[str, tuple[Fake, ThreadedServer]] = {}
    for version in ("1", "2", "3"):
        fake = Fake(version)
        started[version] = (fake, ThreadedServer(fake.app(), name=f"fake-{version}").start())
    try:
        yield started
    finally:
        for _, server in started.values():
            server.stop()


def upstream(fakes: dict[str, tuple[Fake, ThreadedServer]], version: str) -> Upstream:
    return Upstream(
        fakes[version][1].url, f"v{version}", model_version=version, bento_tag=f"delay_service:{version}"
    )


def serve(router: Router) -> RouterServer:
    return RouterServer(router).start()


def test_policies_are_validated() -> None:
    with pytest.raises(ValueError, match="share must be within"):
        RoutingPolicy.canary(1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        RoutingPolicy("blue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="canary only"):
        RoutingPolicy("shadow", 0.5)
    router = Router(Upstream("http://127.0.0.1:9", "v1"))
    with pytest.raises(ValueError, match="needs a challenger"):
        router.set_policy(RoutingPolicy.canary(0.1))
    with pytest.raises(ValueError, match="no challenger to promote"):
        router.promote_challenger()


def test_requests_and_answers_pass_through(fakes: dict[str, tuple[Fake, ThreadedServer]]) -> None:
    with serve(Router(upstream(fakes, "1"))) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post(
            "/predict?a=1&b=two",
            content=b'{"x": 1}',
            headers={
                "Authorization": "Bearer s3cret",
                "X-Request-ID": "req-1",
                "X-Custom": "yes",
                "Content-Type": "application/json",
            },
        )
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == "1" and answer.headers["X-Served-By"] == "champion"
        assert answer.json() == {
            "version": "1",
            "method": "POST",
            "path": "/predict",
            "query": "a=1&b=two",
            "body": '{"x": 1}',
            "authorization": "Bearer s3cret",
            "request_id": "req-1",
            "custom": "yes",
        }
        assert http.put("/x").json()["method"] == "PUT"
        missing = http.get("/missing")
        assert missing.status_code == 404 and missing.json() == {"error": "not here"}
        state = http.get("/-/router").json()
        assert state["policy"]["mode"] == "single" and state["champion"]["requests"] == 3
        assert state["champion"]["in_flight"] == 0 and state["challenger"] is None


def test_an_upstream_that_is_gone_answers_502(fakes: dict[str, tuple[Fake, ThreadedServer]]) -> None:
    outcomes: list[Outcome] = []
    dead = Upstream(f"http://127.0.0.1:{free_port()}", "dead", model_version="9")
    router = Router(upstream(fakes, "1"), dead, RoutingPolicy.canary(1.0))
    router.listeners.append(outcomes.append)
    with serve(router) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/predict", json={})
        assert answer.status_code == 502 and answer.headers["X-Served-By"] == "challenger"
        body = answer.json()
        assert body["error"] == "upstream unavailable"
        assert body["detail"][0]["type"] == "upstream_error" and "challenger dead" in body["detail"][0]["msg"]
        server.set_policy(RoutingPolicy.single())
        assert http.post("/predict", json={}).status_code == 200
    assert [(o.role, o.status, o.failed) for o in outcomes] == [
        ("challenger", None, True),
        ("champion", 200, False),
    ]


def test_canary_sends_its_share(fakes: dict[str, tuple[Fake, ThreadedServer]]) -> None:
    router = Router(
        upstream(fakes, "1"), upstream(fakes, "2"), RoutingPolicy.canary(0.25), rng=random.Random(7)
    )
    with serve(router) as server, httpx.Client(base_url=server.url) as http:
        answers = [http.get("/predict") for _ in range(400)]
        by = [a.headers["X-Served-By"] for a in answers]
        versions = [a.headers["X-Model-Version"] for a in answers]
        assert {(b, v) for b, v in zip(by, versions, strict=True)} == {("champion", "1"), ("challenger", "2")}
        assert 0.17 < by.count("challenger") / 400 < 0.33
        # sticky: the same request id always lands on the same side, about a quarter of ids on the challenger
        server.set_policy(RoutingPolicy.canary(0.25, sticky_header="X-Request-ID"))
        sides = {
            f"id-{i}": {
                http.get("/p", headers={"X-Request-ID": f"id-{i}"}).headers["X-Served-By"] for _ in range(3)
            }
            for i in range(200)
        }
        assert all(len(s) == 1 for s in sides.values())
        assert 0.15 < sum(s == {"challenger"} for s in sides.values()) / 200 < 0.35
        server.set_policy(RoutingPolicy.canary(0.0))
        assert {http.get("/p").headers["X-Served-By"] for _ in range(20)} == {"champion"}
        server.set_policy(RoutingPolicy.canary(1.0))
        assert {http.get("/p").headers["X-Served-By"] for _ in range(20)} == {"challenger"}


def test_shadow_copies_never_reach_the_caller(fakes: dict[str, tuple[Fake, ThreadedServer]]) -> None:
    challenger, _ = fakes["2"]
    challenger.delay_s = 0.3
    challenger.status = 500
    outcomes: list[Outcome] = []
    router = Router(upstream(fakes, "1"), upstream(fakes, "2"), RoutingPolicy.shadow(), shadow_concurrency=4)
    router.listeners.append(outcomes.append)
    with serve(router) as server, httpx.Client(base_url=server.url) as http:
        started = time.monotonic()
        answers = [
            http.post("/predict", json={"n": i}, headers={"X-Request-ID": f"s-{i}"}) for i in range(10)
        ]
        elapsed = time.monotonic() - started
        assert {(a.status_code, a.headers["X-Served-By"], a.headers["X-Model-Version"]) for a in answers} == {
            (200, "champion", "1")
        }
        assert elapsed < 2.0, "the caller waited for the shadow"  # 10 x 0.3 s if it had
        deadline = time.monotonic() + 5
        while server.state()["shadow"]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        shadow = server.state()["shadow"]
    assert shadow["sent"] + shadow["dropped"] == 10 and shadow["sent"] >= 4
    assert shadow["failed"] == shadow["sent"] and shadow["statuses"] == {"500": shadow["sent"]}
    copied = {s["id"] for s in challenger.seen}
    assert copied and copied <= {f"s-{i}" for i in range(10)}
    assert sum(o.role == "shadow" and o.failed for o in outcomes) == shadow["sent"]
    assert sum(o.role == "champion" and not o.failed for o in outcomes) == 10


def test_blue_green_switch_loses_no_request_in_flight(fakes: dict[str, tuple[Fake, ThreadedServer]]) -> None:
    """Slow requests in flight on the old champion during the switch all finish; new ones go to the new."""
    fakes["1"][0].delay_s = 0.2
    router = Router(upstream(fakes, "1"))
    with serve(router) as server:

        async def load(stop: asyncio.Event) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

                async def client() -> list[httpx.Response]:
                    got = []
                    while not stop.is_set():
                        got.append(await http.post("/predict", json={}))
                    return got

                results = await asyncio.gather(*[client() for _ in range(8)])
            return [r for rs in results for r in rs]

        async def main() -> tuple[list[httpx.Response], bool, bool]:
            stop = asyncio.Event()
            task = asyncio.create_task(load(stop))
            await asyncio.sleep(0.5)
            drained_2 = await asyncio.to_thread(server.replace_champion, upstream(fakes, "2"))
            await asyncio.sleep(0.3)
            drained_3 = await asyncio.to_thread(server.replace_champion, upstream(fakes, "3"))
            await asyncio.sleep(0.3)
            stop.set()
            return await task, drained_2, drained_3

        answers, drained_2, drained_3 = asyncio.run(main())
        fakes["1"][1].stop()  # the old champion goes away: nothing may still need it
        assert drained_2 and drained_3
        assert {a.status_code for a in answers} == {200}
        versions = [a.headers["X-Model-Version"] for a in answers]
        assert set(versions) == {"1", "2", "3"}
        assert json.loads(answers[-1].content)["version"] == "3"
        assert server.state()["champion"]["name"] == "v3"
