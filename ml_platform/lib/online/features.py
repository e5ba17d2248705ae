"""Online features: what the service adds to a request, computed exactly as the offline pipeline does.

A request carries what a caller knows (:data:`REQUEST_COLUMNS`). :func:`online_features` adds:

* from the request itself, with the expressions of
  :func:`~ml_platform.lib.features.transforms.build_flight_features`: ``flight_date``,
  ``sched_hour``, ``day_of_week`` and ``month`` in local time (``America/New_York``), ``route``;
* from the store (:mod:`ml_platform.lib.online.store`): the latest weather observation of the
  origin strictly before the scheduled departure and at most ``WEATHER_TOLERANCE`` old (and its
  age), and the trailing aggregates per origin, carrier and route as of the snapshot's cutoff
  (counts 0 and means null for a key the snapshot does not know, as offline).

``ml_platform_tests/lib/online/test_skew.py`` checks that both give the same values for every flight
of real days (the training/serving skew test).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

import polars as pl

from ml_platform.lib.features.transforms import (
    AGG_KEYS,
    KEY_COLUMNS,
    LOCAL_TZ,
    WEATHER_COLUMNS,
    WEATHER_TOLERANCE,
    aggregate_names,
    cutoff_for,
)
from ml_platform.lib.online.snapshot import (
    COUNT_FIELDS,
    FIELDS,
    KEY,
    KEY_SEPARATOR,
    KINDS,
    UTC_DATETIME,
    WEATHER_FRAME_COLUMNS,
    OnlineSnapshot,
    SnapshotRef,
    column_of,
    epoch_us,
    key_expr,
)

TOLERANCE_US: Final = int(WEATHER_TOLERANCE.total_seconds()) * 1_000_000

#: What a request carries.
REQUEST_COLUMNS: Final = ("carrier", "flight", "origin", "dest", "scheduled_departure", "distance")
REQUEST_SCHEMA: Final[dict[str, pl.DataType]] = {
    "carrier": pl.String(),
    "flight": pl.Int64(),
    "origin": pl.String(),
    "dest": pl.String(),
    "scheduled_departure": UTC_DATETIME,
    "distance": pl.Float64(),
}
#: What :func:`online_features` returns: the columns of ``flight_features`` before its targets, in
#: the same order and with the same dtypes: the key columns, ``flight_date``, every model input of
#: :data:`~ml_platform.lib.training.data.INPUT_COLUMNS`, ``weather_observed_at`` and
#: ``aggregates_as_of`` (plus ``route`` and ``month``).
FEATURE_COLUMNS: Final = (
    *KEY_COLUMNS,
    "flight_date",
    "route",
    "sched_hour",
    "day_of_week",
    "month",
    "distance",
    *WEATHER_COLUMNS,
    "weather_observed_at",
    "weather_age_minutes",
    "aggregates_as_of",
    *aggregate_names(),
)
FEATURE_SCHEMA: Final[dict[str, pl.DataType]] = {
    **{c: REQUEST_SCHEMA[c] for c in KEY_COLUMNS},
    "flight_date": pl.Date(),
    "route": pl.String(),
    "sched_hour": pl.Int64(),
    "day_of_week": pl.Int64(),
    "month": pl.Int64(),
    "distance": pl.Float64(),
    **{c: pl.Float64() for c in WEATHER_COLUMNS},
    "weather_observed_at": UTC_DATETIME,
    "weather_age_minutes": pl.Float64(),
    "aggregates_as_of": UTC_DATETIME,
    **{c: (pl.Int64() if "_flights_" in c else pl.Float64()) for c in aggregate_names()},
}


class InvalidRequest(ValueError):
    """A request frame lacks a column, has a null in one, or a departure without a time zone."""


def build_snapshot(day: date, features: pl.DataFrame, weather: pl.DataFrame) -> OnlineSnapshot:
    """The online snapshot of ``day``.

    Args:
        day: The feature day.
        features: ``flight_features[day]``: its trailing aggregates are the ones of ``day``'s cutoff,
            so each origin, carrier and route has one set of values.
        weather: ``validated_weather`` of ``day - 1`` and ``day`` (at least ``origin``,
            ``observed_at`` and the weather columns).

    Raises:
        ValueError: ``features`` holds another day, another cutoff, or a key with two different
            aggregate values; or a column is missing.
    """
    needed = {*KEY_COLUMNS, "dest", *aggregate_names()}
    missing = sorted(needed - set(features.columns))
    if missing:
        raise ValueError(f"flight_features[{day}] lacks column(s) {missing}")
    missing = sorted(set(WEATHER_FRAME_COLUMNS) - set(weather.columns))
    if missing:
        raise ValueError(f"validated_weather for {day} lacks column(s) {missing}")
    as_of = cutoff_for(day)
    if "flight_date" in features.columns:
        other = features.filter(pl.col("flight_date") != day).height
        if other:
            raise ValueError(f"flight_features[{day}]: {other} rows of another day")
    if "aggregates_as_of" in features.columns and features.height:
        cutoffs = features["aggregates_as_of"].unique().to_list()
        if cutoffs != [as_of]:
            raise ValueError(f"flight_features[{day}]: aggregates_as_of {cutoffs}, expected [{as_of}]")
    aggregates: dict[str, pl.DataFrame] = {}
    for kind in AGG_KEYS:
        frame = (
            features.select(
                key_expr(kind).alias(KEY),
                *[
                    pl.col(column_of(kind, f)).cast(pl.Int64 if f in COUNT_FIELDS else pl.Float64).alias(f)
                    for f in FIELDS
                ],
            )
            .unique()
            .sort(KEY)
        )
        conflicting = frame.filter(pl.col(KEY).is_duplicated())[KEY].unique().sort().to_list()
        if conflicting:
            raise ValueError(
                f"flight_features[{day}]: {kind} key(s) {conflicting[:5]} have different aggregate values"
                " within the day"
            )
        aggregates[kind] = frame
    observations = (
        weather.select(
            pl.col("origin").cast(pl.String),
            pl.col("observed_at").cast(UTC_DATETIME),
            *[pl.col(c).cast(pl.Float64) for c in WEATHER_COLUMNS],
        )
        .filter(pl.col("origin").is_not_null() & pl.col("observed_at").is_not_null())
        .unique(subset=["origin", "observed_at"], keep="first", maintain_order=True)
        .sort("origin", "observed_at")
    )
    return OnlineSnapshot(day=day, aggregates_as_of=as_of, aggregates=aggregates, weather=observations)


def normalize_requests(requests: pl.DataFrame) -> pl.DataFrame:
    """``requests``' :data:`REQUEST_COLUMNS` with :data:`REQUEST_SCHEMA` dtypes.

    Raises:
        InvalidRequest: a column is missing or has nulls, or ``scheduled_departure`` is not a
            datetime with a time zone.
    """
    missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise InvalidRequest(f"requests lack column(s) {missing}; a request needs {list(REQUEST_COLUMNS)}")
    schema = requests.schema  # built anew on every access: once
    departure = schema["scheduled_departure"]
    if not isinstance(departure, pl.Datetime) or departure.time_zone is None:
        raise InvalidRequest(
            f"scheduled_departure must be a datetime with a time zone (UTC), not {departure}"
        )
    if all(schema[c] == dtype for c, dtype in REQUEST_SCHEMA.items()):
        frame = requests if requests.columns == list(REQUEST_COLUMNS) else requests.select(REQUEST_COLUMNS)
    else:
        try:
            frame = requests.select(
                pl.col("carrier").cast(pl.String),
                pl.col("flight").cast(pl.Int64),
                pl.col("origin").cast(pl.String),
                pl.col("dest").cast(pl.String),
                pl.col("scheduled_departure").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
                pl.col("distance").cast(pl.Float64),
            )
        except pl.exceptions.PolarsError as exc:
            raise InvalidRequest(f"requests do not cast to {REQUEST_SCHEMA}: {exc}") from exc
    nulls = [c for c in REQUEST_COLUMNS if frame.get_column(c).null_count()]
    if nulls:
        raise InvalidRequest(f"requests have nulls in {nulls}")
    return frame


def online_features(requests: pl.DataFrame, store: FeatureLookup) -> pl.DataFrame:
    """The features of each request, one row per request in the same order (:data:`FEATURE_COLUMNS`).

    Raises:
        InvalidRequest: see :func:`normalize_requests`.
        OnlineStoreError: the store is unreachable or holds no snapshot.
    """
    return store.lookup(requests)


@dataclass(frozen=True)
class ServedFeatures:
    """The features of a batch and the snapshot that answered it (one snapshot per lookup)."""

    features: pl.DataFrame
    snapshot: SnapshotRef


class FeatureLookup(Protocol):
    """What :func:`online_features` and :func:`served_features` read through: an online store.

    Every :class:`~ml_platform.lib.online.store.OnlineStore` is one. Declared here, not imported from
    :mod:`.store`, because the stores import this module (the batch, the assembly): the features
    depend on what they read through, not on the stores (no import cycle, issue #16).
    """

    def lookup(self, requests: pl.DataFrame) -> pl.DataFrame:
        """The features of each request (:data:`FEATURE_COLUMNS`), one row per request in order."""
        ...

    def lookup_served(self, requests: pl.DataFrame) -> ServedFeatures:
        """:meth:`lookup`'s features and the snapshot that answered them (one transaction)."""
        ...


def served_features(requests: pl.DataFrame, store: FeatureLookup) -> ServedFeatures:
    """:func:`online_features`, plus which snapshot answered (read in the lookup's own transaction).

    Raises:
        InvalidRequest: see :func:`normalize_requests`.
        OnlineStoreError: the store is unreachable or holds no snapshot.
    """
    return store.lookup_served(requests)


# -- what the stores share: the request batch, what they found, the assembly -------------------


@dataclass(frozen=True)
class RequestBatch:
    """A batch of normalized requests as plain Python values, and the keys it needs."""

    carriers: list[str]
    flights: list[int]
    origins: list[str]
    dests: list[str]
    #: scheduled departures, epoch microseconds (UTC)
    departures: list[int]
    distances: list[float]
    #: aggregate kind -> the key of each request
    row_keys: dict[str, list[str]]

    @classmethod
    def of(cls, requests: pl.DataFrame) -> RequestBatch:
        """The batch of ``requests`` (normalized first, see :func:`normalize_requests`)."""
        frame = normalize_requests(requests)
        carriers, flights, origins, dests, departures, distances = (
            frame.get_column(c).to_list() for c in REQUEST_COLUMNS
        )
        values = {"carrier": carriers, "origin": origins, "dest": dests}
        row_keys: dict[str, list[str]] = {}
        for kind, cols in AGG_KEYS.items():
            if len(cols) == 1:
                row_keys[kind] = values[cols[0]]
            else:
                row_keys[kind] = [KEY_SEPARATOR.join(k) for k in zip(*(values[c] for c in cols), strict=True)]
        return cls(carriers, flights, origins, dests, [epoch_us(d) for d in departures], distances, row_keys)

    @property
    def size(self) -> int:
        """Requests in the batch."""
        return len(self.carriers)

    def unique_keys(self, kind: str) -> list[str]:
        """The distinct keys of ``kind``, in first-seen order."""
        return list(dict.fromkeys(self.row_keys[kind]))

    def unique_departures(self) -> list[tuple[str, int]]:
        """The distinct (origin, departure) pairs whose weather is needed."""
        return list(dict.fromkeys(zip(self.origins, self.departures, strict=True)))

    def departure_spans(self) -> dict[str, tuple[int, int]]:
        """Per origin, the observation times that can match one of its departures: ``[low, high)``.

        From the earliest departure minus the tolerance (included) to the latest (excluded): a store
        reads that range once per origin and matches each departure with :func:`as_of_index`.
        """
        spans: dict[str, tuple[int, int]] = {}
        for origin, departure in zip(self.origins, self.departures, strict=True):
            low, high = spans.get(origin, (departure, departure))
            spans[origin] = (min(low, departure), max(high, departure))
        return {origin: (low - TOLERANCE_US, high) for origin, (low, high) in spans.items()}


def as_of_index(times: Sequence[int], departure: int) -> int | None:
    """Index of the latest of ``times`` (ascending) strictly before ``departure`` and at most
    ``WEATHER_TOLERANCE`` older (the offline as-of join: backward, exact matches excluded, tolerance
    included); None when there is none."""
    index = bisect_left(times, departure) - 1
    if index < 0 or times[index] < departure - TOLERANCE_US:
        return None
    return index


#: Stored aggregate values of one key, in :data:`FIELDS` order.
Values = tuple[int | float | None, ...]
#: One observation: observed_at (epoch microseconds) and the values in ``WEATHER_COLUMNS`` order.
Observation = tuple[int, tuple[float | None, ...]]


@dataclass(frozen=True)
class Found:
    """What a store found for a batch, all from one snapshot."""

    #: the snapshot's ``aggregates_as_of``, epoch microseconds
    as_of_us: int
    #: kind -> key -> values (None: the snapshot does not know the key)
    aggregates: dict[str, dict[str, Values | None]]
    #: (origin, departure) -> the latest observation strictly before it within the tolerance
    weather: dict[tuple[str, int], Observation | None]


_LOCAL_TZ = ZoneInfo(LOCAL_TZ)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_MINUTE = 60_000_000
_NO_WEATHER: Final[tuple[float | None, ...]] = (None,) * len(WEATHER_COLUMNS)
_UNKNOWN_KEY: Final = tuple(0 if f in COUNT_FIELDS else None for f in FIELDS)


def assemble_features(batch: RequestBatch, found: Found) -> pl.DataFrame:
    """The :data:`FEATURE_COLUMNS` of each request from what the store found.

    The same definitions as :func:`~ml_platform.lib.features.transforms.build_flight_features`, on
    plain Python values (one frame built at the end: a polars expression per column would cost more
    than the lookup itself for a handful of requests): calendar columns from the departure in local
    time (``isoweekday`` is polars' ``weekday``), the weather age in whole minutes (polars'
    ``total_minutes`` truncates; the age is always positive), unknown keys as 0 flights and null
    means. The skew test compares the two on every flight of real days.
    """
    names = FEATURE_COLUMNS
    rows = []
    for i in range(batch.size):
        origin, dest, departure = batch.origins[i], batch.dests[i], batch.departures[i]
        local = (_EPOCH + timedelta(microseconds=departure)).astimezone(_LOCAL_TZ)
        observation = found.weather[(origin, departure)]
        if observation is None:
            observed, weather, age = None, _NO_WEATHER, None
        else:
            observed, weather = observation
            age = float((departure - observed) // _US_PER_MINUTE)
        aggregates: list[int | float | None] = []
        for kind in KINDS:
            stored = found.aggregates[kind][batch.row_keys[kind][i]]
            aggregates.extend(_UNKNOWN_KEY if stored is None else stored)
        values = (
            batch.carriers[i],
            batch.flights[i],
            origin,
            dest,
            departure,
            local.date(),
            f"{origin}-{dest}",
            local.hour,
            local.isoweekday(),
            local.month,
            batch.distances[i],
            *weather,
            observed,
            age,
            found.as_of_us,
            *aggregates,
        )
        rows.append(dict(zip(names, values, strict=True)))
    return pl.from_dicts(rows, schema=FEATURE_SCHEMA) if rows else pl.DataFrame(schema=FEATURE_SCHEMA)
