"""whylogs profiles of polars frames: exact daily sketches, reproducible bytes, merges without rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from ml_platform.lib.monitoring.profiles import (
    FREQUENT_ITEMS_LG_MAX_K,
    KLL_K,
    ROUTE,
    ProfileError,
    category_counts,
    column_names,
    deserialize,
    kll,
    merge,
    moments,
    null_count,
    profile_frame,
    profiled_columns,
    row_count,
    serialize,
    with_route,
)

DAY = date(2013, 3, 14)
ROWS = 600
NANS = 7
CARRIERS = ("UA", "B6", "EV", "DL", "AA")
#: Quantile levels. The sketch's quantile at q is the value of (0-based) rank floor(q * n), which
#: is numpy's ``inverted_cdf`` quantile wherever q * n is not a whole number (checked below).
LEVELS = (np.arange(100) + 0.37) / 100


def _numpy_quantiles(values: np.ndarray) -> np.ndarray:
    """numpy's quantiles of ``values`` at :data:`LEVELS`, where they are the sketch's order statistics."""
    positions = LEVELS * len(values)
    assert np.all(np.abs(positions - np.round(positions)) > 1e-6), "pick levels off the rank grid"
    return np.asarray(np.quantile(values, LEVELS, method="inverted_cdf"))


def _frame(seed: int = 0, rows: int = ROWS) -> pl.DataFrame:
    """A day-like frame: float with nulls and NaNs, int, bool, string with nulls, date and datetime."""
    rng = np.random.default_rng(seed)
    null_rows = rng.random(rows) < 0.1
    floats = rng.normal(15.0, 8.0, rows)
    floats[rng.choice(np.flatnonzero(~null_rows), NANS, replace=False)] = np.nan
    carriers = rng.choice(CARRIERS, rows, p=(0.3, 0.25, 0.2, 0.15, 0.1))
    return pl.DataFrame(
        {
            "dep_delay": floats,
            "distance": rng.integers(80, 2600, rows),
            "is_weekend": rng.random(rows) < 0.3,
            "carrier": carriers,
            "flight_date": [DAY] * rows,
            "scheduled_departure": [datetime(2013, 3, 14, 6)] * rows,
            "_null": null_rows,
            "_no_carrier": rng.random(rows) < 0.05,
        }
    ).select(
        pl.when(~pl.col("_null")).then(pl.col("dep_delay")).alias("dep_delay"),
        "distance",
        "is_weekend",
        pl.when(~pl.col("_no_carrier")).then(pl.col("carrier")).alias("carrier"),
        "flight_date",
        "scheduled_departure",
    )


def _values(frame: pl.DataFrame, column: str) -> np.ndarray:
    """The finite values of a numeric column, as float64 (what the sketch holds)."""
    return frame[column].drop_nulls().cast(pl.Float64).drop_nans().to_numpy()


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return _frame()


@pytest.fixture(scope="module")
def view(frame: pl.DataFrame) -> Any:
    return profile_frame(frame, DAY)


def test_profiled_columns_skip_dates_and_datetimes(frame: pl.DataFrame) -> None:
    """Numbers and booleans are numeric, strings categorical; dates and datetimes are not profiled."""
    assert profiled_columns(frame) == {
        "dep_delay": "numeric",
        "distance": "numeric",
        "is_weekend": "numeric",
        "carrier": "categorical",
    }
    assert profiled_columns(frame, exclude=["carrier"]).keys() == {"dep_delay", "distance", "is_weekend"}


def test_profile_covers_the_profiled_columns(view: Any) -> None:
    assert column_names(view) == ["carrier", "dep_delay", "distance", "is_weekend"]


def test_row_and_null_counts(frame: pl.DataFrame, view: Any) -> None:
    """Every column sees every row; ``null_count`` adds NaNs to nulls."""
    for column in ("dep_delay", "distance", "is_weekend", "carrier"):
        assert row_count(view, column) == ROWS
    nulls = frame["dep_delay"].null_count()
    nans = int(frame["dep_delay"].is_nan().sum())
    assert nulls > 0
    assert nans == NANS
    assert null_count(view, "dep_delay") == nulls + nans
    assert null_count(view, "carrier") == frame["carrier"].null_count() > 0
    assert null_count(view, "distance") == 0
    assert null_count(view, "is_weekend") == 0


def test_category_counts_are_exact(frame: pl.DataFrame, view: Any) -> None:
    """The frequent-items sketch holds the exact counts of each category (nulls are not a category)."""
    expected = {
        value: count for value, count in frame["carrier"].value_counts().iter_rows() if value is not None
    }
    assert category_counts(view, "carrier") == expected


@pytest.mark.parametrize("column", ["dep_delay", "distance"])
def test_daily_kll_quantiles_are_exact(frame: pl.DataFrame, view: Any, column: str) -> None:
    """A day (< KLL_K rows) is held exactly: the sketch's quantiles are numpy's order statistics."""
    values = _values(frame, column)
    assert len(values) < KLL_K
    sketch = kll(view, column)
    assert not sketch.is_estimation_mode()
    assert sketch.get_n() == len(values)
    got = np.asarray(sketch.get_quantiles(LEVELS))
    np.testing.assert_array_equal(got, _numpy_quantiles(values))
    assert sketch.get_min_value() == values.min()
    assert sketch.get_max_value() == values.max()


@pytest.mark.parametrize("column", ["dep_delay", "distance", "is_weekend"])
def test_moments_match_numpy(frame: pl.DataFrame, view: Any, column: str) -> None:
    """Mean and sample standard deviation (ddof=1) of the finite values; booleans count as 0/1."""
    values = _values(frame, column)
    mean, std = moments(view, column)
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert std == pytest.approx(values.std(ddof=1), rel=1e-12)


def test_same_rows_give_identical_bytes(frame: pl.DataFrame) -> None:
    """Profiling the same rows for the same day is reproducible to the byte.

    Fresh views on purpose: querying a KLL sketch sorts its buffer in place, which changes the
    bytes (not the content) of a view that has been read.
    """
    assert serialize(profile_frame(frame.clone(), DAY)) == serialize(profile_frame(frame, DAY))


def test_day_is_the_dataset_timestamp(frame: pl.DataFrame) -> None:
    """The day is the profile's dataset timestamp (midnight UTC), so another day gives other bytes."""
    view = profile_frame(frame, DAY)
    assert view.dataset_timestamp == datetime(2013, 3, 14, tzinfo=UTC)
    other = profile_frame(frame, date(2013, 3, 15))
    assert other.dataset_timestamp == datetime(2013, 3, 15, tzinfo=UTC)
    assert serialize(other) != serialize(view)


