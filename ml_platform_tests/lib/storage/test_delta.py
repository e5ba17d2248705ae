"""DeltaPartitionStore: partition-at-a-time atomic writes and version-pinned, hash-verified reads."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.hashing import content_hash, file_sha256
from ml_platform.lib.ingest.sources import NycFlights13Source
from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore, PartitionVersion, StorageError

TABLE = "raw_flights"
DAY1, DAY2, DAY3 = "2013-01-01", "2013-01-02", "2013-01-03"


@pytest.fixture
def store(tmp_path: Path) -> DeltaPartitionStore:
    return DeltaPartitionStore(tmp_path / "store")


@pytest.fixture(scope="module")
def days(nyc_source: NycFlights13Source) -> dict[str, pl.DataFrame]:
    """Three real days of flights, keyed by partition."""
    return {p: nyc_source.read_day("flights", date.fromisoformat(p)).frame for p in (DAY1, DAY2, DAY3)}


def stored(partition: str, df: pl.DataFrame) -> pl.DataFrame:
    """``df`` as the store keeps it: with the partition column, last."""
    return df.with_columns(pl.lit(partition, dtype=pl.String).alias(PARTITION_COLUMN))


def snapshot(store: DeltaPartitionStore, table: str, files: tuple[str, ...]) -> dict[str, str]:
    root = Path(store.table_uri(table))
    return {f: file_sha256(root / f) for f in files}


def test_write_then_read_round_trip(store: DeltaPartitionStore, days: dict[str, pl.DataFrame]) -> None:
    df = days[DAY1]
    assert not store.exists(TABLE)
    pin = store.write_partition(TABLE, DAY1, df)
    assert store.exists(TABLE)
    assert pin.table == TABLE and pin.partition == DAY1
    assert pin.table_version == 0
    assert pin.row_count == df.height == 842
    assert pin.content_hash == content_hash(stored(DAY1, df))
    assert pin.files and all(f.startswith(f"{PARTITION_COLUMN}={DAY1}/") for f in pin.files)

    back = store.read([pin])
    assert back.columns == [*df.columns, PARTITION_COLUMN]
    assert_frame_equal(back, stored(DAY1, df), check_row_order=False)
    assert_frame_equal(store.read_at_version(TABLE, DAY1, pin.table_version), back, check_row_order=False)


def test_metadata_round_trip(store: DeltaPartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1].head(20))
    meta = pin.to_metadata()
    assert meta["files"] == list(pin.files)
    assert PartitionVersion.from_metadata(meta) == pin
    assert_frame_equal(store.read([PartitionVersion.from_metadata(meta)]), store.read([pin]))


def test_write_touches_only_its_partition(store: DeltaPartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin1 = store.write_partition(TABLE, DAY1, days[DAY1])
    pin2 = store.write_partition(TABLE, DAY2, days[DAY2])
    before = snapshot(store, TABLE, pin1.files)

    rewrite = store.write_partition(TABLE, DAY2, days[DAY2].head(100))

    current = store.current(TABLE, DAY1)
    assert current is not None
    version, files1 = current
    assert version == rewrite.table_version
    assert files1 == pin1.files
    assert snapshot(store, TABLE, files1) == before
    assert set(rewrite.files).isdisjoint(pin2.files)
    # The untouched partition reads the same at the new table version, and from its old pin.
    latest = store.read_at_version(TABLE, DAY1, rewrite.table_version)
    assert_frame_equal(latest, stored(DAY1, days[DAY1]), check_row_order=False)
    assert_frame_equal(store.read([pin1]), stored(DAY1, days[DAY1]), check_row_order=False)
    whole = pl.read_delta(store.table_uri(TABLE))
    counts = dict(whole.group_by(PARTITION_COLUMN).len().iter_rows())
    assert counts == {DAY1: days[DAY1].height, DAY2: 100}


def test_rewrite_keeps_the_old_version_readable(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    old_df = days[DAY1]
    new_df = old_df.filter(pl.col("origin") == "JFK")
    old = store.write_partition(TABLE, DAY1, old_df)
    new = store.write_partition(TABLE, DAY1, new_df)

    assert new.table_version > old.table_version
    assert new.content_hash != old.content_hash
    assert new.row_count == new_df.height < old.row_count
    assert set(new.files).isdisjoint(old.files)

    assert_frame_equal(store.read([new]), stored(DAY1, new_df), check_row_order=False)
    # Time travel by version number ...
    at_old = store.read_at_version(TABLE, DAY1, old.table_version)
    assert_frame_equal(at_old, stored(DAY1, old_df), check_row_order=False)
    # ... and the pinned files of the old version.
    pinned_old = store.read([old])
    assert_frame_equal(pinned_old, stored(DAY1, old_df), check_row_order=False)
    assert content_hash(pinned_old) == old.content_hash


def test_identical_rewrite_has_the_same_content_hash(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    first = store.write_partition(TABLE, DAY1, days[DAY1])
    again = store.write_partition(TABLE, DAY1, days[DAY1].reverse())
    assert again.table_version == first.table_version + 1
    assert again.content_hash == first.content_hash


def test_read_of_several_pins(store: DeltaPartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pins = [store.write_partition(TABLE, p, days[p]) for p in (DAY1, DAY2, DAY3)]
    both = store.read([pins[0], pins[2]])
    assert dict(both.group_by(PARTITION_COLUMN).len().iter_rows()) == {
        DAY1: days[DAY1].height,
        DAY3: days[DAY3].height,
    }


def test_read_verifies_the_content_hash(store: DeltaPartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    tampered = dataclasses.replace(pin, content_hash="0" * 64)
    with pytest.raises(StorageError) as err:
        store.read([tampered])
    message = str(err.value)
    assert f"{TABLE}[{DAY1}]" in message
    assert "content hash" in message
    assert pin.content_hash[:12] in message  # what the rows hash to
    assert "0" * 12 in message  # what the pin recorded


def test_read_detects_files_of_another_partition(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    pin1 = store.write_partition(TABLE, DAY1, days[DAY1])
    pin2 = store.write_partition(TABLE, DAY2, days[DAY2])
    swapped = dataclasses.replace(pin1, files=pin2.files)
    with pytest.raises(StorageError, match=rf"{TABLE}\[{DAY1}\].*content hash"):
        store.read([swapped])


def test_read_of_vacuumed_files_fails_clearly(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    old = store.write_partition(TABLE, DAY1, days[DAY1])
    store.write_partition(TABLE, DAY1, days[DAY1].head(10))
    for f in old.files:  # what a vacuum does to files no longer in the latest version
        (Path(store.table_uri(TABLE)) / f).unlink()
    with pytest.raises(StorageError) as err:
        store.read([old])
    message = str(err.value)
    assert f"{TABLE}[{DAY1}]" in message
    assert "vacuum" in message
    assert old.files[0].split("/")[-1] in message


def test_writing_an_empty_frame_empties_the_partition(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    full = store.write_partition(TABLE, DAY1, days[DAY1])
    other = store.write_partition(TABLE, DAY2, days[DAY2])
    empty = store.write_partition(TABLE, DAY1, days[DAY1].clear())

    assert empty.row_count == 0
    assert empty.files == ()
    assert empty.table_version > other.table_version
    read_back = store.read([empty])
    assert read_back.height == 0
    assert read_back.schema == stored(DAY1, days[DAY1]).schema
    assert store.read_at_version(TABLE, DAY1, empty.table_version).height == 0
    assert store.current(TABLE, DAY1) == (empty.table_version, ())
    # Other partitions and older versions are untouched.
    assert_frame_equal(store.read([other]), stored(DAY2, days[DAY2]), check_row_order=False)
    assert store.read([full]).height == days[DAY1].height


def test_rows_of_another_partition_are_refused(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    store.write_partition(TABLE, DAY2, days[DAY2])
    version_before = store.current(TABLE, DAY2)
    mixed = days[DAY1].with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit(DAY2)).otherwise(pl.lit(DAY1)).alias(PARTITION_COLUMN)
    )
    with pytest.raises(StorageError) as err:
        store.write_partition(TABLE, DAY1, mixed)
    assert f"{TABLE}[{DAY1}]" in str(err.value)
    assert f"3 rows carry another {PARTITION_COLUMN}" in str(err.value)
    assert store.current(TABLE, DAY2) == version_before  # nothing was committed


def test_rows_already_carrying_their_partition_are_accepted(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    df = days[DAY1].head(5)
    pin = store.write_partition(TABLE, DAY1, df.with_columns(pl.lit(DAY1).alias(PARTITION_COLUMN)))
    assert pin.content_hash == content_hash(stored(DAY1, df))
    assert store.read([pin]).columns == [*df.columns, PARTITION_COLUMN]


def test_concurrent_writers_of_different_partitions(store: DeltaPartitionStore) -> None:
    frames = {f"2013-02-{i:02d}": pl.DataFrame({"flight": list(range(i))}) for i in range(1, 9)}
    with ThreadPoolExecutor(max_workers=len(frames)) as pool:
        pins = list(pool.map(lambda kv: store.write_partition(TABLE, *kv), frames.items()))
    whole = pl.read_delta(store.table_uri(TABLE))
    assert dict(whole.group_by(PARTITION_COLUMN).len().iter_rows()) == {
        p: f.height for p, f in frames.items()
    }
    for pin in pins:
        assert_frame_equal(
            store.read([pin]), stored(pin.partition, frames[pin.partition]), check_row_order=False
        )


def test_errors_without_a_table(store: DeltaPartitionStore) -> None:
    assert store.current("nope", DAY1) is None
    with pytest.raises(StorageError, match=r"nope\[2013-01-01\]"):
        store.read_at_version("nope", DAY1, 0)
    with pytest.raises(StorageError, match="at least one"):
        store.read([])


def test_read_at_a_version_that_does_not_exist(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    store.write_partition(TABLE, DAY1, days[DAY1].head(3))
    with pytest.raises(StorageError, match=rf"{TABLE}\[{DAY1}\]: cannot read version 7"):
        store.read_at_version(TABLE, DAY1, 7)


# -- Delta stores rows in the table's schema, which can differ from the written frame's -----------


def test_a_day_without_a_column_another_day_added_reads_back(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    """Drop-folder days keep extra columns as delivered: a later day without one must still read."""
    store.write_partition(TABLE, DAY1, days[DAY1].with_columns(pl.lit("gate B").alias("note")))
    pin = store.write_partition(TABLE, DAY2, days[DAY2])  # the table has "note" now; this day has not

    back = store.read([pin])  # verifies the recorded hash
    assert back.height == days[DAY2].height
    assert back["note"].null_count() == back.height
    assert_frame_equal(back.drop("note"), stored(DAY2, days[DAY2]), check_row_order=False)
    assert pin.content_hash == content_hash(back)


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(lambda df: df.select(reversed(df.columns)), id="columns_in_another_order"),
        pytest.param(lambda df: df.with_columns(pl.col("flight").cast(pl.Int32)), id="narrower_dtype"),
        pytest.param(lambda df: df.drop("tailnum"), id="column_missing"),
        pytest.param(lambda df: df.drop("tailnum").clear(), id="empty_and_column_missing"),
    ],
)
def test_partitions_written_in_another_schema_read_back(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame], later
) -> None:
    store.write_partition(TABLE, DAY1, days[DAY1])
    frame = later(days[DAY2])
    pin = store.write_partition(TABLE, DAY2, frame)
    back = store.read([pin])
    assert back.height == frame.height == pin.row_count
    assert pin.content_hash == content_hash(back)
    assert store.read([store.write_partition(TABLE, DAY3, days[DAY3])]).height == days[DAY3].height


def test_a_column_added_to_an_existing_table_keeps_rewrites_of_the_same_rows_reused(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    """Delta appends a merged column after the table's older ones; the frame is hashed in that order,
    so the same rows written again are recognized (e.g. ``bento_tag`` of ``prediction_log``)."""
    store.write_partition(TABLE, DAY1, days[DAY1])
    frame = days[DAY2].select(pl.lit("gate B").alias("note"), pl.all())  # new column, first in the frame
    pin = store.write_partition(TABLE, DAY2, frame)
    back = store.read([pin])
    assert back.columns == [*days[DAY2].columns, "note", PARTITION_COLUMN]
    assert pin.content_hash == content_hash(back)
    again = store.write_partition(TABLE, DAY2, frame, unless_same_as=pin)
    assert again.reused and again == dataclasses.replace(pin, reused=True)
    assert store.read([store.write_partition(TABLE, DAY1, days[DAY1])])["note"].null_count() == len(
        days[DAY1]
    )


def test_identical_content_is_not_written_again(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    first = store.write_partition(TABLE, DAY1, days[DAY1])
    again = store.write_partition(TABLE, DAY1, days[DAY1].reverse(), unless_same_as=first)
    assert again.reused and again == first
    assert store.current(TABLE, DAY1) == (first.table_version, first.files)

    changed = store.write_partition(TABLE, DAY1, days[DAY1].head(10), unless_same_as=first)
    assert not changed.reused and changed.table_version == first.table_version + 1
    # the old record no longer describes the current files: the same content is written again
    back = store.write_partition(TABLE, DAY1, days[DAY1], unless_same_as=first)
    assert not back.reused and back.content_hash == first.content_hash
    assert back.table_version == changed.table_version + 1


def test_a_cache_reads_each_pinned_partition_once(
    store: DeltaPartitionStore, days: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    cache: dict[PartitionVersion, pl.DataFrame] = {}
    first = store.read([pin], cache)
    for file in pin.files:  # the files go away: only the cache can still answer
        (Path(store.table_uri(TABLE)) / file).unlink()
    assert store.read([pin, pin], cache).equals(pl.concat([first, first]))
    with pytest.raises(StorageError, match="gone"):
        store.read([pin])
