"""content_hash: a function of the rows as a multiset and of the schema, nothing else."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import polars as pl
import pytest

from ml_platform.lib.hashing import VOLATILE_COLUMNS, content_hash, file_sha256


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "carrier": ["UA", "AA", None, "B6", "DL", "UA"],
            "flight": [1545, 1141, 725, 461, 1696, 1714],
            "arr_delay": [11.0, None, -18.0, 33.0, -25.0, 20.0],
            "time_hour": [datetime(2013, 1, 1, 10 + i, tzinfo=UTC) for i in range(6)],
        }
    )


def test_digest_is_sha256_hex(frame: pl.DataFrame) -> None:
    digest = content_hash(frame)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert content_hash(frame) == digest  # deterministic


def test_independent_of_row_order(frame: pl.DataFrame) -> None:
    assert content_hash(frame.reverse()) == content_hash(frame)
    assert content_hash(frame.sample(fraction=1.0, shuffle=True, seed=7)) == content_hash(frame)


def test_independent_of_buffer_layout(frame: pl.DataFrame) -> None:
    # Chunked (concat without rechunk), sliced (offset buffers), filtered (values under masks):
    # same values, different Arrow layouts than the freshly built frame.
    chunked = pl.concat([frame.slice(3), frame.slice(0, 3)], rechunk=False)
    assert chunked.n_chunks() > 1
    filtered = pl.concat([frame, frame.with_columns(pl.col("flight") + 10_000)]).filter(
        pl.col("flight") < 10_000
    )
    masked = frame.with_columns(
        pl.when(pl.col("carrier").is_not_null()).then(pl.col("carrier")).alias("carrier")
    )
    rebuilt = pl.DataFrame(frame.to_dicts(), schema=frame.schema)
    expected = content_hash(frame)
    for other in (chunked, filtered, masked, rebuilt, frame.rechunk()):
        assert other.sort("flight").equals(frame.sort("flight"))
        assert content_hash(other) == expected


def test_changes_with_one_value(frame: pl.DataFrame) -> None:
    changed = frame.with_columns(
        pl.when(pl.col("flight") == 461).then(34.0).otherwise(pl.col("arr_delay")).alias("arr_delay")
    )
    assert changed.height == frame.height
    assert content_hash(changed) != content_hash(frame)


def test_changes_with_a_null(frame: pl.DataFrame) -> None:
    nulled = frame.with_columns(
        pl.when(pl.col("flight") == 461).then(None).otherwise(pl.col("arr_delay")).alias("arr_delay")
    )
    assert content_hash(nulled) != content_hash(frame)


def test_changes_with_a_dtype(frame: pl.DataFrame) -> None:
    assert content_hash(frame.with_columns(pl.col("flight").cast(pl.Int32))) != content_hash(frame)
    assert content_hash(frame.with_columns(pl.col("flight").cast(pl.Float64))) != content_hash(frame)
    as_ms = frame.with_columns(pl.col("time_hour").dt.cast_time_unit("ms"))
    assert content_hash(as_ms) != content_hash(frame)


def test_changes_with_a_column_name(frame: pl.DataFrame) -> None:
    assert content_hash(frame.rename({"flight": "flight_no"})) != content_hash(frame)


def test_duplicated_row_is_not_the_same_multiset(frame: pl.DataFrame) -> None:
    assert content_hash(pl.concat([frame, frame.head(1)])) != content_hash(frame)


def test_ignores_ingested_at(frame: pl.DataFrame) -> None:
    assert "_ingested_at" in VOLATILE_COLUMNS
    first = frame.with_columns(pl.lit(datetime(2024, 1, 1, tzinfo=UTC)).alias("_ingested_at"))
    again = frame.with_columns(pl.lit(datetime(2025, 6, 30, 12, tzinfo=UTC)).alias("_ingested_at"))
    assert content_hash(first) == content_hash(again) == content_hash(frame)


def test_explicit_exclude(frame: pl.DataFrame) -> None:
    changed = frame.with_columns(pl.col("flight") + 1)
    assert content_hash(changed, exclude=["flight"]) == content_hash(frame, exclude=["flight"])
    # With nothing excluded, _ingested_at counts like any column.
    stamped = frame.with_columns(pl.lit(datetime(2024, 1, 1, tzinfo=UTC)).alias("_ingested_at"))
    assert content_hash(stamped, exclude=()) != content_hash(frame, exclude=())


def test_canonical_form_of_ordinary_frames_is_stable(frame: pl.DataFrame) -> None:
    """The documented canonical form: schema, then the sorted JSON lines (floats as text)."""
    digest = hashlib.sha256()
    digest.update(repr([(n, str(t)) for n, t in frame.schema.items()]).encode())
    digest.update(b"\0")
    as_text = frame.with_columns(pl.col(pl.Float64, pl.Float32).cast(pl.String))
    digest.update("\n".join(sorted(as_text.write_ndjson().split("\n")[:-1])).encode())
    assert content_hash(frame) == digest.hexdigest()


def test_nan_differs_from_null() -> None:
    nan = pl.DataFrame({"x": [float("nan"), 1.0]})
    null = pl.DataFrame({"x": [None, 1.0]}, schema={"x": pl.Float64})
    assert content_hash(nan) != content_hash(null)


def test_null_differs_from_the_text_of_the_null_marker() -> None:
    null = pl.DataFrame({"s": [None, "a"]}, schema={"s": pl.String})
    marker = pl.DataFrame({"s": ["\\N", "a"]})
    empty = pl.DataFrame({"s": ["", "a"]})
    assert len({content_hash(null), content_hash(marker), content_hash(empty)}) == 3


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\u2028"], ids=["LF", "CRLF", "U+2028"])
def test_line_breaks_inside_values_do_not_mix_rows(brk: str) -> None:
    # Sorting raw CSV lines would give both frames the same lines ("p", "r", "q", "s").
    one = pl.DataFrame({"s": [f"p{brk}q", f"r{brk}s"]})
    other = pl.DataFrame({"s": [f"p{brk}s", f"r{brk}q"]})
    assert content_hash(one) != content_hash(other)
    assert content_hash(one.reverse()) == content_hash(one)


def test_escaping_is_not_confused_with_literal_backslashes() -> None:
    escaped_text = pl.DataFrame({"s": ["a\\u000ab", "x"]})
    with_break = pl.DataFrame({"s": ["a\nb", "x"]})
    assert content_hash(escaped_text) != content_hash(with_break)


def test_file_sha256(tmp_path) -> None:
    path = tmp_path / "f.bin"
    payload = b"nycflights13" * 100_000
    path.write_bytes(payload)
    assert file_sha256(path, chunk_size=4096) == hashlib.sha256(payload).hexdigest()
