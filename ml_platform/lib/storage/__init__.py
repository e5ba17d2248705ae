"""The versioned store: one interface (:class:`PartitionStore`), two backends.

Delta Lake (the embedded default, :mod:`.delta`) and lakeFS (production, :mod:`.lakefs`, imported
only when configured: it pulls in the lakeFS SDK).
"""

from ml_platform.lib.storage.base import (
    PARTITION_COLUMN,
    PartitionStore,
    PartitionVersion,
    StorageError,
    with_partition,
)
from ml_platform.lib.storage.delta import DeltaPartitionStore

__all__ = [
    "PARTITION_COLUMN",
    "DeltaPartitionStore",
    "PartitionStore",
    "PartitionVersion",
    "StorageError",
    "with_partition",
]
