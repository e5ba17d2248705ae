"""whylogs profiles of daily partitions, built straight from typed polars columns.

A profile holds, per column, mergeable sketches: counts (rows, nulls, NaNs), a KLL quantile sketch
for numeric columns and a frequent-items sketch for categorical ones. Profiles of days merge into
the profile of a window without touching the rows again, which is how a model's reference profile
is made (the merge of its training window's daily profiles).

``why.log(pandas_df)`` spends almost all its time splitting every pandas value by Python type. A
polars column already has one type, so :func:`profile_frame` hands whylogs its typed numpy arrays
(nulls and NaNs removed and counted) and only the sketch updates remain: the same whylogs metrics,
about 20x faster (``benchmarks/profile_drift.py``).

Profiles are stored as whylogs' own protobuf bytes (:func:`serialize`), so any whylogs tool reads
them. The bytes are a function of the rows: a daily sketch holds the day's values exactly (a day
has fewer rows than the KLL sketch's k), the timestamps are the day's midnight, and every protobuf
message is written in deterministic form (whylogs writes its maps, the column offsets and metric
indices, in whatever order the protobuf runtime iterates them, which differs from process to
process). The stored profile's content hash is the profiles asset's data version, so profiling the
same rows again must give the same bytes.

:func:`merge` is deterministic too: KLL's merge compacts with random coin flips (datasketches seeds
them from the clock), so a window merged twice would give two references and two drift scores.
The merged quantile sketch is rebuilt from the daily sketches' exact values instead (exact up to
:data:`MERGED_KLL_MAX_K` values; evenly spaced order statistics beyond).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

import numpy as np
import polars as pl

Kind = Literal["numeric", "categorical"]

#: KLL sketch size: 1024 keeps a day of flights (about 1,000 rows) exact.
KLL_K: Final = 1024
#: Frequent-items sketch size (log2): a map of 2048 slots, which counts up to 1536 (3/4 of it)
#: distinct values exactly; carriers, airports and routes (about 230) are far below.
FREQUENT_ITEMS_LG_MAX_K: Final = 11
#: The derived categorical column holding the route (origin-dest) of a flight.
ROUTE: Final = "route"
#: The largest KLL k (datasketches stores it in 16 bits): a merged window of up to this many values
#: per column is held exactly.
MERGED_KLL_MAX_K: Final = 65535


class ProfileError(ValueError):
    """A profile cannot be built, read or merged; the message names the column or partition."""


def column_kind(dtype: pl.DataType) -> Kind | None:
    """How a column of ``dtype`` is profiled: numeric, categorical, or not at all (None)."""
    if dtype.is_numeric() or dtype == pl.Boolean:
        return "numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "categorical"
    return None


def with_route(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` plus the categorical ``route`` column ("EWR-ORD") when it has origin and dest."""
    if {"origin", "dest"} <= set(frame.columns) and ROUTE not in frame.columns:
        return frame.with_columns(pl.concat_str("origin", "dest", separator="-").alias(ROUTE))
    return frame


def profiled_columns(frame: pl.DataFrame, exclude: Iterable[str] = ()) -> dict[str, Kind]:
    """The columns of ``frame`` a profile covers, with their kind (dates and nested types are skipped)."""
    skip = set(exclude)
    out: dict[str, Kind] = {}
    for name, dtype in frame.schema.items():
        kind = column_kind(dtype)
        if kind is not None and name not in skip:
            out[name] = kind
    return out


