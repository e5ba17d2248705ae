"""The versioned store as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml_platform.lib.storage import DeltaPartitionStore


class VersionedStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Delta Lake tables under ``delta_root``, one per asset (the embedded default)."""

    delta_root: str = Field(description="Folder holding one Delta table per asset.")

    def store(self) -> DeltaPartitionStore:
        """The pure-Python store the assets write through."""
        return DeltaPartitionStore(Path(self.delta_root))