def test_serialize_round_trip(frame: pl.DataFrame) -> None:
    """Deserialized bytes give the same profile: timestamp, counts, categories, moments, quantiles.

    The content, not the bytes: a frequent-items sketch re-serializes its items in another order.
    """
    view = profile_frame(frame, DAY)
    data = serialize(view)
    assert isinstance(data, bytes)
    assert data.startswith(b"WHY1")  # whylogs' own format, readable by any whylogs tool
    back = deserialize(data, where="flights/2013-03-14")
    assert back.dataset_timestamp == view.dataset_timestamp
    assert column_names(back) == column_names(view)
    for column in column_names(view):
        assert row_count(back, column) == row_count(view, column)
        assert null_count(back, column) == null_count(view, column)
    assert category_counts(back, "carrier") == category_counts(view, "carrier")
    for column in ("dep_delay", "distance", "is_weekend"):
        assert moments(back, column) == moments(view, column)
        np.testing.assert_array_equal(
            kll(back, column).get_quantiles(LEVELS), kll(view, column).get_quantiles(LEVELS)
        )


def test_numeric_profile_round_trips_to_the_same_bytes(frame: pl.DataFrame) -> None:
    """Without frequent-items sketches the round trip is byte-exact."""
    data = serialize(profile_frame(frame, DAY, {"dep_delay": "numeric", "distance": "numeric"}))
    assert serialize(deserialize(data)) == data


def test_deserialize_garbage_names_the_partition() -> None:
    with pytest.raises(ProfileError, match=r"flights/2013-03-14: cannot read whylogs profile \(7 bytes\)"):
        deserialize(b"garbage", where="flights/2013-03-14")


@pytest.fixture(scope="module")
def halves() -> tuple[pl.DataFrame, Any, Any, Any]:
    """A two-day window (1,800 rows, beyond KLL_K), each day's profile and the window's own profile."""
    whole = pl.concat([_frame(seed=1, rows=900), _frame(seed=2, rows=900)])
    first = profile_frame(whole[:900], date(2013, 3, 14))
    second = profile_frame(whole[900:], date(2013, 3, 15))
    return whole, first, second, profile_frame(whole, date(2013, 3, 14))