def _schema(kinds: Mapping[str, Kind]) -> Any:
    from whylogs.core import DatasetSchema
    from whylogs.core.metrics.metrics import MetricConfig
    from whylogs.core.resolvers import Resolver, StandardMetric

    class _Resolver(Resolver):  # type: ignore[misc]
        """Counts everywhere; a distribution for numbers, frequent items for categories."""

        def resolve(self, name: str, why_type: Any, column_schema: Any) -> dict[str, Any]:
            wanted = [StandardMetric.counts]
            wanted.append(
                StandardMetric.distribution if kinds.get(name) == "numeric" else StandardMetric.frequent_items
            )
            return {m.name: m.zero(column_schema.cfg) for m in wanted}

    config = MetricConfig(kll_k_large=KLL_K, large_kll_k=True, fi_lg_max_k=FREQUENT_ITEMS_LG_MAX_K)
    # object dtype, not ``str``: whylogs 1.6 matches ``str`` through np.unicode_, gone in numpy 2
    types = {name: (float if kind == "numeric" else np.dtype("O")) for name, kind in kinds.items()}
    return DatasetSchema(types=types, resolvers=_Resolver(), default_configs=config)


def _preprocessed(series: pl.Series, kind: Kind) -> Any:
    from whylogs.core.preprocessing import PreprocessedColumn

    column = PreprocessedColumn()
    column.len = series.len()
    column.null_count = series.null_count()
    values = series.drop_nulls()
    if kind == "numeric":
        floats = values.cast(pl.Float64).to_numpy()
        finite = np.isfinite(floats)
        column.nan_count = int(np.isnan(floats).sum())
        column.inf_count = int(np.isinf(floats).sum())
        column.null_count += column.nan_count  # as whylogs counts them: a NaN is also a null
        # sorted: an exact KLL sketch keeps its values in arrival order, and the bytes must not
        # depend on the order a table's rows were stored in
        column.numpy.floats = np.sort(floats[finite])
    return column


def _track_categories(metric: Any, series: pl.Series) -> None:
    """Update a frequent-items sketch with each distinct value once, weighted by its count.

    Equivalent to one update per row (the sketch's counts are weights), without turning a
    million strings into Python objects.
    """
    values = series.drop_nulls().cast(pl.String).rename("value")
    # by count, then value: value_counts leaves ties in any order, and the sketch's bytes follow it
    counts = values.value_counts(name="count").sort(["count", "value"], descending=[True, False])
    sketch = metric.frequent_strings.value
    for value, count in counts.iter_rows():
        sketch.update(value, count)


def profile_frame(frame: pl.DataFrame, day: date, columns: Mapping[str, Kind] | None = None) -> Any:
    """A whylogs ``DatasetProfileView`` of ``frame`` (one day's rows).

    Args:
        frame: The rows. Numeric and boolean columns get counts and a KLL distribution; string
            columns counts and frequent items.
        day: The day the rows belong to: the profile's dataset timestamp (midnight UTC), which
            also keeps the serialized bytes reproducible. The rows' order does not matter: values
            go into the sketches sorted.
        columns: The columns to profile and how; default :func:`profiled_columns` of ``frame``.

    Raises:
        ProfileError: when a requested column is missing or of the wrong type.
    """
    from whylogs.core import DatasetProfile

    kinds = dict(columns) if columns is not None else profiled_columns(frame)
    missing = sorted(set(kinds) - set(frame.columns))
    if missing:
        raise ProfileError(f"cannot profile missing column(s) {missing}")
    for name, kind in kinds.items():
        if column_kind(frame.schema[name]) != kind:
            raise ProfileError(f"column {name!r} is {frame.schema[name]}, cannot be profiled as {kind}")
    at = datetime.combine(day, time(0), tzinfo=UTC)
    profile = DatasetProfile(schema=_schema(kinds), dataset_timestamp=at, creation_timestamp=at)
    for name, kind in kinds.items():
        column = profile._columns[name]
        column._process_extracted_column(_preprocessed(frame[name], kind))  # counts (+ distribution)
        if kind == "categorical":
            _track_categories(column._metrics["frequent_items"], frame[name])
    profile._track_count += 1
    return profile.view()


def serialize(view: Any) -> bytes:
    """The profile as whylogs protobuf bytes, the same bytes for the same profile in any process.

    whylogs writes the file as a magic header, a length-delimited segment header, a
    length-delimited dataset header (with maps: column offsets, metric indices) and one
    length-delimited chunk header plus chunk (a map of metric components) per column, serializing
    maps in the runtime's iteration order. Each message is written again here in protobuf's
    deterministic form: same sizes, so every recorded offset stays valid, and whylogs reads it as
    its own.

    Raises:
        ProfileError: when whylogs' output is not in that layout (another whylogs version).
    """
    data: bytes = view.serialize()
    return _deterministic(data)


