"""The serving path scores exactly what the offline path scores, on real feature days."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.online import REQUEST_COLUMNS, REQUEST_SCHEMA, online_features, open_online_store
from ml_platform.lib.serving.predictor import Predictor, ServingModel
from ml_platform.lib.serving.schema import FlightRequest
from ml_platform.lib.training.data import INPUT_COLUMNS
from ml_platform.lib.training.pyfunc import DelayModel
from ml_platform_tests.serving.conftest import SNAPSHOT_DAY, ServingWorld

pytestmark = pytest.mark.slow


def requests_of(rows: pl.DataFrame) -> list[FlightRequest]:
    return [
        FlightRequest(**{**row, "scheduled_departure": row["scheduled_departure"].astimezone(UTC)})
        for row in rows.select(REQUEST_COLUMNS).iter_rows(named=True)
    ]


def with_gaps(features: pl.DataFrame) -> pl.DataFrame:
    """The day plus copies with missing weather and aggregates and categories the model never saw."""
    gaps = features.head(20).with_columns(
        *[
            pl.lit(None, dtype=features.schema[c]).alias(c)
            for c in ("temp", "wind_gust", "weather_age_minutes")
        ],
        pl.lit(None, dtype=pl.Float64).alias("route_delay_mean_7d"),
        pl.lit("ZZ").alias("carrier"),
        pl.lit("XYZ").alias("dest"),
        pl.lit(float("nan")).alias("pressure"),
    )
    return pl.concat([features, gaps])


def test_serving_encoding_is_the_preprocessors(world: ServingWorld) -> None:
    features = with_gaps(world.features)
    serving = ServingModel(world.model)
    assert serving.compiled
    expected = world.model.preprocessor.encode(features.select(INPUT_COLUMNS))
    encoded = serving.encode(features)
    assert np.array_equal(encoded.categorical, expected.categorical)
    assert (encoded.categorical[-20:, [0, 2]] == 0).all()  # unknown carrier and dest: index 0
    assert encoded.numeric.dtype == expected.numeric.dtype == np.float32
    assert np.array_equal(encoded.numeric, expected.numeric)
    assert encoded.numeric[-1, -1] == 1.0  # weather_missing
    delay, probability = serving.predict(features)
    offline_delay, offline_probability = world.model.predict_frame(features)
    assert np.array_equal(delay, offline_delay) and np.array_equal(probability, offline_probability)
    # one row at a time as well
    for row in range(0, features.height, 97):
        one = features.slice(row, 1)
        assert serving.predict(one)[0][0] == pytest.approx(float(offline_delay[row]), abs=1e-5)


def test_a_spec_with_other_columns_falls_back_to_predict_frame(world: ServingWorld) -> None:
    model = DelayModel()
    model.network = world.model.network
    model.preprocessor = dataclasses.replace(
        world.model.preprocessor, numeric_columns=[*world.model.preprocessor.numeric_columns, "extra"]
    )
    serving = ServingModel(model)
    assert not serving.compiled
    called: list[int] = []
    model.predict_frame = lambda frame: (called.append(frame.height), (np.zeros(1), np.zeros(1)))[1]  # type: ignore[method-assign]
    serving.predict(world.features.head(1))
    assert called == [1]


def test_predictor_answers_equal_offline_predictions(world: ServingWorld) -> None:
    store = open_online_store(None, world.settings.online_store_path)
    predictor = Predictor(world.model, world.packaged, store)
    try:
        rows = world.known_flights()
        assert rows.height > 500
        flights = requests_of(rows)
        frame = predictor.request_frame(flights)
        assert frame.schema == pl.Schema(REQUEST_SCHEMA)
        assert_frame_equal(frame, rows.select(REQUEST_COLUMNS).cast(REQUEST_SCHEMA))  # type: ignore[arg-type]
        scored = predictor.score(flights)
        offline_delay, offline_probability = world.model.predict_frame(rows)
        np.testing.assert_allclose([s.predicted_arr_delay for s in scored], offline_delay, atol=1e-4, rtol=0)
        np.testing.assert_allclose(
            [s.delay_probability for s in scored], offline_probability, atol=1e-6, rtol=0
        )
        assert [s.features_as_of for s in scored] == rows["aggregates_as_of"].to_list()
        assert [s.weather_observed_at for s in scored] == rows["weather_observed_at"].to_list()
        assert_frame_equal(scored[0].features, online_features(frame, store))
        assert {s.row for s in scored} == set(range(len(flights)))
        assert set(predictor.vocabularies) == {"carrier", "origin", "dest"}
    finally:
        store.close()


# -- stale online features (#15 item 5) and the snapshot each answer names (item 4) -------------------


def later(flights: list[FlightRequest], delta: timedelta) -> list[FlightRequest]:
    return [f.model_copy(update={"scheduled_departure": f.scheduled_departure + delta}) for f in flights]


def test_a_flight_beyond_the_budget_is_scored_and_flagged_stale(world: ServingWorld) -> None:
    """The snapshot of SNAPSHOT_DAY answers flights of its day fresh; the same flights two days later,
    or in 2026, get null weather from it and are flagged; every answer names the snapshot."""
    store = open_online_store(None, world.settings.online_store_path)
    predictor = Predictor(world.model, world.packaged, store, freshness_budget=timedelta(hours=30))
    try:
        fresh = requests_of(world.known_flights(3))
        two_days = later(fresh, timedelta(days=2))
        in_2026 = [
            f.model_copy(update={"scheduled_departure": datetime(2026, 5, 1, 21, tzinfo=UTC)}) for f in fresh
        ]
        scored = predictor.score([*fresh, *two_days, *in_2026])
        assert [s.stale for s in scored] == [False] * 3 + [True] * 6
        assert all(s.weather_observed_at is None for s in scored[3:])  # the symptom of the issue
        held = store.info()
        assert held is not None and {s.snapshot for s in scored} == {held.ref}
        assert held.ref.day == SNAPSHOT_DAY
        # still the model's answer from those features: a stale flight is scored, not refused
        assert all(0.0 <= s.delay_probability <= 1.0 for s in scored)
        # a tighter budget makes a flight of the next morning stale too
        strict = Predictor(world.model, world.packaged, store, freshness_budget=timedelta(hours=1))
        assert [s.stale for s in strict.score(fresh)] == [
            f.scheduled_departure - held.aggregates_as_of > timedelta(hours=1) for f in fresh
        ]
        with pytest.raises(ValueError, match="must be positive"):
            Predictor(world.model, world.packaged, store, freshness_budget=timedelta(0))
    finally:
        store.close()


def test_the_service_answers_counts_and_logs_stale_predictions(world: ServingWorld, tmp_path: Path) -> None:
    """The handler's path after scoring (no server): the answer's flag, the counter, the log line."""
    from prometheus_client import CollectorRegistry

    from ml_platform.lib.monitoring import metrics as m
    from ml_platform.lib.serving.http import RequestState
    from ml_platform.lib.serving.prediction_log import PredictionLog, read_day
    from ml_platform.serving.service import DelayService

    store = open_online_store(None, world.settings.online_store_path)
    registry = CollectorRegistry()
    service: Any = object.__new__(DelayService.inner)  # the handler's helpers, without BentoML's start-up
    service.predictor = Predictor(world.model, world.packaged, store)
    service.metrics = m.serving_metrics(registry)
    service.bento_tag = "delay_service:v1-0123456789abcdef"
    service.prediction_log = PredictionLog(tmp_path, file_stem="unit", flush_seconds=3600)
    try:
        fresh = requests_of(world.known_flights(2))
        flights = [*fresh, *later(fresh, timedelta(days=3))]
        scored = service.predictor.score(flights)
        answers = [service._prediction("req-stale", s) for s in scored]
        assert [a.stale for a in answers] == [False, False, True, True]
        assert all(a.model_dump(mode="json")["stale"] is a.stale for a in answers)
        service._record(RequestState("req-stale", "predict_batch", time.perf_counter()), flights, scored)
        version = world.packaged.model_version
        labels = {"model_version": version, "endpoint": "predict_batch"}
        assert registry.get_sample_value(m.STALE_PREDICTIONS, labels) == 2
        assert registry.get_sample_value(f"{m.PREDICTION}_count", {"model_version": version}) == 4
        service.prediction_log.close()
        held = store.info()
        assert held is not None
        rows = []
        for day in {SNAPSHOT_DAY, SNAPSHOT_DAY + timedelta(days=3)}:
            read = read_day(tmp_path, day)
            assert read is not None and read.quarantined.height == 0
            rows += read.frame.sort("index").iter_rows(named=True)
        assert sorted((r["index"], r["stale"]) for r in rows) == [
            (0, False),
            (1, False),
            (2, True),
            (3, True),
        ]
        assert {
            (r["online_snapshot_day"], r["online_snapshot_hash"], r["online_snapshot_written_at"])
            for r in rows
        } == {(held.day, held.content_hash, held.written_at)}
    finally:
        service.prediction_log.close()
        store.close()
