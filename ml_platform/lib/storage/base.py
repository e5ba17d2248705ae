"""What every versioned-store backend shares: the partition record, the error, the interface.

Two backends implement :class:`PartitionStore`:

* :class:`~ml_platform.lib.storage.delta.DeltaPartitionStore` (the embedded default): one Delta
  table per asset; a partition is pinned by the Delta table version and its data files.
* :class:`~ml_platform.lib.storage.lakefs.LakeFSPartitionStore` (production): one Parquet object
  per partition in a lakeFS repository; a run writes on its own branch and a partition is pinned
  by the lakeFS commit that holds it.

Assets only ever see this interface; ``ml_platform_tests/lib/storage/test_store_contract.py`` runs
one suite against both.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

PARTITION_COLUMN = "partition_date"


class StorageError(RuntimeError):
    """A read or write of the versioned store failed; the message names table and partition."""


@dataclass(frozen=True)
class PartitionVersion:
    """Where one partition of one table lives, exactly: what lineage records and readers read.

    ``table_version`` is the Delta table version (Delta backend; None on lakeFS) and ``commit`` the
    lakeFS commit id (lakeFS backend; empty on Delta). ``files`` are the partition's data files,
    relative to the table. ``content_hash`` is verified on every read.
    """

    table: str
    partition: str
    table_version: int | None
    content_hash: str
    row_count: int
    files: tuple[str, ...] = field(default_factory=tuple)
    commit: str = ""
    #: True when a write found this exact content already published and wrote nothing.
    reused: bool = field(default=False, compare=False)

    @property
    def data_version(self) -> str:
        """The Dagster data version: the lakeFS commit where there is one, else the content hash."""
        return self.commit or self.content_hash

    @property
    def where(self) -> str:
        """How the pin is named in messages: ``at table version N`` or ``at lakeFS commit C``."""
        if self.commit:
            return f"at lakeFS commit {self.commit[:12]}"
        return f"at table version {self.table_version}"

    def to_metadata(self) -> dict[str, object]:
        """A JSON-serialisable form, as recorded in lineage metadata."""
        data: dict[str, object] = {
            "table": self.table,
            "partition": self.partition,
            "table_version": self.table_version,
            "content_hash": self.content_hash,
            "row_count": self.row_count,
            "files": list(self.files),
        }
        if self.commit:
            data["commit"] = self.commit
        return data

    @classmethod
    def from_metadata(cls, data: dict[str, object]) -> PartitionVersion:
        """Inverse of :meth:`to_metadata`."""
        files = data.get("files") or []
        version = data.get("table_version")
        return cls(
            table=str(data["table"]),
            partition=str(data["partition"]),
            table_version=None if version is None else int(version),  # type: ignore[call-overload]
            content_hash=str(data["content_hash"]),
            row_count=int(data["row_count"]),  # type: ignore[call-overload]
            files=tuple(str(f) for f in files),  # type: ignore[attr-defined]
            commit=str(data.get("commit") or ""),
        )


class PartitionStore(Protocol):
    """The interface the assets write and read through, whatever the backend."""

    #: ``"delta"`` or ``"lakefs"``: recorded in lineage next to the pin.
    backend: str

    def table_uri(self, table: str) -> str:
        """Where ``table`` lives (a folder, or a ``lakefs://`` URI on the run's branch)."""
        ...

    def exists(self, table: str) -> bool:
        """Whether ``table`` holds any partition (as this store sees it)."""
        ...

    def write_partition(
        self, table: str, partition: str, df: pl.DataFrame, *, unless_same_as: PartitionVersion | None = None
    ) -> PartitionVersion:
        """Replace ``partition`` of ``table`` with ``df`` atomically and return its pin.

        With ``unless_same_as`` (the partition's previously published pin) and the same content
        still in place, nothing is written and that pin comes back with ``reused=True``.
        """
        ...

    def read(
        self,
        pins: Sequence[PartitionVersion],
        cache: MutableMapping[PartitionVersion, pl.DataFrame] | None = None,
    ) -> pl.DataFrame:
        """Read exactly the pinned partitions, verifying each content hash."""
        ...


def with_partition(table: str, partition: str, df: pl.DataFrame) -> pl.DataFrame:
    """``df`` as stored: with the partition column, last.

    Raises:
        StorageError: if ``df`` already carries rows of another partition.
    """
    if PARTITION_COLUMN in df.columns:
        others = df.filter(pl.col(PARTITION_COLUMN) != partition).height
        if others:
            raise StorageError(f"{table}[{partition}]: {others} rows carry another {PARTITION_COLUMN}")
        df = df.drop(PARTITION_COLUMN)
    return df.with_columns(pl.lit(partition, dtype=pl.String).alias(PARTITION_COLUMN))


def read_cached(
    pins: Sequence[PartitionVersion],
    cache: MutableMapping[PartitionVersion, pl.DataFrame] | None,
    read_pin: Callable[[PartitionVersion], pl.DataFrame],
) -> pl.DataFrame:
    """The pinned partitions, each read once through ``read_pin`` (or taken from ``cache``), stacked.

    Raises:
        StorageError: without pins, or whatever ``read_pin`` raises for one.
    """
    if not pins:
        raise StorageError("read() needs at least one pinned partition")
    frames = []
    for pin in pins:
        frame = cache.get(pin) if cache is not None else None
        if frame is None:
            frame = read_pin(pin)
            if cache is not None:
                cache[pin] = frame
        frames.append(frame)
    return pl.concat(frames, how="diagonal_relaxed")
