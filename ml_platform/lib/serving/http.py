"""The HTTP edge of the served model: one pure ASGI middleware in front of the API routes.

For every request to an API route (``/predict``, ``/predict_batch``), in this order:

1. **Authentication**, when a token is configured (``MLP_SERVING_API_TOKEN``): the request must
   carry ``Authorization: Bearer <token>``, compared in constant time (:func:`hmac.compare_digest`);
   otherwise 401 with ``WWW-Authenticate: Bearer``. Every other route is protected too (the
   OpenAPI page, ``/schema.json``), except the probes and ``/metrics`` (:data:`OPEN_PATHS`),
   which Kubernetes and Prometheus call without credentials.

   The documents of :attr:`EdgeConfig.documents` (``GET /docs.json``: the service's OpenAPI
   document, :mod:`ml_platform.lib.serving.openapi`) are answered here, after authentication,
   instead of by BentoML.
2. **Request id**: ``X-Request-ID`` when it is a sane token (1-128 characters of
   ``[A-Za-z0-9._:-]``), else a new uuid4; echoed in the response header and the body.
3. **Content type**: a body must be ``application/json`` (a missing header counts as JSON);
   anything else is 415 (BentoML would otherwise pick a multipart or pickle decoder for it).
4. **Body size**: more than ``max_body_bytes`` (``Content-Length`` or counted while reading) is
   413 before anything is parsed. The body is read here and replayed to the app.
5. **Metrics** (``mlp_requests_total``, ``mlp_request_latency_seconds``,
   ``mlp_request_errors_total``), every answer counted with its status, the endpoint and the
   served ``model_version``; errors (4xx and 5xx) with a ``kind``: the one the handler names
   (:attr:`RequestState.error_kind`) or one derived from the status. Before that, once the app
   has answered, the work the handler left for after the answer
   (:meth:`RequestState.after_response`: the prediction metrics and log lines) runs.

The handler finds the request's id, endpoint and start time through :func:`current_request` (a
context variable: the middleware and the handler run in the same task). Error bodies have the
shape of :class:`~ml_platform.lib.serving.schema.ErrorResponse`.

No BentoML and no Starlette import: the middleware is plain ASGI, so it costs a few dict lookups.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ml_platform.lib.monitoring.metrics import ServingMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes answered without a token and never counted: BentoML's probes and the Prometheus scrape.
OPEN_PATHS: Final = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
REQUEST_ID_HEADER: Final = "x-request-id"
MODEL_VERSION_HEADER: Final = "x-model-version"
logger = logging.getLogger("ml_platform.serving")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
#: The error kind of a status when the handler named none.
STATUS_KINDS: Final = {
    400: "ValidationError",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "UnknownCategory",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class RequestState:
    """What the middleware knows about the request being handled."""

    request_id: str
    endpoint: str
    #: ``time.perf_counter()`` when the middleware received the request.
    started: float
    #: Set by the handler when it answers an error, e.g. "UnknownCategory", "OnlineStoreError".
    error_kind: str | None = None
    #: Work the handler left for after the answer has been sent (:meth:`after_response`).
    deferred: list[Callable[[], object]] = field(default_factory=list)

    def elapsed_ms(self) -> float:
        """Milliseconds since the request was received."""
        return (time.perf_counter() - self.started) * 1000.0

    def after_response(self, work: Callable[[], object]) -> None:
        """Run ``work`` once the answer has been handed to the server (the middleware does)."""
        self.deferred.append(work)

    def run_deferred(self) -> None:
        """Run (and forget) the deferred work, in order; one that fails does not stop the others."""
        work, self.deferred = self.deferred, []
        for item in work:
            try:
                item()
            except Exception:  # the answer is out: log it, go on with the rest
                logger.exception("work after the answer of request %s failed", self.request_id)


_current: ContextVar[RequestState | None] = ContextVar("mlp_serving_request", default=None)


def current_request() -> RequestState | None:
    """The request the calling handler serves (None outside a request that went through the middleware)."""
    return _current.get()


def new_request_id() -> str:
    """A fresh request id (uuid4, hex)."""
    return uuid.uuid4().hex


@dataclass
class EdgeConfig:
    """What the middleware enforces; the service fills it at startup (``configure``)."""

    #: API route -> endpoint label, e.g. ``{"/predict": "predict"}``.
    api_paths: dict[str, str] = field(default_factory=dict)
    api_token: str | None = None
    max_body_bytes: int = 1 << 20
    model_version: str = "unknown"
    metrics: ServingMetrics | None = None
    open_paths: frozenset[str] = OPEN_PATHS
    #: JSON documents answered to ``GET path`` by the middleware, e.g. ``{"/docs.json": b"{...}"}``.
    documents: dict[str, bytes] = field(default_factory=dict)

    def configure(
        self,
        *,
        api_token: str | None,
        max_body_bytes: int,
        model_version: str,
        metrics: ServingMetrics | None,
        documents: dict[str, bytes] | None = None,
    ) -> None:
        """Set everything but the routes (an empty token means no authentication)."""
        self.api_token = api_token or None
        self.max_body_bytes = max_body_bytes
        self.model_version = model_version
        self.metrics = metrics
        self.documents = dict(documents or {})


def error_body(error: str, detail: list[dict[str, Any]] | None = None) -> bytes:
    """An :class:`~ml_platform.lib.serving.schema.ErrorResponse` body."""
    return json.dumps({"error": error, "detail": detail or []}).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class EdgeMiddleware:
    """Authentication, request ids, content checks and metrics for the API routes (see module doc)."""

    def __init__(self, app: ASGIApp, config: EdgeConfig) -> None:
        self.app = app
        self.config = config

    def _authorized(self, scope: Scope) -> bool:
        token = self.config.api_token
        if not token:
            return True
        given = _header(scope, b"authorization") or ""
        scheme, _, credentials = given.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.config.open_paths:
            await self.app(scope, receive, send)
            return
        endpoint = self.config.api_paths.get(scope["path"])
        if endpoint is None:
            if not self._authorized(scope):
                await _reply(send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
            document = self.config.documents.get(scope["path"])
            if document is not None and scope.get("method") == "GET":
                await _reply(send, 200, document, [])
                return
            await self.app(scope, receive, send)
            return

        given_id = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else new_request_id()
        state = RequestState(request_id, endpoint, time.perf_counter())
        token = _current.set(state)
        status = 500
        extra = [
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
            (MODEL_VERSION_HEADER.encode(), self.config.model_version.encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            rejection = self._reject(scope)
            if rejection is not None:
                status, kind, body, headers = rejection
                state.error_kind = kind
                await _reply(send, status, body, [*headers, *extra])
                return
            body_or_error = await _read_body(receive, self.config.max_body_bytes)
            if isinstance(body_or_error, int):
                status = 413
                state.error_kind = "PayloadTooLarge"
                await _reply(send, 413, _too_large(self.config.max_body_bytes), extra)
                return
            await self.app(scope, _replay(body_or_error, receive), send_with_headers)
        except Exception as exc:
            status = 500
            state.error_kind = state.error_kind or type(exc).__name__
            raise
        finally:
            _current.reset(token)
            state.run_deferred()
            self._observe(state, status)

    def _reject(self, scope: Scope) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]] | None:
        if not self._authorized(scope):
            return 401, "Unauthorized", _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")]
        content_type = _header(scope, b"content-type")
        if content_type is not None and scope.get("method") == "POST":
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "application/json":
                body = error_body(
                    "unsupported media type",
                    [
                        {
                            "type": "unsupported_media_type",
                            "loc": ["header", "Content-Type"],
                            "msg": f"the body must be application/json, not {media[:60]!r}",
                        }
                    ],
                )
                return 415, "UnsupportedMediaType", body, []
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.config.max_body_bytes:
            return 413, "PayloadTooLarge", _too_large(self.config.max_body_bytes), []
        return None

    def _observe(self, state: RequestState, status: int) -> None:
        metrics = self.config.metrics
        if metrics is None:
            return
        version = self.config.model_version
        seconds = time.perf_counter() - state.started
        metrics.observe_request(
            model_version=version, endpoint=state.endpoint, status=status, seconds=seconds
        )
        if status >= 400:
            kind = state.error_kind or STATUS_KINDS.get(status) or f"HTTP{status}"
            metrics.observe_error(model_version=version, endpoint=state.endpoint, kind=kind)


_UNAUTHORIZED: Final = error_body(
    "unauthorized",
    [
        {
            "type": "unauthorized",
            "loc": ["header", "Authorization"],
            "msg": "this service needs 'Authorization: Bearer <token>' with a valid token",
        }
    ],
)


def _too_large(limit: int) -> bytes:
    return error_body(
        "payload too large",
        [{"type": "payload_too_large", "loc": ["body"], "msg": f"the body must be at most {limit} bytes"}],
    )


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | int:
    """The whole body, or the byte count at which it passed ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return size
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay
