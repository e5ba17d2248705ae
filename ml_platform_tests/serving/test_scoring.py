"""The serving path scores exactly what the offline path scores, on real feature days."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.online import REQUEST_COLUMNS, REQUEST_SCHEMA, online_features, open_online_store
from ml_platform.lib.serving.predictor import Predictor, ServingModel
from ml_platform.lib.serving.schema import FlightRequest
from ml_platform.lib.training.data import INPUT_COLUMNS
from ml_platform.lib.training.pyfunc import DelayModel
from ml_platform_tests.serving.conftest import ServingWorld

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
