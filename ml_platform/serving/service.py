"""``delay_service``: the delay model behind HTTP, a new-style BentoML service.

Endpoints (JSON in, JSON out; see :mod:`ml_platform.lib.serving.schema` for the fields):

* ``POST /predict``: one :class:`FlightRequest` object -> :class:`Prediction`;
* ``POST /predict_batch``: ``{"flights": [FlightRequest, ...]}`` (1 to ``MLP_SERVING_MAX_BATCH``)
  -> :class:`BatchResponse`, one prediction per flight in request order;
* BentoML's own ``GET /livez`` and ``/healthz`` (the process is up), ``/readyz`` (the model is
  loaded and the online store holds a snapshot: :meth:`DelayService.__is_ready__`) and
  ``/metrics`` (Prometheus: BentoML's series plus the ``mlp_*`` serving metrics).

Every answer names the registered model and version that produced it (body and
``X-Model-Version`` header) and the request id (body and ``X-Request-ID``: the caller's, or a new
uuid4).

**Stale online features are answered, and say so.** Each prediction carries ``stale``: true when
the flight departs more than ``MLP_SERVING_FEATURE_FRESHNESS_HOURS`` (default 30) after the online
snapshot's cutoff (``features_as_of``), so its weather is null and its aggregates are days behind
(:mod:`ml_platform.lib.online.freshness`). The service still answers 200 rather than refusing:
staleness is per flight (one far-future flight must not fail a batch of fresh ones), a late
``online_features`` run would otherwise turn every request into an outage though the model still
handles missing weather, and a client asking about a flight months ahead could never get anything
but an error. Every stale answer is counted (``mlp_stale_predictions_total``, alert
``MlpServingStaleFeatures``) and logged (``stale`` and the snapshot's day and content hash on the
log line). The decision is written up in README ("Stale online features").

``GET /docs.json`` is the OpenAPI 3.1 document of this API as the running service answers it
(the served model's codes, the batch limit, bearer auth when a token is set; built by
:func:`~ml_platform.lib.serving.openapi.api_document`, answered by the edge middleware instead of
BentoML's invalid one); ``make test-live`` runs schemathesis against it with every check on.

Errors never come as 5xx for bad input. The body of each is ``{"error": ..., "detail": [{"type",
"loc", "msg"}, ...]}``, ``loc`` being the path of the field (``["flights", 3, "origin"]``):

=====  ===========================================================================================
400    the body is not JSON or does not match the schema: a wrong type, a missing or unknown field,
       a bad code, a distance out of range (pydantic's validation, answered by BentoML)
401    ``MLP_SERVING_API_TOKEN`` is set and ``Authorization: Bearer <token>`` is missing or wrong
413    the body is larger than the limit, or a batch has more than ``MLP_SERVING_MAX_BATCH`` flights
415    a ``Content-Type`` other than ``application/json``
422    the request is well formed but names a carrier or airport the model was not trained on
500    an unexpected error (BentoML's answer: ``{"error": ...}`` only)
503    the online store cannot answer (down, or no snapshot yet)
504    not answered within :data:`REQUEST_TIMEOUT_S` (BentoML's answer: ``{"error": ...}`` only)
=====  ===========================================================================================

How a request is answered: :class:`~ml_platform.lib.serving.http.EdgeMiddleware` authenticates,
assigns the request id, checks content type and size and counts the answer; BentoML parses the body
into the pydantic model; the handler checks the model's vocabularies, then hands the flights to the
:class:`~ml_platform.lib.serving.batching.AdaptiveBatcher`, which scores concurrent requests
together in one thread (online features from the store, then the model); the handler answers, and
the prediction metrics and the prediction log lines are recorded once the answer has been sent.
Each log line names the Bento that served it (``bento_tag``, :func:`served_bento_tag`, read once at
start-up; null when the service is served from source), so an audit can go from a request id to the
Bento, its model version, run and data (``mlp lineage <request id>``).

Which model is served, decided when the service starts:

1. the BentoML model ``model_tag``: ``bentoml build --arg model_tag=delay_model:v3-...`` (the
   argument is stored in the Bento and the Bento references the model, which ``bentoml
   containerize`` copies into the image), ``bentoml serve ... --arg model_tag=...``, or the
   environment variable ``MLP_SERVING_MODEL_TAG`` (serving from source; a Bento built with only
   the variable would reference the model but start without a tag, in mode 2);
2. otherwise the registry: ``MLP_REGISTERED_MODEL`` (the settings' ``registered_model``) at version
   ``MLP_SERVING_MODEL_VERSION``, or at the alias ``MLP_SERVING_MODEL_ALIAS`` (default
   ``champion``), from ``MLP_MLFLOW_TRACKING_URI``; packaged into a model store under the temp
   folder first (:func:`~ml_platform.lib.serving.packaging.package_version`), then loaded.

Latency tuning (``benchmarks/serving_latency.py``, docs/benchmarks.md "Serving latency"): what
made BentoML's tail, and what the service sets instead:

* **Full garbage collections.** The worker's heap after start-up (torch, polars, BentoML and
  their imports) holds ~390,000 objects; a full collection walks them all (~200 ms). BentoML's
  ``TimeoutMiddleware`` schedules one ``call_later(traffic.timeout)`` per request and never
  cancels it, so every request leaves a timer (six objects) alive for the whole timeout: they
  survive into the old generation and trigger a full collection every thousand or so requests
  under load. The service freezes its start-up heap (:func:`settle_heap`: ``gc.collect()`` then
  ``gc.freeze()``, so collections skip it) and uses a short ``traffic.timeout``
  (:data:`REQUEST_TIMEOUT_S`, 5 s: fewer live timers; a request that takes that long is broken).
* **The prediction log's JSON.** Turning a line into JSON takes ~70 us of Python in the writer
  thread; a flush of 256 lines held the GIL for ~18 ms, delaying every request in flight. The
  handler now hands its lines over *after* the answer is sent
  (:meth:`~ml_platform.lib.serving.http.RequestState.after_response`) and the writer flushes
  every :data:`PREDICTION_LOG_FLUSH_LINES` lines (or every second), ~0.3 ms of GIL at a time.
* **Per-request work of unused features.** BentoML wraps every request in an OpenTelemetry span
  (three more for the answer's messages) even when nothing samples or exports them, and writes an
  access log line through :mod:`logging`: together about half of the event loop's time per
  request. The API routes are excluded from tracing and the access log is off
  (:data:`SERVICE_CONFIG`); every answer is still counted in ``mlp_requests_total`` and every
  prediction is in the prediction log, with its request id. To trace or log the API routes again,
  override the service's BentoML config, e.g. ``BENTOML_CONFIG_OPTIONS=
  "services.delay_service.logging.access.enabled=true
  services.delay_service.tracing.excluded_urls=[]"`` (with a tracing exporter configured).

The rest of the configuration is :class:`~ml_platform.settings.PlatformSettings`, read when the
service starts: ``serving_api_token``, ``serving_max_batch``, ``online_store_url`` (or the embedded
store at ``online_store_path``; the Kubernetes manifests set ``MLP_ONLINE_STORE_URL`` from a
Secret), ``online_store_namespace``, ``serving_model_version`` / ``serving_model_alias``,
``serving_torch_threads`` (default 1: a small MLP on a few rows is fastest on one thread),
``prediction_log_dir``. Two environment variables are read when this module is imported, because
BentoML's decorator needs them then: ``MLP_SERVING_MODEL_TAG`` (above) and ``MLP_SERVING_WORKERS``
(worker processes, default 1).
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import bentoml
from pydantic import BaseModel
from starlette.responses import JSONResponse

from ml_platform.lib.serving.http import (
    EdgeConfig,
    EdgeMiddleware,
    RequestState,
    current_request,
    new_request_id,
)
from ml_platform.lib.serving.schema import (
    BatchRequest,
    BatchResponse,
    ErrorDetail,
    ErrorResponse,
    FlightRequest,
    Prediction,
    unknown_categories,
)

if TYPE_CHECKING:
    from ml_platform.lib.monitoring.metrics import ServingMetrics
    from ml_platform.lib.serving.packaging import ServedModelInfo
    from ml_platform.lib.serving.prediction_log import LogRecord
    from ml_platform.lib.serving.predictor import ScoredFlight
    from ml_platform.settings import PlatformSettings

SERVICE_NAME: Final = "delay_service"
MODEL_TAG_ENV: Final = "MLP_SERVING_MODEL_TAG"
#: API route -> the ``endpoint`` label of the metrics and the log.
ROUTES: Final = {"/predict": "predict", "/predict_batch": "predict_batch"}
#: Bytes a flight may take in a batch body (pretty-printed JSON is ~250), for the body limit.
BYTES_PER_FLIGHT: Final = 1024
#: BentoML's ``traffic.timeout``: a request not answered in this many seconds gets 504. Short,
#: because BentoML keeps one timer per request alive this long (see the module doc).
REQUEST_TIMEOUT_S: Final = 5
#: Prediction-log lines the writer thread turns into JSON at a time: the default, 256, held the
#: GIL for ~18 ms; 4 lines take ~0.3 ms (fewer cost more per line: a file append and a thread
#: wake-up each). At low traffic the writer's 1 s timer flushes.
PREDICTION_LOG_FLUSH_LINES: Final = 4
#: The BentoML configuration of the service (``@bentoml.service``); see the module doc.
SERVICE_CONFIG: Final[dict[str, Any]] = {
    "traffic": {"timeout": REQUEST_TIMEOUT_S},
    "logging": {"access": {"enabled": False}},
    "tracing": {"excluded_urls": list(ROUTES)},
}

logger = logging.getLogger("ml_platform.serving")


class BentoArgs(BaseModel):
    """Template arguments (``--arg name=value`` of ``bentoml build`` and ``bentoml serve``)."""

    #: The BentoML model to serve, e.g. ``delay_model:v3-0123456789ab``.
    model_tag: str | None = None


ARGS: Final = bentoml.use_arguments(BentoArgs)
MODEL_TAG: Final = ARGS.model_tag or os.environ.get(MODEL_TAG_ENV) or None
#: Worker processes (``MLP_SERVING_WORKERS``, read at import: BentoML needs it to start them). Each
#: loads the model and has its own batcher and prediction log file; the metrics are summed.
WORKERS: Final = int(os.environ.get("MLP_SERVING_WORKERS", "1"))
#: What the edge middleware enforces; filled when the service starts.
EDGE: Final = EdgeConfig(api_paths=dict(ROUTES))

_metrics: ServingMetrics | None = None


def settle_heap() -> None:
    """Collect the start-up garbage, then freeze what is left out of the collector's reach.

    Called once the service is loaded and warm: the modules, the model and the store stay alive
    for the whole process, and a full collection then walks only what requests made since.
    """
    gc.collect()
    gc.freeze()


def served_bento_tag() -> str | None:
    """The tag (``name:version``) of the Bento this worker serves; None when it serves no Bento.

    BentoML's worker (``_bentoml_impl.worker.service``) sets ``server_context.bento_name`` and
    ``bento_version`` from the loaded Bento before it builds the ASGI app, and the app creates the
    service instance in its lifespan start-up, so the tag is known when ``DelayService.__init__``
    runs. A service served from source (``bentoml serve ml_platform.serving.service:DelayService``)
    has no Bento: the worker sets the version ``"not available"`` (also the default outside a
    worker).
    """
    context = bentoml.server_context
    name, version = context.bento_name, context.bento_version
    if not name or not version or version == "not available":
        return None
    return f"{name}:{version}"


def process_metrics() -> ServingMetrics:
    """The serving metrics of this process, created once on prometheus_client's default registry.

    BentoML serves ``/metrics`` from the multiprocess directory its workers share (the values go
    there whatever the registry), or from the default registry when it runs single-process.
    """
    global _metrics
    if _metrics is None:
        import prometheus_client

        from ml_platform.lib.monitoring.metrics import serving_metrics

        _metrics = serving_metrics(prometheus_client.REGISTRY)
    return _metrics


@bentoml.service(
    name=SERVICE_NAME,
    workers=WORKERS,
    labels={"ml-platform/model": "delay_model"},
    **SERVICE_CONFIG,
)
class DelayService:
    """Predicts arrival delays of flights from what a caller knows plus the online features."""

    bento_model = bentoml.models.BentoModel(MODEL_TAG) if MODEL_TAG else None

    def __init__(self) -> None:
        import torch

        from ml_platform.lib.online import open_online_store
        from ml_platform.lib.serving.batching import AdaptiveBatcher
        from ml_platform.lib.serving.packaging import load_served_model
        from ml_platform.lib.serving.prediction_log import PredictionLog
        from ml_platform.lib.serving.predictor import Predictor, resolve_device
        from ml_platform.settings import PlatformSettings

        started = time.perf_counter()
        logger.setLevel(logging.INFO)  # BentoML leaves the root logger at WARNING
        #: The Bento every prediction-log line names (None: served from source).
        self.bento_tag = served_bento_tag()
        settings = PlatformSettings()
        torch.set_num_threads(settings.serving_torch_threads)
        info = self._served_model(settings)
        store = open_online_store(
            settings.online_store_url,
            settings.online_store_path,
            namespace=settings.online_store_namespace,
        )
        device = resolve_device(settings.serving_device)
        self.predictor = Predictor(
            load_served_model(info.path),
            info,
            store,
            device,
            freshness_budget=timedelta(hours=settings.serving_feature_freshness_hours),
        )
        self.max_batch = settings.serving_max_batch
        self.batcher = AdaptiveBatcher(self.predictor.score, max_batch=self.max_batch)
        self.metrics = process_metrics()
        self.prediction_log = PredictionLog(
            settings.prediction_log_dir, flush_lines=PREDICTION_LOG_FLUSH_LINES, on_error=self._log_lost
        )
        self.prediction_log.start()
        EDGE.configure(
            api_token=settings.serving_api_token,
            max_body_bytes=self.max_batch * BYTES_PER_FLIGHT + 16_384,
            model_version=info.model_version,
            metrics=self.metrics,
            documents={"/docs.json": self._openapi_document(settings, info)},
        )
        self._warm_up()
        settle_heap()
        logger.info(
            "serving %s from %s; Bento %s; online store %s; prediction log %s; started in %.1f s",
            info.describe(),
            info.path,
            self.bento_tag or "none (served from source)",
            store.describe(),
            settings.prediction_log_dir,
            time.perf_counter() - started,
        )

    def _openapi_document(self, settings: PlatformSettings, info: ServedModelInfo) -> bytes:
        """``/docs.json``: the API as this service answers it (model vocabularies, batch limit, auth).

        BentoML's own document is neither valid nor true (:mod:`ml_platform.lib.serving.openapi`).
        """
        import json

        from ml_platform.lib.serving.openapi import api_document

        document = api_document(
            title=SERVICE_NAME,
            version=f"{info.model_name}/{info.model_version}",
            vocabularies=self.predictor.vocabularies,
            max_batch=self.max_batch,
            bearer_auth=bool(settings.serving_api_token),
        )
        return json.dumps(document).encode()

    def _served_model(self, settings: PlatformSettings) -> ServedModelInfo:
        from ml_platform.lib.serving.packaging import package_version, resolve_alias, served_model_info

        if MODEL_TAG is not None:
            try:
                stored = self.bento_model
            except Exception as exc:
                raise RuntimeError(
                    f"BentoML model {MODEL_TAG} is not in the model store: package it first"
                    " (ml_platform.lib.serving.packaging.package_version)"
                ) from exc
            return served_model_info(stored)
        tracking_uri = str(settings.mlflow_tracking_uri)
        version = settings.serving_model_version or resolve_alias(
            tracking_uri, settings.registered_model, settings.serving_model_alias
        )
        models_dir = Path(tempfile.gettempdir()) / "mlp-serving-models"
        models_dir.mkdir(parents=True, exist_ok=True)
        with (models_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # workers start together: one packages, the others reuse
            return package_version(tracking_uri, settings.registered_model, version, models_dir=models_dir)

    def _warm_up(self) -> None:
        """Score one flight the model knows, so the first request pays no lazy initialization."""
        from ml_platform.lib.online.store import OnlineStoreError

        vocab = self.predictor.vocabularies
        try:
            origin = sorted(vocab["origin"])[0]
            dest = next(d for d in sorted(vocab["dest"]) if d != origin)
            flight = FlightRequest(
                carrier=sorted(vocab["carrier"])[0],
                flight=1,
                origin=origin,
                dest=dest,
                scheduled_departure=datetime.now(UTC),
                distance=500.0,
            )
            self.batcher.run_in_thread(self.predictor.score, [flight])
        except (OnlineStoreError, KeyError, StopIteration, ValueError) as exc:
            logger.warning("warm-up skipped: %s", exc)

    def __is_ready__(self) -> bool:
        """Ready when the online store holds a snapshot (the model is loaded by then)."""
        from ml_platform.lib.online.store import OnlineStoreError

        try:
            return self.predictor.store.info() is not None
        except OnlineStoreError as exc:
            logger.warning("not ready: %s", exc)
            return False

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Finish the running batch, write the rest of the prediction log, close the store."""
        self.batcher.close()
        self.prediction_log.close()
        close = getattr(self.predictor.store, "close", None)
        if callable(close):
            close()

    # -- the API ----------------------------------------------------------------------------------

    @bentoml.api(route="/predict")
    async def predict(self, flight: FlightRequest, /) -> Prediction:
        """Predict the arrival delay of one flight."""
        state = _request_state("predict")
        errors = unknown_categories([flight], self.predictor.vocabularies, indexed=False)
        if errors:
            return _error(state, 422, "unknown category", errors, "UnknownCategory")  # type: ignore[return-value]
        scored = await self._score(state, [flight])
        if isinstance(scored, JSONResponse):
            return scored  # type: ignore[return-value]
        self._record(state, [flight], scored)
        return self._prediction(state.request_id, scored[0])

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, batch: BatchRequest, /) -> BatchResponse:
        """Predict the arrival delays of several flights (answered in request order)."""
        state = _request_state("predict_batch")
        flights = batch.flights
        if len(flights) > self.max_batch:
            detail = ErrorDetail(
                type="too_many_flights",
                loc=["flights"],
                msg=f"flights: at most {self.max_batch} flights per request, got {len(flights)}",
            )
            return _error(state, 413, "batch too large", [detail], "TooManyFlights")  # type: ignore[return-value]
        errors = unknown_categories(flights, self.predictor.vocabularies, ("flights",))
        if errors:
            return _error(state, 422, "unknown category", errors, "UnknownCategory")  # type: ignore[return-value]
        scored = await self._score(state, flights)
        if isinstance(scored, JSONResponse):
            return scored  # type: ignore[return-value]
        self._record(state, flights, scored)
        info = self.predictor.info
        return BatchResponse(
            request_id=state.request_id,
            model_name=info.model_name,
            model_version=info.model_version,
            predictions=[self._prediction(state.request_id, s) for s in scored],
        )

    # -- helpers ----------------------------------------------------------------------------------

    async def _score(
        self, state: RequestState, flights: list[FlightRequest]
    ) -> list[ScoredFlight] | JSONResponse:
        from ml_platform.lib.online.store import OnlineStoreError

        try:
            return await self.batcher.submit(flights)
        except OnlineStoreError as exc:
            logger.error("request %s: %s", state.request_id, exc)
            detail = ErrorDetail(type="online_store_unavailable", loc=[], msg=str(exc))
            return _error(state, 503, "online features unavailable", [detail], "OnlineStoreError")
        except Exception as exc:
            state.error_kind = type(exc).__name__
            raise

    def _prediction(self, request_id: str, scored: ScoredFlight) -> Prediction:
        info = self.predictor.info
        return Prediction(
            request_id=request_id,
            model_name=info.model_name,
            model_version=info.model_version,
            predicted_arr_delay=scored.predicted_arr_delay,
            delay_probability=scored.delay_probability,
            features_as_of=scored.features_as_of,
            weather_observed_at=scored.weather_observed_at,
            stale=scored.stale,
        )

    def _record(self, state: RequestState, flights: list[FlightRequest], scored: list[ScoredFlight]) -> None:
        """The prediction metrics and the prediction log lines of one answered request.

        The latency is taken now (the prediction is ready); the rest waits until the answer has
        been sent (:meth:`RequestState.after_response`), or runs at once for a request that did
        not come through the edge middleware.
        """
        latency_ms = state.elapsed_ms()
        now = datetime.now(UTC)
        if current_request() is state:
            state.after_response(lambda: self._log(state, flights, scored, latency_ms, now))
        else:
            self._log(state, flights, scored, latency_ms, now)

    def _log(
        self,
        state: RequestState,
        flights: list[FlightRequest],
        scored: list[ScoredFlight],
        latency_ms: float,
        now: datetime,
    ) -> None:
        from ml_platform.lib.serving.prediction_log import LogRecord

        info = self.predictor.info
        version = info.model_version
        records: list[LogRecord] = []
        stale = sum(result.stale for result in scored)
        if stale:
            self.metrics.observe_stale(model_version=version, endpoint=state.endpoint, count=stale)
        for index, (flight, result) in enumerate(zip(flights, scored, strict=True)):
            self.metrics.observe_prediction(
                model_version=version,
                delay_minutes=result.predicted_arr_delay,
                probability=result.delay_probability,
            )
            records.append(
                LogRecord(
                    logged_at=now,
                    request_id=state.request_id,
                    endpoint=state.endpoint,
                    index=index,
                    model_name=info.model_name,
                    model_version=version,
                    bento_tag=self.bento_tag,
                    latency_ms=latency_ms,
                    request=flight.as_row(),
                    features=result.features,
                    row=result.row,
                    predicted_arr_delay=result.predicted_arr_delay,
                    delay_probability=result.delay_probability,
                    snapshot=result.snapshot,
                    stale=result.stale,
                )
            )
        self.prediction_log.append(records)

    def _log_lost(self, lost: list[LogRecord], exc: BaseException) -> None:
        import sys

        print(f"prediction log: {len(lost)} line(s) lost: {type(exc).__name__}: {exc}", file=sys.stderr)
        for record in lost:
            self.metrics.observe_error(
                model_version=record.model_version, endpoint=record.endpoint, kind="PredictionLogError"
            )


def _request_state(endpoint: str) -> RequestState:
    """The middleware's state of this request (a fresh one if the request bypassed it)."""
    return current_request() or RequestState(new_request_id(), endpoint, time.perf_counter())


def _error(
    state: RequestState, status: int, error: str, detail: list[ErrorDetail], kind: str
) -> JSONResponse:
    state.error_kind = kind
    body: dict[str, Any] = ErrorResponse(error=error, detail=detail).model_dump(mode="json")
    return JSONResponse(body, status_code=status)


DelayService.add_asgi_middleware(EdgeMiddleware, config=EDGE)
