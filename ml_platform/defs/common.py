"""What the asset factories of every domain share."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ml_platform.defs.publish import BuildInfo
from ml_platform.partitions import Partitioning


@dataclass(frozen=True)
class AssetBuild:
    """Inputs of the asset factories, resolved from settings when Definitions are built."""

    partitioning: Partitioning
    build: BuildInfo
    max_quarantine_share: float
    backfill_policy: dg.BackfillPolicy

    def check_partitions(self) -> dg.PartitionsDefinition | None:
        """Checks are partition-scoped, except in single-run backfills where a step spans a range."""
        return None if self.backfill_policy.max_partitions_per_run is None else self.partitioning.daily
