"""What a raw day must look like on delivery: required columns and the dtypes they cast to.

The raw layer keeps data as delivered, but a file whose columns are missing or cannot be read as
the contract's types is rejected there, with the partition, the file and the column in the
message. Value-level rules (ranges, allowed values, uniqueness) belong to validation.
"""

from __future__ import annotations

from typing import Final

import polars as pl

UTC_DATETIME: Final = pl.Datetime("us", "UTC")

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
