"""Build ``flight_features`` for one day, with polars lazy frames.

Inputs are the validated flights of the day and of the trailing window (up to
:data:`MAX_WINDOW_DAYS` days before it) and the validated weather of the day and the day before.
Two rules keep the features free of look-ahead, and :func:`feature_invariants` checks both:

* a flight only sees weather observed strictly before its scheduled departure (an as-of join),
  and not older than :data:`WEATHER_TOLERANCE`;
* trailing aggregates of day D use only flights scheduled in ``[D - w, D - 1]`` whose outcome was
  known at the cutoff, the local midnight that starts D (:data:`LOCAL_TZ`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

LOCAL_TZ: Final = "America/New_York"
WINDOWS: Final = (7, 28)
MAX_WINDOW_DAYS: Final = max(WINDOWS)
AGG_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "origin": ("origin",),
    "carrier": ("carrier",),
    "route": ("origin", "dest"),
}
WEATHER_COLUMNS: Final = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)
WEATHER_TOLERANCE: Final = timedelta(hours=6)
DELAY_THRESHOLD_MINUTES: Final = 15.0

KEY_COLUMNS: Final = ("carrier", "flight", "origin", "dest", "scheduled_departure")


def cutoff_for(day: date) -> datetime:
    """The aggregates' cutoff for ``day``: its local midnight, in UTC."""
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(LOCAL_TZ))
    return local.astimezone(ZoneInfo("UTC"))


def aggregate_names() -> list[str]:
    """Names of the trailing-aggregate columns, in output order."""
    return [
        f"{key}_{metric}_{w}d"
        for key in AGG_KEYS
        for w in WINDOWS
        for metric in ("flights", "delay_mean", "delayed_share")
    ]


def trailing_aggregates(history: pl.LazyFrame, day: date, key: str, window: int) -> pl.LazyFrame:
    """Per-``key`` aggregates over flights scheduled in ``[day - window, day - 1]``.

    ``flights`` counts every scheduled flight (schedules are known in advance); ``delay_mean`` and
    ``delayed_share`` use completed flights whose outcome was known at :func:`cutoff_for` ``day``.
    """
    cols = list(AGG_KEYS[key])
    cutoff = cutoff_for(day)
    in_window = history.filter(
        pl.col("flight_date").is_between(day - timedelta(days=window), day - timedelta(days=1))
    )
    known = (pl.col("flight_status") == "completed") & (pl.col("outcome_known_at") <= pl.lit(cutoff))
    prefix = f"{key}_"
    suffix = f"_{window}d"
    return in_window.group_by(cols).agg(
        pl.len().cast(pl.Int64).alias(f"{prefix}flights{suffix}"),
        pl.col("arr_delay").filter(known).mean().alias(f"{prefix}delay_mean{suffix}"),
        (pl.col("arr_delay").filter(known) > DELAY_THRESHOLD_MINUTES)
        .mean()
        .cast(pl.Float64)
        .alias(f"{prefix}delayed_share{suffix}"),
    )


def build_flight_features(day: date, flights: pl.DataFrame, weather: pl.DataFrame) -> pl.DataFrame:
    """Features and targets of every flight scheduled on ``day``.

    Args:
        day: The partition's day.
        flights: Validated flights of ``day`` and of its trailing window.
        weather: Validated weather covering at least the day before ``day`` and ``day`` itself.

    Returns:
        One row per validated flight of ``day`` (cancelled and diverted included and marked),
        sorted by ``scheduled_departure``, ``carrier`` and ``flight``.
    """
    history = flights.lazy()
    today = history.filter(pl.col("flight_date") == day).sort("scheduled_departure")
    obs = (
        weather.lazy()
        .select("origin", "observed_at", *WEATHER_COLUMNS)
        .unique(subset=["origin", "observed_at"], keep="first")
        .sort("observed_at")
    )
    frame = today.join_asof(
        obs.rename({"observed_at": "weather_observed_at"}),
        left_on="scheduled_departure",
        right_on="weather_observed_at",
        by="origin",
        strategy="backward",
        allow_exact_matches=False,
        tolerance=WEATHER_TOLERANCE,
        check_sortedness=False,  # both sides are sorted above; the check cannot see through `by`
    )
    for key, cols in AGG_KEYS.items():
        for window in WINDOWS:
            frame = frame.join(trailing_aggregates(history, day, key, window), on=list(cols), how="left")
    counts = [pl.col(c).fill_null(0) for c in aggregate_names() if "_flights_" in c]
    frame = frame.with_columns(counts)
    delay = pl.col("arr_delay")
    result = frame.select(
        *KEY_COLUMNS,
        "flight_date",
        (pl.col("origin") + "-" + pl.col("dest")).alias("route"),
        pl.col("hour").alias("sched_hour"),
        pl.col("flight_date").dt.weekday().cast(pl.Int64).alias("day_of_week"),
        pl.col("month"),
        pl.col("distance"),
        *WEATHER_COLUMNS,
        "weather_observed_at",
        ((pl.col("scheduled_departure") - pl.col("weather_observed_at")).dt.total_minutes())
        .cast(pl.Float64)
        .alias("weather_age_minutes"),
        pl.lit(cutoff_for(day)).dt.cast_time_unit("us").alias("aggregates_as_of"),
        *aggregate_names(),
        "flight_status",
        delay.alias("arr_delay"),
        pl.when(delay.is_null()).then(None).otherwise(delay > DELAY_THRESHOLD_MINUTES).alias("is_delayed"),
        delay.is_not_null().alias("has_target"),
    )
    return result.sort("scheduled_departure", "carrier", "flight").collect()


@dataclass(frozen=True)
class InvariantResult:
    """Outcome of one feature invariant, with the evidence behind it."""

    name: str
    passed: bool
    violations: int
    description: str


def feature_invariants(features: pl.DataFrame, validated_day: pl.DataFrame) -> list[InvariantResult]:
    """Check the properties downstream consumers rely on.

    * ``no_look_ahead``: weather observed strictly before departure; aggregates cut off no later
      than the day's first departure.
    * ``complete``: exactly one feature row per validated flight of the day, none dropped.
    * ``targets_consistent``: ``is_delayed`` is ``arr_delay > 15`` and is null exactly for
      cancelled and diverted flights.
    """
    look_ahead = features.filter(
        (pl.col("weather_observed_at") >= pl.col("scheduled_departure"))
        | (pl.col("aggregates_as_of") > pl.col("scheduled_departure"))
    ).height
    expected = validated_day.select(KEY_COLUMNS)
    missing = expected.join(features.select(KEY_COLUMNS), on=list(KEY_COLUMNS), how="anti").height
    surplus = features.height - expected.height + missing
    delay = pl.col("arr_delay")
    inconsistent = features.filter(
        (pl.col("is_delayed").is_null() != (pl.col("flight_status") != "completed"))
        | (delay.is_not_null() & (pl.col("is_delayed") != (delay > DELAY_THRESHOLD_MINUTES)))
    ).height
    return [
        InvariantResult(
            "no_look_ahead",
            look_ahead == 0,
            look_ahead,
            "rows using weather or aggregates from at or after their scheduled departure",
        ),
        InvariantResult(
            "complete",
            missing == 0 and surplus == 0,
            missing + abs(surplus),
            f"validated flights missing from the features ({missing}) or surplus rows ({surplus})",
        ),
        InvariantResult(
            "targets_consistent",
            inconsistent == 0,
            inconsistent,
            "rows whose is_delayed disagrees with arr_delay > 15 or with the flight status",
        ),
    ]
