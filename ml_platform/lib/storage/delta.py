"""Delta Lake partition store.

Every Dagster partition of an asset is one Delta partition (column ``partition_date``) of that
asset's table. A write replaces exactly that partition in one atomic Delta transaction
(``mode="overwrite"`` with a partition predicate), so readers see the old partition or the new
one, never a mix, and other partitions are never touched.

A write returns a :class:`PartitionVersion`: the table version it committed, the data files that
make up the partition at that version and the content hash of the rows. Readers downstream are
given that record (from Dagster's materialization metadata) and read exactly those files, then
verify the hash. Delta data files are immutable, so this is the partition as of that table
version, without replaying the log; :meth:`DeltaPartitionStore.read_at_version` does the same
through Delta's time travel for callers that only know a version.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from ml_platform.lib.hashing import content_hash
from ml_platform.lib.storage.base import (
    PARTITION_COLUMN,
    PartitionVersion,
    StorageError,
    read_cached,
    with_partition,
)

_COMMIT_RETRIES = 8
#: Checkpoint every 20 commits: a table gets one commit per partition write, and opening it
#: replays the log from the last checkpoint.
_TABLE_CONFIGURATION = {"delta.checkpointInterval": "20"}


class DeltaPartitionStore:
    """Partition-at-a-time writes and version-pinned reads of Delta tables under ``root``."""

    backend = "delta"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def table_uri(self, table: str) -> str:
        """Filesystem location of ``table``."""
        return str(self.root / table)

    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created."""
        return DeltaTable.is_deltatable(self.table_uri(table))

    def write_partition(
        self, table: str, partition: str, df: pl.DataFrame, *, unless_same_as: PartitionVersion | None = None
    ) -> PartitionVersion:
        """Replace ``partition`` of ``table`` with ``df`` in one atomic transaction.

        Args:
            table: Table name (the asset name).
            partition: Partition key, e.g. ``"2013-01-05"``.
            df: Rows of the partition, without the partition column (it is added last).
            unless_same_as: The partition's previously published record. When ``df`` has the same
                content and that record's files are still the partition's current files, nothing
                is written and that record is returned (with ``reused=True``), so the Delta
                history only grows when data changes.

        Returns:
            The committed (or reused) :class:`PartitionVersion`.

        Raises:
            StorageError: if ``df`` already carries another partition's key, or the commit fails
                after retries.
        """
        frame = self.with_partition(table, partition, df)
        uri = self.table_uri(table)
        dt = self._open(table)
        if dt is not None:
            frame = _in_table_order(frame, dt)
        digest = content_hash(frame)
        if (
            unless_same_as is not None
            and dt is not None
            and unless_same_as.content_hash == digest
            and self._partition_files(dt, partition) == unless_same_as.files
        ):
            return dataclasses.replace(unless_same_as, reused=True)
        predicate = f"{PARTITION_COLUMN} = '{partition}'"
        properties = CommitProperties(
            custom_metadata={"mlp.partition": partition, "mlp.content_hash": digest}
        )
        last_error: Exception | None = None
        for attempt in range(_COMMIT_RETRIES):
            try:
                write_deltalake(
                    dt if dt is not None else uri,
                    frame.to_arrow(compat_level=pl.CompatLevel.oldest()),
                    mode="overwrite",
                    predicate=predicate,
                    partition_by=[PARTITION_COLUMN],
                    schema_mode="merge",
                    commit_properties=properties,
                    configuration=None if dt is not None else _TABLE_CONFIGURATION,
                )
                break
            except CommitFailedError as exc:  # a concurrent writer won the race; replay ours
                last_error = exc
                time.sleep(0.05 * (2**attempt))
                dt = self._open(table)
            except Exception as exc:
                raise StorageError(f"{table}[{partition}]: Delta write to {uri} failed: {exc}") from exc
        else:
            raise StorageError(
                f"{table}[{partition}]: Delta commit to {uri} failed after {_COMMIT_RETRIES} tries:"
                f" {last_error}"
            )
        # A DeltaTable we wrote through is at our commit's version; a table we created is opened
        # once (a concurrent creator may have committed after us: that pin is still consistent).
        written = dt if dt is not None else DeltaTable(uri)
        pin = PartitionVersion(
            table=table,
            partition=partition,
            table_version=written.version(),
            content_hash=digest,
            row_count=frame.height,
            files=self._partition_files(written, partition),
        )
        # Delta stores the rows in the table's schema (its column order and types, and null columns
        # that other partitions added through schema_mode="merge"), which can differ from ``frame``'s.
        # Record the hash of what a read returns then, or the pin could never be read back.
        if self._stored_schema(pin, written) != frame.schema:
            pin = dataclasses.replace(pin, content_hash=content_hash(self._load_pin(pin)))
        return pin

    def _open(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri(table))
        except TableNotFoundError:
            return None

    @staticmethod
    def with_partition(table: str, partition: str, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` as stored: with the partition column, last (see :func:`~.base.with_partition`)."""
        return with_partition(table, partition, df)

    def current(self, table: str, partition: str) -> tuple[int, tuple[str, ...]] | None:
        """The latest table version and the files of ``partition`` in it; None without a table."""
        dt = self._open(table)
        return None if dt is None else (dt.version(), self._partition_files(dt, partition))

    def read(
        self,
        pins: Sequence[PartitionVersion],
        cache: MutableMapping[PartitionVersion, pl.DataFrame] | None = None,
    ) -> pl.DataFrame:
        """Read exactly the pinned partitions and verify each one's content hash.

        Args:
            pins: The partitions to read, as recorded.
            cache: Verified frames by pin, for a caller that reads overlapping windows (a feature day
                reads the 28 days before it, so a range run reads each day up to 29 times).

        Raises:
            StorageError: when a pinned file is gone (for example vacuumed) or the rows read do not
                hash to the recorded content hash.
        """
        return read_cached(pins, cache, self._read_pin)

    def read_at_version(self, table: str, partition: str, version: int) -> pl.DataFrame:
        """Read ``partition`` of ``table`` as it was at Delta table ``version`` (time travel)."""
        uri = self.table_uri(table)
        try:
            return pl.scan_delta(uri, version=version).filter(pl.col(PARTITION_COLUMN) == partition).collect()
        except Exception as exc:
            raise StorageError(
                f"{table}[{partition}]: cannot read version {version} of {uri}: {exc}"
            ) from exc

    def _read_pin(self, pin: PartitionVersion) -> pl.DataFrame:
        df = self._load_pin(pin)
        actual = content_hash(df)
        if actual != pin.content_hash:
            raise StorageError(
                f"{pin.table}[{pin.partition}] at table version {pin.table_version}: content hash"
                f" {actual[:12]} does not match the recorded {pin.content_hash[:12]}"
            )
        return df

    def _stored_schema(self, pin: PartitionVersion, dt: DeltaTable) -> pl.Schema:
        """The schema :meth:`read` returns for ``pin`` (one file's footer, or the table schema)."""
        if not pin.files:
            empty = pl.from_arrow(pa.schema(dt.schema().to_arrow()).empty_table())
            assert isinstance(empty, pl.DataFrame)
            return empty.schema
        schema = pl.scan_parquet(Path(self.table_uri(pin.table)) / unquote(pin.files[0])).collect_schema()
        return pl.Schema([*schema.items(), (PARTITION_COLUMN, pl.String())])

    def _load_pin(self, pin: PartitionVersion) -> pl.DataFrame:
        if pin.table_version is None:
            raise StorageError(
                f"{pin.table}[{pin.partition}] {pin.where} was written by another backend (lakeFS);"
                f" this store reads Delta tables under {self.root}"
            )
        table_root = Path(self.table_uri(pin.table))
        if pin.files:
            paths = [table_root / unquote(f) for f in pin.files]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise StorageError(
                    f"{pin.table}[{pin.partition}] pinned at table version {pin.table_version}: data files"
                    f" are gone ({missing[0]}); was the table vacuumed?"
                )
            df = pl.read_parquet(paths).with_columns(
                pl.lit(pin.partition, dtype=pl.String).alias(PARTITION_COLUMN)
            )
        else:
            df = self.read_at_version(pin.table, pin.partition, pin.table_version)
        return df

    @staticmethod
    def _partition_files(dt: DeltaTable, partition: str) -> tuple[str, ...]:
        actions = pl.DataFrame(dt.get_add_actions(flatten=True))
        if actions.is_empty():
            return ()
        column = f"partition.{PARTITION_COLUMN}"
        return tuple(sorted(actions.filter(pl.col(column) == partition)["path"].to_list()))


def _in_table_order(frame: pl.DataFrame, dt: DeltaTable) -> pl.DataFrame:
    """``frame`` with its columns in the order Delta stores them in ``dt``.

    Delta writes a partition's files in the table's column order, and a column that
    ``schema_mode="merge"`` added to an existing table comes after its older columns (e.g.
    ``bento_tag`` of ``prediction_log``, added after the table's first days). Hashing the frame in
    that order makes its content hash the one a read of the written files gives, so rewriting the
    same rows is recognized as such (``unless_same_as``). The table's columns come first, in its
    order, then the frame's new ones, then the partition column (always last, as reads return it).
    """
    known = [f.name for f in dt.schema().fields if f.name != PARTITION_COLUMN]
    present = set(frame.columns)
    ordered = [c for c in known if c in present]
    ordered += [c for c in frame.columns if c not in set(ordered) and c != PARTITION_COLUMN]
    ordered.append(PARTITION_COLUMN)
    return frame if ordered == frame.columns else frame.select(ordered)
