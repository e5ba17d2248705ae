"""A reverse proxy in front of the served models: one champion, an optional challenger.

:class:`Router` is an ASGI app (starlette; one :class:`httpx.AsyncClient` with a keep-alive pool per
upstream) that forwards every request (method, path, query, body and headers, ``Authorization``
and ``X-Request-ID`` included) to an upstream chosen by its :class:`RoutingPolicy`:

* ``single``: everything to the champion;
* ``canary``: a share of the requests to the challenger, the rest to the champion; the share is
  drawn at random, or, with ``sticky_header``, decided by a hash of that header's value (the same
  request id always lands on the same side);
* ``shadow``: everything to the champion, and a copy of each request to the challenger in the
  background: never awaited by the caller, at most ``shadow_concurrency`` copies at once (the
  others are dropped and counted), its failures counted, never raised. Only the champion's answer
  is returned.

Upstream answers come back as they are (4xx included), with the upstream's ``X-Model-Version`` and
``X-Served-By: champion|challenger``. An upstream that cannot be reached (connection refused,
reset, timeout) answers 502 with a JSON error in the service's shape (``{"error", "detail"}``).
Every answer is an :class:`Outcome` handed to the listeners (the canary guard, metrics).

The routing table (champion, challenger, policy) is one immutable value replaced in one assignment,
so a request sees either the old table or the new one. Each upstream counts its in-flight
requests; :meth:`Router.drain` waits for an old upstream's to finish, which is what makes a
blue-green switch lose no request: start the new server, wait until it is ready,
:meth:`Router.replace_champion`, drain the old one, then stop it.

The mutators are plain methods meant to run on the router's event loop (a listener calling
:meth:`Router.set_policy` does); from another thread use :class:`RouterServer`, which runs the
router under uvicorn in a thread and calls them on its loop. ``GET /-/router`` answers the state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Self, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ml_platform.lib.deploy.process import LOOPBACK, free_port

Mode = Literal["single", "canary", "shadow"]
Role = Literal["champion", "challenger", "shadow"]
MODES: Final = ("single", "canary", "shadow")
SERVED_BY_HEADER: Final = "X-Served-By"
MODEL_VERSION_HEADER: Final = "X-Model-Version"
STATUS_PATH: Final = "/-/router"
#: Headers that describe one hop, not the message (RFC 9110 7.6.1), plus those httpx recomputes.
_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: httpx hands back decoded bodies: the encoding headers no longer describe them.
_RESPONSE_DROP: Final = _HOP_HEADERS | {"content-encoding"}
_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

logger = logging.getLogger("ml_platform.deploy.router")
T = TypeVar("T")


@dataclass(frozen=True)
class RoutingPolicy:
    """How requests are split between the champion and the challenger."""

    mode: Mode = "single"
    #: Canary: the share of requests the challenger answers (0..1).
    share: float = 0.0
    #: Canary: decide by a hash of this request header (when present) instead of at random.
    sticky_header: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be within [0, 1], got {self.share!r}")
        if self.mode != "canary" and self.share:
            raise ValueError(f"share applies to canary only, got {self.share} for mode {self.mode!r}")

    @classmethod
    def single(cls) -> RoutingPolicy:
        return cls("single")

    @classmethod
    def canary(cls, share: float, sticky_header: str | None = None) -> RoutingPolicy:
        return cls("canary", share, sticky_header)

    @classmethod
    def shadow(cls) -> RoutingPolicy:
        return cls("shadow")

    @property
    def needs_challenger(self) -> bool:
        return self.mode != "single"

    def describe(self) -> str:
        return f"canary {self.share:.0%}" if self.mode == "canary" else self.mode


@dataclass(frozen=True)
class Upstream:
    """A served model the router can send requests to."""

    url: str
    #: For the status page and logs (e.g. ``v3``).
    name: str
    model_version: str | None = None
    #: The Bento (or BentoML model) tag it serves.
    bento_tag: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How one upstream answered one request."""

    role: Role
    upstream: str
    #: None: no answer (connection error or timeout).
    status: int | None
    latency_ms: float
    #: ``time.monotonic()`` when the answer came.
    at: float
    error: str | None = None

    @property
    def failed(self) -> bool:
        """A 5xx or no answer (a 4xx is the caller's fault, not the model's)."""
        return self.status is None or self.status >= 500


