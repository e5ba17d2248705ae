"""The versioned store: one Delta table per asset, one Delta partition per Dagster partition."""

from ml_platform.lib.storage.delta import (
    PARTITION_COLUMN,
    DeltaPartitionStore,
    PartitionVersion,
    StorageError,
)

__all__ = ["PARTITION_COLUMN", "DeltaPartitionStore", "PartitionVersion", "StorageError"]
