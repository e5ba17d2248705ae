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