class UpstreamPool:
    """An upstream with its keep-alive connection pool and counters."""

    def __init__(self, upstream: Upstream, timeout_s: float, max_connections: int) -> None:
        self.upstream = upstream
        self.client = httpx.AsyncClient(
            base_url=upstream.url,
            timeout=timeout_s,
            # shorter than the server's keep-alive (uvicorn: 5 s), so we never reuse a connection it closes
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=2.0,
            ),
            transport=httpx.AsyncHTTPTransport(retries=1),  # connect errors only: nothing was sent
            follow_redirects=False,
        )
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.closed = False

    def state(self) -> dict[str, Any]:
        return {
            "name": self.upstream.name,
            "url": self.upstream.url,
            "model_version": self.upstream.model_version,
            "bento_tag": self.upstream.bento_tag,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class _Table:
    champion: UpstreamPool
    challenger: UpstreamPool | None
    policy: RoutingPolicy


@dataclass
class ShadowStats:
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class Router:
    """The proxy (see the module doc). ``app`` is the ASGI application."""

    def __init__(
        self,
        champion: Upstream,
        challenger: Upstream | None = None,
        policy: RoutingPolicy | None = None,
        *,
        timeout_s: float = 30.0,
        max_connections: int = 64,
        shadow_concurrency: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.shadow_concurrency = shadow_concurrency
        self._rng = rng or random.Random()
        policy = policy or RoutingPolicy.single()
        self._table = _Table(
            self._pool(champion), self._pool(challenger) if challenger else None, RoutingPolicy.single()
        )
        self.set_policy(policy)
        self.listeners: list[Callable[[Outcome], None]] = []
        self.shadow = ShadowStats()
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._retired: list[UpstreamPool] = []
        self.app = Starlette(
            routes=[
                Route(STATUS_PATH, self._status, methods=["GET"]),
                Route("/{path:path}", self._proxy, methods=_METHODS),
            ]
        )

    # ------------------------------------------------------------------------------ the table

    @property
    def policy(self) -> RoutingPolicy:
        return self._table.policy

    @property
    def champion(self) -> Upstream:
        return self._table.champion.upstream

    @property
    def challenger(self) -> Upstream | None:
        pool = self._table.challenger
        return None if pool is None else pool.upstream

    def pool_of(self, role: Literal["champion", "challenger"]) -> UpstreamPool | None:
        return self._table.champion if role == "champion" else self._table.challenger

    def set_policy(self, policy: RoutingPolicy) -> RoutingPolicy:
        """Route by ``policy`` from the next request on; return the previous policy.

        Raises:
            ValueError: a canary or shadow policy without a challenger.
        """
        table = self._table
        if policy.needs_challenger and table.challenger is None:
            raise ValueError(f"{policy.describe()} needs a challenger; set one first")
        self._table = _Table(table.champion, table.challenger, policy)
        logger.info("routing policy: %s -> %s", table.policy.describe(), policy.describe())
        return table.policy

    def set_challenger(self, upstream: Upstream | None) -> UpstreamPool | None:
        """Put ``upstream`` (or nothing) in the challenger's place; return the old one's pool to drain.

        Removing the challenger also sets the policy back to single.
        """
        table = self._table
        policy = table.policy if upstream is not None else RoutingPolicy.single()
        self._table = _Table(table.champion, self._pool(upstream) if upstream else None, policy)
        return self._retire(table.challenger)

    def replace_champion(self, upstream: Upstream) -> UpstreamPool:
        """The blue-green switch: ``upstream`` answers from the next request on; return the old pool.

        Drain the old pool (:meth:`drain`) before stopping its server.
        """
        table = self._table
        self._table = _Table(self._pool(upstream), table.challenger, table.policy)
        logger.info("champion: %s -> %s", table.champion.upstream.name, upstream.name)
        retired = self._retire(table.champion)
        assert retired is not None
        return retired

    def promote_challenger(self) -> UpstreamPool:
        """The challenger becomes the champion (policy single); return the old champion's pool to drain.

        Raises:
            ValueError: there is no challenger.
        """
        table = self._table
        if table.challenger is None:
            raise ValueError("no challenger to promote")
        self._table = _Table(table.challenger, None, RoutingPolicy.single())
        logger.info("promoted %s over %s", table.challenger.upstream.name, table.champion.upstream.name)
        retired = self._retire(table.champion)
        assert retired is not None
        return retired

    async def drain(self, pool: UpstreamPool, timeout_s: float = 30.0) -> bool:
        """Wait until ``pool`` has no request in flight (True), or ``timeout_s`` (False); close it."""
        deadline = time.monotonic() + timeout_s
        while pool.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        drained = pool.in_flight == 0
        await self._close(pool)
        return drained

    async def aclose(self) -> None:
        """Close every connection pool (after the shadow copies still running)."""
        if self._shadow_tasks:
            await asyncio.wait(list(self._shadow_tasks), timeout=self.timeout_s)
        table = self._table
        for pool in [table.champion, table.challenger, *self._retired]:
            if pool is not None:
                await self._close(pool)

    def state(self) -> dict[str, Any]:
        """The routing table and counters (what ``GET /-/router`` answers)."""
        table = self._table
        return {
            "policy": {
                "mode": table.policy.mode,
                "share": table.policy.share,
                "sticky_header": table.policy.sticky_header,
            },
            "champion": table.champion.state(),
            "challenger": None if table.challenger is None else table.challenger.state(),
            "shadow": {
                "sent": self.shadow.sent,
                "dropped": self.shadow.dropped,
                "failed": self.shadow.failed,
                "in_flight": len(self._shadow_tasks),
                "statuses": {str(k): v for k, v in sorted(self.shadow.statuses.items())},
            },
        }

    # ---------------------------------------------------------------------------------- serving

    async def _status(self, request: Request) -> Response:
        return JSONResponse(self.state())

    async def _proxy(self, request: Request) -> Response:
        body = await request.body()
        table = self._table  # one snapshot for the whole request
        role: Role = "champion"
        pool = table.champion
        if (
            table.challenger is not None
            and table.policy.mode == "canary"
            and self._to_challenger(table.policy, request)
        ):
            role, pool = "challenger", table.challenger
        pool.in_flight += 1  # no await since the snapshot: a drain after the switch sees this request
        if table.policy.mode == "shadow" and table.challenger is not None:
            self._start_shadow(table.challenger, request, body)  # runs on its own, never awaited here
        try:
            return await self._forward(pool, role, request, body)
        finally:
            pool.in_flight -= 1

    def _to_challenger(self, policy: RoutingPolicy, request: Request) -> bool:
        if policy.share <= 0.0:
            return False
        if policy.share >= 1.0:
            return True
        key = request.headers.get(policy.sticky_header) if policy.sticky_header else None
        if key is not None:
            digest = hashlib.sha256(key.encode("utf-8")).digest()
            return int.from_bytes(digest[:8], "big") / 2**64 < policy.share
        return self._rng.random() < policy.share

    async def _forward(self, pool: UpstreamPool, role: Role, request: Request, body: bytes) -> Response:
        started = time.monotonic()
        pool.requests += 1
        try:
            upstream = await self._send(pool, request, body)
        except httpx.HTTPError as exc:
            pool.failures += 1
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._emit(Outcome(role, pool.upstream.name, None, _ms(started), time.monotonic(), message))
            logger.warning(
                "%s %s via %s (%s): %s", request.method, request.url.path, role, pool.upstream.url, message
            )
            return JSONResponse(
                {
                    "error": "upstream unavailable",
                    "detail": [
                        {
                            "type": "upstream_error",
                            "loc": [],
                            "msg": f"{role} {pool.upstream.name} did not answer: {message}",
                        }
                    ],
                },
                status_code=502,
                headers={SERVED_BY_HEADER: role},
            )
        if upstream.status_code >= 500:
            pool.failures += 1
        self._emit(Outcome(role, pool.upstream.name, upstream.status_code, _ms(started), time.monotonic()))
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP}
        headers[SERVED_BY_HEADER] = role
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    async def _send(self, pool: UpstreamPool, request: Request, body: bytes) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
        return await pool.client.request(
            request.method,
            request.url.path,
            params=request.url.query or None,
            content=body,
            headers=headers,
        )

    def _start_shadow(self, pool: UpstreamPool, request: Request, body: bytes) -> asyncio.Task[None] | None:
        if len(self._shadow_tasks) >= self.shadow_concurrency:
            self.shadow.dropped += 1
            return None
        self.shadow.sent += 1
        pool.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._shadow_copy(pool, request, body))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)
        return task

    async def _shadow_copy(self, pool: UpstreamPool, request: Request, body: bytes) -> None:
        started = time.monotonic()
        pool.requests += 1
        try:
            answer = await self._send(pool, request, body)
            status: int | None = answer.status_code
            error = None
        except Exception as exc:  # a shadow failure is counted, never raised
            status, error = None, f"{type(exc).__name__}: {exc}"
        finally:
            pool.in_flight -= 1
        if status is None or status >= 500:
            self.shadow.failed += 1
            pool.failures += 1
        if status is not None:
            self.shadow.statuses[status] = self.shadow.statuses.get(status, 0) + 1
        self._emit(Outcome("shadow", pool.upstream.name, status, _ms(started), time.monotonic(), error))

    def _emit(self, outcome: Outcome) -> None:
        for listener in list(self.listeners):
            try:
                listener(outcome)
            except Exception:  # a listener must not fail the request
                logger.exception("outcome listener %r failed", listener)

    # ---------------------------------------------------------------------------------- helpers

    def _pool(self, upstream: Upstream) -> UpstreamPool:
        return UpstreamPool(upstream, self.timeout_s, self.max_connections)

    def _retire(self, pool: UpstreamPool | None) -> UpstreamPool | None:
        if pool is not None:
            self._retired.append(pool)
        return pool

    async def _close(self, pool: UpstreamPool) -> None:
        if not pool.closed:
            pool.closed = True
            await pool.client.aclose()
        if pool in self._retired:
            self._retired.remove(pool)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


