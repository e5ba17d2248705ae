"""EdgeMiddleware on a stub ASGI app: authentication, request ids, content checks, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.lib.monitoring import metrics as m
from ml_platform.lib.monitoring.metrics import serving_metrics
from ml_platform.lib.serving.http import EdgeConfig, EdgeMiddleware, current_request

Message = dict[str, Any]


class Stub:
    """An app that answers 200 with what it received, or fails as told."""

    def __init__(self, status: int = 200, kind: str | None = None, raises: bool = False) -> None:
        self.status, self.kind, self.raises = status, kind, raises
        self.bodies: list[bytes] = []
        self.states: list[Any] = []

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        state = current_request()
        self.states.append(state)
        if self.raises:
            raise RuntimeError("handler bug")
        if state is not None and self.kind:
            state.error_kind = self.kind
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"{}"})


def call(
    app: EdgeMiddleware,
    path: str = "/predict",
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"{}",
    chunks: int = 1,
    method: str = "POST",
) -> tuple[int, dict[str, str], Any]:
    sent: list[Message] = []
    size = -(-len(body) // chunks) or 1
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(app(scope, receive, send))
    start = next(msg for msg in sent if msg["type"] == "http.response.start")
    payload = b"".join(msg.get("body", b"") for msg in sent if msg["type"] == "http.response.body")
    return (
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        json.loads(payload) if payload else None,
    )


def edge(
    stub: Stub, token: str | None = None, max_body: int = 1000
) -> tuple[EdgeMiddleware, CollectorRegistry]:
    registry = CollectorRegistry()
    config = EdgeConfig(api_paths={"/predict": "predict", "/predict_batch": "predict_batch"})
    config.configure(
        api_token=token, max_body_bytes=max_body, model_version="7", metrics=serving_metrics(registry)
    )
    return EdgeMiddleware(stub, config), registry  # type: ignore[arg-type]


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_request_id_is_echoed_or_created_and_the_body_replayed() -> None:
    stub = Stub()
    app, registry = edge(stub)
    status, headers, _ = call(app, headers={"X-Request-ID": "abc-123"}, body=b'{"a": 1}', chunks=3)
    assert status == 200 and headers["x-request-id"] == "abc-123" and headers["x-model-version"] == "7"
    assert headers["x-app"] == "1"
    assert stub.bodies == [b'{"a": 1}'] and stub.states[0].request_id == "abc-123"
    assert stub.states[0].endpoint == "predict"
    for bad in ("", "x" * 129, "has space", "semi;colon"):
        _, headers, _ = call(app, headers={"X-Request-ID": bad})
        assert headers["x-request-id"] != bad and len(headers["x-request-id"]) == 32
    values = samples(registry)
    assert (
        values[(m.REQUESTS, frozenset({("model_version", "7"), ("endpoint", "predict"), ("status", "200")}))]
        == 5
    )
    assert (
        values[(f"{m.REQUEST_LATENCY}_count", frozenset({("model_version", "7"), ("endpoint", "predict")}))]
        == 5
    )
    assert current_request() is None


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", "Basic c2VjcmV0", "bearer secre", "Bearer secret2"],
)
def test_without_the_token_the_answer_is_401(authorization: str | None) -> None:
    stub = Stub()
    app, registry = edge(stub, token="secret")
    headers = {"Authorization": authorization} if authorization is not None else {}
    status, response_headers, body = call(app, headers=headers)
    assert status == 401 and response_headers["www-authenticate"] == "Bearer"
    assert body["detail"][0]["loc"] == ["header", "Authorization"] and "x-request-id" in response_headers
    assert stub.bodies == [], "an unauthenticated body never reaches the app"
    errors = {k: v for k, v in samples(registry).items() if k[0] == m.REQUEST_ERRORS}
    assert errors == {
        (
            m.REQUEST_ERRORS,
            frozenset({("model_version", "7"), ("endpoint", "predict"), ("kind", "Unauthorized")}),
        ): 1
    }


def test_the_right_token_passes_and_open_paths_need_none() -> None:
    stub = Stub()
    app, registry = edge(stub, token="secret")
    assert call(app, headers={"Authorization": "Bearer secret"})[0] == 200
    assert call(app, headers={"Authorization": "bearer  secret "})[0] == 200
    for path in ("/livez", "/healthz", "/readyz", "/metrics"):
        assert call(app, path, method="GET")[0] == 200, path
    # other routes (the docs) are protected but not counted
    assert call(app, "/docs.json", method="GET")[0] == 401
    assert call(app, "/docs.json", method="GET", headers={"Authorization": "Bearer secret"})[0] == 200
    requests = {k: v for k, v in samples(registry).items() if k[0] == m.REQUESTS}
    assert sum(requests.values()) == 2


def test_no_token_configured_means_no_authentication() -> None:
    app, _ = edge(Stub(), token="")
    assert call(app)[0] == 200


def test_content_type_and_size_are_checked_before_the_app() -> None:
    stub = Stub()
    app, registry = edge(stub, max_body=100)
    status, _, body = call(app, headers={"Content-Type": "text/plain"})
    assert status == 415 and body["detail"][0]["type"] == "unsupported_media_type"
    assert call(app, headers={"Content-Type": "multipart/form-data; boundary=x"})[0] == 415
    assert call(app, headers={"Content-Type": "application/json; charset=utf-8"})[0] == 200
    assert call(app)[0] == 200  # no header: JSON
    status, _, body = call(app, headers={"Content-Length": "101"}, body=b"x" * 101)
    assert status == 413 and body["detail"][0]["loc"] == ["body"]
    # a chunked body without Content-Length is counted while it is read
    assert call(app, body=b"x" * 150, chunks=5)[0] == 413
    assert len(stub.bodies) == 2
    kinds = {dict(k[1])["kind"]: v for k, v in samples(registry).items() if k[0] == m.REQUEST_ERRORS}
    assert kinds == {"UnsupportedMediaType": 2, "PayloadTooLarge": 2}


def test_error_kinds_come_from_the_handler_or_the_status() -> None:
    app, registry = edge(Stub(status=422, kind="UnknownCategory"))
    assert call(app, "/predict_batch")[0] == 422
    app400, registry400 = edge(Stub(status=400))
    assert call(app400)[0] == 400
    failing, registry500 = edge(Stub(raises=True))
    with pytest.raises(RuntimeError, match="handler bug"):
        call(failing)

    def kinds(reg: CollectorRegistry) -> dict[str, float]:
        return {dict(k[1])["kind"]: v for k, v in samples(reg).items() if k[0] == m.REQUEST_ERRORS}

    assert kinds(registry) == {"UnknownCategory": 1}
    assert kinds(registry400) == {"ValidationError": 1}
    assert kinds(registry500) == {"RuntimeError": 1}
    statuses = {dict(k[1])["status"] for k in samples(registry500) if k[0] == m.REQUESTS}
    assert statuses == {"500"}


class Deferring(Stub):
    """A stub handler that leaves work for after its answer, recording when each step happens."""

    def __init__(self, events: list[str], fail_first: bool = False, raises: bool = False) -> None:
        super().__init__(raises=raises)
        self.events = events
        self.fail_first = fail_first
        #: called by the second deferred item (to look at the metrics at that moment)
        self.probe: Callable[[], None] | None = None

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        state = current_request()
        assert state is not None

        def first() -> None:
            self.events.append("deferred 1")
            if self.fail_first:
                raise OSError("disk full")

        state.after_response(first)

        def second() -> None:
            self.events.append("deferred 2")
            if self.probe is not None:
                self.probe()

        state.after_response(second)

        async def recording_send(message: Message) -> None:
            self.events.append(message["type"])
            await send(message)

        await super().__call__(scope, receive, recording_send)


def test_deferred_work_runs_after_the_answer_and_before_the_request_is_counted() -> None:
    events: list[str] = []
    stub = Deferring(events)
    app, registry = edge(stub)
    counted_then: list[float] = []
    stub.probe = lambda: counted_then.append(
        sum(v for k, v in samples(registry).items() if k[0] == m.REQUESTS)
    )
    assert call(app)[0] == 200
    assert events == ["http.response.start", "http.response.body", "deferred 1", "deferred 2"]
    assert counted_then == [0]  # the deferred work ran before the request was counted
    assert sum(v for k, v in samples(registry).items() if k[0] == m.REQUESTS) == 1
    assert current_request() is None


def test_failing_deferred_work_neither_stops_the_rest_nor_changes_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    app, registry = edge(Deferring(events, fail_first=True))
    with caplog.at_level("ERROR", logger="ml_platform.serving"):
        status, _, _ = call(app, headers={"X-Request-ID": "defer-1"})
    assert status == 200 and events[-2:] == ["deferred 1", "deferred 2"]
    assert "defer-1" in caplog.text and "disk full" in caplog.text
    requests = {dict(k[1])["status"]: v for k, v in samples(registry).items() if k[0] == m.REQUESTS}
    assert requests == {"200": 1}
    # a handler that raises after deferring: the work still runs, the request counts as a 500
    events.clear()
    failing, registry500 = edge(Deferring(events, raises=True))
    with pytest.raises(RuntimeError, match="handler bug"):
        call(failing)
    assert events == ["deferred 1", "deferred 2"]
    assert {dict(k[1])["status"] for k in samples(registry500) if k[0] == m.REQUESTS} == {"500"}


def test_documents_are_answered_by_the_middleware_after_authentication() -> None:
    stub = Stub()
    app, _ = edge(stub, token="secret")
    doc = b'{"openapi": "3.1.0"}'
    app.config.configure(
        api_token="secret",
        max_body_bytes=1000,
        model_version="7",
        metrics=None,
        documents={"/docs.json": doc},
    )
    assert call(app, "/docs.json", method="GET")[0] == 401
    status, headers, body = call(app, "/docs.json", method="GET", headers={"Authorization": "Bearer secret"})
    assert (status, headers["content-type"], body) == (200, "application/json", {"openapi": "3.1.0"})
    assert stub.bodies == []  # BentoML's own /docs.json is never reached
    # another method, or another path, goes to the app
    assert call(app, "/docs.json", method="POST", headers={"Authorization": "Bearer secret"})[0] == 200
    assert call(app, "/schema.json", method="GET", headers={"Authorization": "Bearer secret"})[0] == 200
    assert len(stub.bodies) == 2
