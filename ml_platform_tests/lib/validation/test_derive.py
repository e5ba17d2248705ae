"""derive_flight_columns / derive_weather_columns."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.validation.derive import (
    TAXI_IN_ALLOWANCE_MINUTES,
    derive_flight_columns,
    derive_weather_columns,
)

NY = ZoneInfo("America/New_York")


def test_scheduled_departure_of_real_flights(real_flights: pl.DataFrame) -> None:
    derived = derive_flight_columns(real_flights)
    assert derived.schema["scheduled_departure"] == pl.Datetime("us", "UTC")
    for row in derived.iter_rows(named=True):
        local = datetime(row["year"], row["month"], row["day"], row["hour"], row["minute"], tzinfo=NY)
        assert row["scheduled_departure"] == local.astimezone(UTC)
        assert row["scheduled_departure"] == row["time_hour"] + timedelta(minutes=row["minute"])
        assert row["flight_date"] == date(row["year"], row["month"], row["day"])


def test_derive_keeps_the_input_columns_and_rows(real_flights: pl.DataFrame) -> None:
    derived = derive_flight_columns(real_flights)
    assert derived.columns == [
        *real_flights.columns,
        "flight_date",
        "scheduled_departure",
        "flight_status",
        "outcome_known_at",
    ]
    assert_frame_equal(derived.select(real_flights.columns), real_flights)


def flight(**values: object) -> dict[str, object]:
    """One flight of 2013-01-01, 05:15 local (10:15 UTC), with ``values`` changed."""
    row: dict[str, object] = {
        "year": 2013,
        "month": 1,
        "day": 1,
        "dep_time": 517,
        "sched_dep_time": 515,
        "dep_delay": 2.0,
        "arr_delay": 11.0,
        "air_time": 227.0,
        "hour": 5,
        "minute": 15,
        "time_hour": datetime(2013, 1, 1, 10, tzinfo=UTC),
    }
    row.update(values)
    return row


SCHEMA = {
    "year": pl.Int64,
    "month": pl.Int64,
    "day": pl.Int64,
    "dep_time": pl.Int64,
    "sched_dep_time": pl.Int64,
    "dep_delay": pl.Float64,
    "arr_delay": pl.Float64,
    "air_time": pl.Float64,
    "hour": pl.Int64,
    "minute": pl.Int64,
    "time_hour": pl.Datetime("us", "UTC"),
}


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, "completed"),
        ({"arr_delay": -30.0}, "completed"),
        ({"dep_time": None, "dep_delay": None, "arr_delay": None, "air_time": None}, "cancelled"),
        ({"dep_time": None, "dep_delay": None}, "cancelled"),  # no departure time decides
        ({"arr_delay": None, "air_time": None}, "diverted"),
        ({"arr_delay": None}, "diverted"),
    ],
    ids=["on_time", "early", "cancelled", "cancelled_odd_row", "diverted", "diverted_with_air_time"],
)
def test_flight_status(changes: dict[str, object], status: str) -> None:
    derived = derive_flight_columns(pl.DataFrame([flight(**changes)], schema=SCHEMA))
    assert derived["flight_status"].item() == status
    if status != "completed":
        assert derived["outcome_known_at"].item() is None


@pytest.mark.parametrize(
    ("dep_delay", "air_time"), [(2.0, 227.0), (-5.0, 40.0), (0.0, 300.0), (185.0, 112.0)]
)
def test_outcome_known_at_of_a_completed_flight(dep_delay: float, air_time: float) -> None:
    derived = derive_flight_columns(
        pl.DataFrame([flight(dep_delay=dep_delay, air_time=air_time)], schema=SCHEMA)
    )
    scheduled = datetime(2013, 1, 1, 10, 15, tzinfo=UTC)
    assert derived["scheduled_departure"].item() == scheduled
    expected = scheduled + timedelta(minutes=dep_delay + air_time + TAXI_IN_ALLOWANCE_MINUTES)
    assert derived["outcome_known_at"].item() == expected
    assert TAXI_IN_ALLOWANCE_MINUTES == 30


def test_outcome_known_at_on_real_flights(real_flights: pl.DataFrame) -> None:
    derived = derive_flight_columns(real_flights)
    statuses = set(derived["flight_status"].unique())
    assert statuses == {"completed", "cancelled", "diverted"}
    for row in derived.iter_rows(named=True):
        if row["flight_status"] != "completed":
            assert row["outcome_known_at"] is None
            continue
        minutes = row["dep_delay"] + row["air_time"] + TAXI_IN_ALLOWANCE_MINUTES
        assert row["outcome_known_at"] == row["scheduled_departure"] + timedelta(minutes=minutes)


def test_scheduled_departure_across_the_dst_change() -> None:
    # 2013-03-10 03:05 local is EDT (UTC-4); 01:30 local the same day is EST (UTC-5).
    rows = [
        flight(
            month=3,
            day=10,
            hour=1,
            minute=30,
            sched_dep_time=130,
            time_hour=datetime(2013, 3, 10, 6, tzinfo=UTC),
        ),
        flight(
            month=3,
            day=10,
            hour=3,
            minute=5,
            sched_dep_time=305,
            time_hour=datetime(2013, 3, 10, 7, tzinfo=UTC),
        ),
    ]
    derived = derive_flight_columns(pl.DataFrame(rows, schema=SCHEMA))
    for row in derived.iter_rows(named=True):
        local = datetime(2013, 3, 10, row["hour"], row["minute"], tzinfo=NY)
        assert row["scheduled_departure"] == local.astimezone(UTC)


def test_derive_weather_columns(real_weather: pl.DataFrame) -> None:
    derived = derive_weather_columns(real_weather)
    assert derived.columns == [*real_weather.columns, "observed_at"]
    assert derived["observed_at"].equals(real_weather["time_hour"].alias("observed_at"))
    assert derived.schema["observed_at"] == pl.Datetime("us", "UTC")