def _deterministic(data: bytes) -> bytes:
    from whylogs.core.proto import ChunkHeader, ChunkMessage, DatasetProfileHeader, DatasetSegmentHeader
    from whylogs.core.view.dataset_profile_view import WHYLOGS_MAGIC_HEADER_BYTES

    magic = WHYLOGS_MAGIC_HEADER_BYTES
    if not data.startswith(magic):
        raise ProfileError(f"whylogs wrote no {magic!r} header; cannot make the profile deterministic")
    out = bytearray(magic)
    at = len(magic)

    def message(kind: Any, size: int | None = None) -> Any:
        nonlocal at
        delimited = size is None
        if delimited:
            size, at = _read_varint(data, at)
        assert size is not None
        if at + size > len(data):
            raise ProfileError(f"whylogs profile truncated: {kind.__name__} of {size} bytes at byte {at}")
        parsed = kind()
        parsed.ParseFromString(data[at : at + size])
        again = parsed.SerializeToString(deterministic=True)
        if len(again) != size:  # offsets would move: not the layout this function knows
            raise ProfileError(
                f"{kind.__name__} at byte {at} re-serializes to {len(again)} bytes, not {size}"
            )
        if delimited:
            out.extend(_varint(size))
        out.extend(again)
        at += size
        return parsed

    message(DatasetSegmentHeader)
    header = message(DatasetProfileHeader)
    body = at
    while at < len(data):
        chunk = message(ChunkHeader)
        message(ChunkMessage, chunk.length)
    if at - body != header.length:
        raise ProfileError(f"whylogs profile body is {at - body} bytes, its header says {header.length}")
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data):
            raise ProfileError(f"whylogs profile truncated in a length prefix at byte {at}")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def deserialize(data: bytes, where: str = "profile") -> Any:
    """Inverse of :func:`serialize`; ``where`` names the partition in errors."""
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    try:
        return DatasetProfileView.deserialize(data)
    except Exception as exc:
        raise ProfileError(f"{where}: cannot read whylogs profile ({len(data)} bytes): {exc}") from exc


def merge(views: Sequence[Any]) -> Any:
    """The merge of ``views`` (a window's profile), without reading any rows; deterministic.

    Counts, moments and frequent items merge exactly (whylogs). The KLL quantile sketch of each
    numeric column is not taken from whylogs' merge, whose compaction flips random coins: it is
    rebuilt from the inputs' values (:func:`_merged_kll`), so the same views give the same
    reference, and the same drift scores, in every run.

    Raises:
        ProfileError: for an empty sequence.
    """
    if not views:
        raise ProfileError("no profiles to merge")
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    if len(views) == 1:
        return merged
    from whylogs.core.metrics.metric_components import FractionalComponent, KllComponent
    from whylogs.core.metrics.metrics import DistributionMetric

    for name, column in merged.get_columns().items():
        metric = column.get_metric("distribution")
        if metric is None:
            continue
        sketches = [m.kll.value for v in views if (m := _distribution(v, name)) is not None]
        sketch = _merged_kll(sketches, f"column {name!r}")
        n, kept = int(metric.kll.value.get_n()), int(sketch.get_n())
        # the sample variance is m2 / (n - 1) with n the sketch's count: keep it exact when the
        # sketch holds fewer (evenly spaced) values than the window had
        m2 = metric.m2.value if kept == n or kept <= 1 else metric.m2.value * (kept - 1) / (n - 1)
        column._metrics["distribution"] = DistributionMetric(
            kll=KllComponent(sketch), mean=FractionalComponent(metric.mean.value), m2=FractionalComponent(m2)
        )
    return merged


def _distribution(view: Any, column: str) -> Any:
    col = view.get_column(column)
    return None if col is None else col.get_metric("distribution")