def test_merge_equals_profile_of_the_whole(halves: tuple[pl.DataFrame, Any, Any, Any]) -> None:
    """The reference-profile property: merging daily profiles equals profiling the window's rows.

    Counts and category counts are exact, moments exact to rounding, quantiles within KLL error.
    """
    whole, first, second, direct = halves
    first_bytes, second_bytes = serialize(first), serialize(second)
    merged = merge([first, second])
    assert serialize(first) == first_bytes  # the inputs are left as they were
    assert serialize(second) == second_bytes
    for column in ("dep_delay", "distance", "is_weekend", "carrier"):
        assert row_count(merged, column) == row_count(direct, column) == whole.height
        assert null_count(merged, column) == null_count(direct, column)
    assert category_counts(merged, "carrier") == category_counts(direct, "carrier")
    for column in ("dep_delay", "distance", "is_weekend"):
        assert moments(merged, column) == pytest.approx(moments(direct, column), abs=1e-9)
    for column in ("dep_delay", "distance"):
        values = np.sort(_values(whole, column))
        sketch = kll(merged, column)
        assert sketch.get_n() == len(values) > KLL_K
        got = np.asarray(sketch.get_quantiles(LEVELS))
        ranks = np.searchsorted(values, got, side="right") / len(values)
        assert np.max(np.abs(ranks - LEVELS)) < 0.01


def test_merge_of_small_days_is_exact() -> None:
    """While the window stays under KLL_K values, the merged sketch is exact like a day's."""
    whole = _frame(seed=3, rows=500)
    merged = merge([profile_frame(whole[:200], DAY), profile_frame(whole[200:], DAY)])
    values = _values(whole, "dep_delay")
    assert not kll(merged, "dep_delay").is_estimation_mode()
    np.testing.assert_array_equal(kll(merged, "dep_delay").get_quantiles(LEVELS), _numpy_quantiles(values))
    np.testing.assert_array_equal(
        kll(merged, "dep_delay").get_quantiles(LEVELS),
        kll(profile_frame(whole, DAY), "dep_delay").get_quantiles(LEVELS),
    )


def test_merge_of_one_view_is_that_view(view: Any) -> None:
    assert merge([view]) is view


def test_merge_of_nothing_raises() -> None:
    with pytest.raises(ProfileError, match="no profiles to merge"):
        merge([])


def test_missing_requested_column_raises_naming_it(frame: pl.DataFrame) -> None:
    with pytest.raises(ProfileError, match="arr_delay"):
        profile_frame(frame, DAY, {"dep_delay": "numeric", "arr_delay": "numeric"})


@pytest.mark.parametrize(
    ("column", "kind"),
    [("carrier", "numeric"), ("dep_delay", "categorical"), ("flight_date", "numeric")],
)
def test_wrong_kind_raises_naming_the_column(frame: pl.DataFrame, column: str, kind: str) -> None:
    with pytest.raises(ProfileError, match=f"column '{column}' is .*cannot be profiled as {kind}"):
        profile_frame(frame, DAY, {column: kind})  # type: ignore[dict-item]


def test_requested_columns_limit_the_profile(frame: pl.DataFrame) -> None:
    view = profile_frame(frame, DAY, {"distance": "numeric"})
    assert column_names(view) == ["distance"]


def test_with_route_adds_origin_dest() -> None:
    frame = pl.DataFrame({"origin": ["EWR", "JFK", "LGA"], "dest": ["ORD", "LAX", "ATL"]})
    out = with_route(frame)
    assert out[ROUTE].to_list() == ["EWR-ORD", "JFK-LAX", "LGA-ATL"]
    assert profiled_columns(out)[ROUTE] == "categorical"


def test_with_route_leaves_other_frames_unchanged() -> None:
    """Without origin and dest, or with a route already, the frame comes back as it was."""
    no_dest = pl.DataFrame({"origin": ["EWR"], "temp": [40.0]})
    assert with_route(no_dest).equals(no_dest)
    assert with_route(no_dest).columns == ["origin", "temp"]
    routed = pl.DataFrame({"origin": ["EWR"], "dest": ["ORD"], ROUTE: ["kept"]})
    assert with_route(routed)[ROUTE].to_list() == ["kept"]