class ThreadedServer:
    """An ASGI app served by uvicorn on a loopback port, in a thread (and event loop) of its own."""

    def __init__(
        self,
        app: Any,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        name: str = "asgi",
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.name = name
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=30,
            )
        )
        self._on_stop = on_stop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_loop_started: list[Callable[[], Awaitable[None]]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Self:
        """Serve in a background thread; return once it accepts connections.

        Raises:
            RuntimeError: already started, or it did not start within ``timeout_s``.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name} on {self.url} is already started")
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:  # periodic tasks started on the loop
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"mlp-{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"{self.name} did not start on {self.url} within {timeout_s} s")
            time.sleep(0.02)
        return self

    async def _serve(self) -> None:
        for starter in self._on_loop_started:
            await starter()
        try:
            await self._server.serve()
        finally:
            if self._on_stop is not None:
                await self._on_stop()

    def on_loop_started(self, starter: Callable[[], Awaitable[None]]) -> None:
        """Run ``starter`` on the server's loop when it starts (e.g. to start a periodic task)."""
        self._on_loop_started.append(starter)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = 60.0) -> T:
        """Run ``coroutine`` on the server's loop and return its result (from another thread)."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def run_sync(self, function: Callable[[], T], timeout_s: float | None = 60.0) -> T:
        """Run ``function()`` on the server's loop (between two requests) and return its result."""

        async def wrapper() -> T:
            return function()

        return self.call(wrapper(), timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop serving (requests in flight finish first) and join the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RouterServer(ThreadedServer):
    """A :class:`Router` under uvicorn in a thread; its mutators here run on the router's loop."""

    def __init__(self, router: Router, *, port: int | None = None, host: str = LOOPBACK) -> None:
        super().__init__(router.app, port=port, host=host, name="router", on_stop=router.aclose)
        self.router = router

    def set_policy(self, policy: RoutingPolicy) -> RoutingPolicy:
        return self.run_sync(lambda: self.router.set_policy(policy))

    def replace_champion(self, upstream: Upstream, drain_timeout_s: float = 30.0) -> bool:
        """Switch the champion and wait until the old one has no request in flight (True if drained)."""
        old = self.run_sync(lambda: self.router.replace_champion(upstream))
        return self.call(self.router.drain(old, drain_timeout_s), drain_timeout_s + 10)

    def set_challenger(self, upstream: Upstream | None, drain_timeout_s: float = 30.0) -> bool:
        """Put ``upstream`` (or nothing) in the challenger's place, draining the old challenger."""
        old = self.run_sync(lambda: self.router.set_challenger(upstream))
        if old is None:
            return True
        return self.call(self.router.drain(old, drain_timeout_s), drain_timeout_s + 10)

    def promote_challenger(self, drain_timeout_s: float = 30.0) -> bool:
        """The challenger becomes the champion; wait until the old champion is drained."""
        old = self.run_sync(self.router.promote_challenger)
        return self.call(self.router.drain(old, drain_timeout_s), drain_timeout_s + 10)

    def state(self) -> dict[str, Any]:
        return self.run_sync(self.router.state)