def _merged_kll(sketches: Sequence[Any], where: str) -> Any:
    """One KLL sketch of the values of ``sketches``, built without random compaction.

    An exact sketch (fewer values than its k, as a day is) gives its values; one in estimation
    mode gives its retained quantiles, each weighing its share of the count (copies are queried:
    a query sorts a sketch's buffer in place, which would change an input's bytes). Up to
    :data:`MERGED_KLL_MAX_K` values (all of weight one) go in as they are, and the sketch is exact;
    beyond, the evenly spaced weighted order statistics of them do.
    """
    import whylogs_sketching as ds

    values, weights = [], []
    for given in sketches:
        sketch = ds.kll_doubles_sketch(given)  # a query sorts a sketch in place: leave the input's bytes
        n = int(sketch.get_n())
        if n == 0:
            continue
        if sketch.is_estimation_mode():
            retained = int(sketch.get_num_retained())
            values.append(
                np.asarray(sketch.get_quantiles((np.arange(retained) + 0.5) / retained), dtype=float)
            )
            weights.append(np.full(retained, n / retained))
        else:
            # mid-rank levels: rank i is floor(level * n) without rounding down to i - 1
            values.append(np.asarray(sketch.get_quantiles((np.arange(n) + 0.5) / n), dtype=float))
            weights.append(np.ones(n))
    if not values:
        return ds.kll_doubles_sketch(KLL_K)
    flat, weight = np.concatenate(values), np.concatenate(weights)
    order = np.argsort(flat, kind="stable")
    flat, weight = flat[order], weight[order]
    if flat.size > MERGED_KLL_MAX_K or not np.all(weight == 1.0):
        cumulative = np.cumsum(weight)
        size = min(MERGED_KLL_MAX_K, flat.size)
        ranks = (np.arange(size) + 0.5) / size * cumulative[-1]
        flat = flat[np.minimum(np.searchsorted(cumulative, ranks, side="left"), flat.size - 1)]
    sketch = ds.kll_doubles_sketch(max(KLL_K, int(flat.size)))
    sketch.update(flat)
    if sketch.is_estimation_mode():
        raise ProfileError(f"{where}: the merged quantile sketch of {flat.size} values is not exact")
    return sketch


def column_names(view: Any) -> list[str]:
    """The columns a profile covers."""
    return sorted(view.get_columns())


def row_count(view: Any, column: str) -> int:
    """Rows (including nulls) the profile saw in ``column``."""
    return int(view.get_column(column).get_metric("counts").n.value)


def null_count(view: Any, column: str) -> int:
    """Nulls (NaNs included, as whylogs counts them) the profile saw in ``column``."""
    return int(view.get_column(column).get_metric("counts").null.value)


def kll(view: Any, column: str) -> Any:
    """The KLL sketch of a numeric column (``whylogs_sketching.kll_doubles_sketch``)."""
    metric = _metric(view, column, "distribution")
    return metric.kll.value


def moments(view: Any, column: str) -> tuple[float, float]:
    """Mean and standard deviation of a numeric column (exact: whylogs merges them exactly)."""
    metric = _metric(view, column, "distribution")
    return float(metric.mean.value), float(metric.stddev)


def category_counts(view: Any, column: str) -> dict[str, int]:
    """Counts of a categorical column's values, from its frequent-items sketch.

    Up to 1536 distinct values (:data:`FREQUENT_ITEMS_LG_MAX_K`) the counts are exact; rarer
    values beyond the sketch's capacity are left out (callers put them in an "other" bucket).
    """
    import whylogs_sketching as ds

    sketch = _metric(view, column, "frequent_items").frequent_strings.value
    return {
        str(item[0]): int(item[1])
        for item in sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
    }


def _metric(view: Any, column: str, name: str) -> Any:
    col = view.get_column(column)
    if col is None:
        raise ProfileError(f"the profile has no column {column!r}")
    metric = col.get_metric(name)
    if metric is None:
        raise ProfileError(f"column {column!r} has no {name} sketch in the profile")
    return metric