def _vocabulary_frame(distinct: int) -> pl.DataFrame:
    rng = np.random.default_rng(distinct)
    names = [f"R{i:04d}" for i in range(distinct)]
    return pl.DataFrame({ROUTE: np.repeat(names, rng.integers(1, 5, distinct))})


def _assert_exact_categories(distinct: int) -> None:
    frame = _vocabulary_frame(distinct)
    counts = category_counts(profile_frame(frame, DAY), ROUTE)
    assert len(counts) == distinct
    assert counts == dict(frame[ROUTE].value_counts().iter_rows())


def test_category_counts_exact_for_a_large_vocabulary() -> None:
    """Counts stay exact up to the sketch's real capacity: 3/4 of its 2**lg_max_k slots (1536)."""
    _assert_exact_categories(3 * 2**FREQUENT_ITEMS_LG_MAX_K // 4)


def test_category_counts_exact_for_800_categories() -> None:
    """800 distinct categories (far more than the routes of a day) are counted exactly."""
    _assert_exact_categories(800)


_PROFILE_DIGEST = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from test_profiles import DAY, _frame
from ml_platform.lib.monitoring.profiles import profile_frame, serialize
print(hashlib.sha256(serialize(profile_frame(_frame(), DAY))).hexdigest())
"""


def test_the_bytes_are_the_same_in_every_process() -> None:
    """The stored bytes are the profile asset's data version: no process may write other ones.

    whylogs writes its maps (column offsets, metric indices, a chunk's components) in the protobuf
    runtime's iteration order, which changed from process to process: the same day got another
    data version in every run.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = _PROFILE_DIGEST.format(tests=str(Path(__file__).parent))
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1, digests


def test_merge_is_deterministic_and_exact_beyond_kll_k(halves: tuple[pl.DataFrame, Any, Any, Any]) -> None:
    """KLL's own merge flips random coins: two merges of the same days gave two references.

    The merged sketch is rebuilt from the days' exact values: the same in every merge, and exact.
    """
    whole, first, second, _ = halves
    one, two = merge([first, second]), merge([first, second])
    for column in ("dep_delay", "distance", "is_weekend"):
        assert not kll(one, column).is_estimation_mode()
        np.testing.assert_array_equal(
            kll(one, column).get_quantiles(LEVELS), kll(two, column).get_quantiles(LEVELS)
        )
        np.testing.assert_array_equal(
            kll(one, column).get_quantiles(LEVELS), _numpy_quantiles(_values(whole, column))
        )
        assert moments(one, column) == moments(two, column)


def test_merge_beyond_the_largest_sketch_is_deterministic_with_exact_moments() -> None:
    """More values than a KLL sketch can hold exactly: evenly spaced order statistics, moments kept."""
    from ml_platform.lib.monitoring.profiles import MERGED_KLL_MAX_K

    rng = np.random.default_rng(5)
    days = [pl.DataFrame({"x": rng.normal(10.0, 3.0, 1000)}) for _ in range(70)]
    views = [profile_frame(d, DAY) for d in days]
    one, two = merge(views), merge(views)
    values = np.sort(pl.concat(days)["x"].to_numpy())
    assert len(values) > MERGED_KLL_MAX_K
    sketch = kll(one, "x")
    assert sketch.get_n() == MERGED_KLL_MAX_K and not sketch.is_estimation_mode()
    np.testing.assert_array_equal(sketch.get_quantiles(LEVELS), kll(two, "x").get_quantiles(LEVELS))
    ranks = np.searchsorted(values, np.asarray(sketch.get_quantiles(LEVELS)), side="right") / len(values)
    assert np.max(np.abs(ranks - LEVELS)) < 1e-3
    mean, std = moments(one, "x")
    assert mean == pytest.approx(values.mean(), rel=1e-9)
    assert std == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert row_count(one, "x") == len(values)


def test_the_order_of_the_rows_does_not_change_the_bytes(frame: pl.DataFrame) -> None:
    """A Delta partition's rows come back in the order they were written, which a rerun may change.

    The profile is of the day's values, so the bytes (its data version) must not follow the order.
    """
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=7)
    assert not shuffled.equals(frame)
    assert serialize(profile_frame(shuffled, DAY)) == serialize(profile_frame(frame, DAY))
