"""What the online store holds for one day: trailing aggregates per key and recent weather.

A snapshot is made from ``flight_features[D]`` and ``validated_weather[D-1..D]`` by
:func:`ml_platform.lib.online.features.build_snapshot`. It carries, per aggregate kind (origin,
carrier, route: :data:`~ml_platform.lib.features.transforms.AGG_KEYS`), one record per key with the
six trailing aggregates of that kind (flights, delay mean and delayed share over 7 and 28 days) as
of D's cutoff, and the weather observations per origin. Stores keep the values as they are here,
so a lookup gives back exactly what the offline pipeline computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

import polars as pl

from ml_platform.lib.features.transforms import AGG_KEYS, WEATHER_COLUMNS, WINDOWS
from ml_platform.lib.hashing import content_hash

METRICS: Final = ("flights", "delay_mean", "delayed_share")
#: The stored fields of every aggregate key, in the order of ``aggregate_names()`` within a kind.
FIELDS: Final = tuple(f"{metric}_{w}d" for w in WINDOWS for metric in METRICS)
#: Fields that are counts (Int64, 0 when unknown); the others are Float64 (null when unknown).
COUNT_FIELDS: Final = frozenset(f for f in FIELDS if f.startswith("flights_"))
KINDS: Final = tuple(AGG_KEYS)
#: Column of the key in :attr:`OnlineSnapshot.aggregates` frames: the key columns joined by "-".
KEY: Final = "key"
KEY_SEPARATOR: Final = "-"
#: Columns of :attr:`OnlineSnapshot.weather`.
WEATHER_FRAME_COLUMNS: Final = ("origin", "observed_at", *WEATHER_COLUMNS)
UTC_DATETIME: Final = pl.Datetime("us", "UTC")


def column_of(kind: str, stored: str) -> str:
    """The ``flight_features`` column of ``kind``'s stored field (``route`` + ``flights_7d``)."""
    return f"{kind}_{stored}"


def key_expr(kind: str) -> pl.Expr:
    """The key of ``kind`` from its key columns (``route``: ``origin-dest``, like the route column)."""
    cols = AGG_KEYS[kind]
    if len(cols) == 1:
        return pl.col(cols[0]).cast(pl.String)
    return pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator=KEY_SEPARATOR)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no float)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(value: int) -> datetime:
    """Inverse of :func:`epoch_us` (UTC)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


@dataclass(frozen=True)
class OnlineSnapshot:
    """The online features of one day, ready to be written to a store."""

    day: date
    #: The aggregates' cutoff (D's local midnight, UTC): ``aggregates_as_of`` of every lookup.
    aggregates_as_of: datetime
    #: Per kind: column :data:`KEY` plus one column per :data:`FIELDS`, one row per key.
    aggregates: Mapping[str, pl.DataFrame]
    #: :data:`WEATHER_FRAME_COLUMNS`, unique per (origin, observed_at), sorted by both.
    weather: pl.DataFrame

    def key_counts(self) -> dict[str, int]:
        """Keys per kind."""
        return {kind: self.aggregates[kind].height for kind in KINDS}

    @property
    def observations(self) -> int:
        """Weather observations (all origins)."""
        return self.weather.height

    @property
    def records(self) -> int:
        """Everything the store holds for this snapshot: keys of every kind plus observations."""
        return sum(self.key_counts().values()) + self.observations

    def content_hash(self) -> str:
        """A digest of the snapshot's content (the asset's data version)."""
        import hashlib

        digest = hashlib.sha256(f"{self.day.isoformat()}|{epoch_us(self.aggregates_as_of)}".encode())
        for kind in KINDS:
            digest.update(f"|{kind}:{content_hash(self.aggregates[kind])}".encode())
        digest.update(f"|weather:{content_hash(self.weather)}".encode())
        return digest.hexdigest()

    def aggregate_records(self, kind: str) -> list[tuple[str, tuple[int | float | None, ...]]]:
        """``(key, values in FIELDS order)`` of every key of ``kind``."""
        frame = self.aggregates[kind]
        return [(row[0], tuple(row[1:])) for row in frame.select(KEY, *FIELDS).iter_rows()]

    def weather_records(self) -> list[tuple[str, int, tuple[float | None, ...]]]:
        """``(origin, observed_at in epoch microseconds, values in WEATHER_COLUMNS order)``."""
        frame = self.weather.select(
            "origin", pl.col("observed_at").dt.epoch("us").alias("observed_us"), *WEATHER_COLUMNS
        )
        return [(row[0], int(row[1]), tuple(row[2:])) for row in frame.iter_rows()]


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """Which snapshot answered a lookup: what a prediction-log line records of it.

    ``content_hash`` is :meth:`OnlineSnapshot.content_hash`, which the ``online_features``
    materialization that wrote the snapshot records (``online/content_hash``) and publishes as its
    data version; ``day`` is that materialization's partition. ``written_at`` tells two writes of
    the same content apart (the store sets it when the snapshot is written).
    """

    day: date
    #: The aggregates' cutoff: the "as of" of every lookup answered from this snapshot.
    aggregates_as_of: datetime
    content_hash: str
    written_at: datetime


@dataclass(frozen=True)
class SnapshotInfo:
    """What a store says about the snapshot it holds."""

    day: date
    aggregates_as_of: datetime
    keys: Mapping[str, int]
    observations: int
    content_hash: str
    written_at: datetime

    @property
    def ref(self) -> SnapshotRef:
        """The snapshot's identity, as a lookup reports it."""
        return SnapshotRef(self.day, self.aggregates_as_of, self.content_hash, self.written_at)
