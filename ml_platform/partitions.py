"""Partitions of the graph and the window mappings between them, built from settings."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from ml_platform.lib.features.transforms import MAX_WINDOW_DAYS
from ml_platform.settings import PlatformSettings


@dataclass(frozen=True)
class Partitioning:
    """The partitions definitions and mappings of one deployment."""

    daily: dg.DailyPartitionsDefinition
    #: A feature day reads its own day of flights plus the trailing aggregate window.
    flights_window: dg.TimeWindowPartitionMapping
    #: A feature day reads weather of the day before (for early departures) and of the day itself.
    weather_window: dg.TimeWindowPartitionMapping


def build_partitioning(settings: PlatformSettings) -> Partitioning:
    """Daily partitions over ``[partition_start, partition_end)`` and the feature windows."""
    return Partitioning(
        daily=dg.DailyPartitionsDefinition(
            start_date=settings.partition_start.isoformat(),
            end_date=settings.partition_end.isoformat(),
        ),
        flights_window=dg.TimeWindowPartitionMapping(
            start_offset=-MAX_WINDOW_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
        ),
        weather_window=dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
        ),
    )


def upstream_keys(
    mapping: dg.TimeWindowPartitionMapping, partitions_def: dg.PartitionsDefinition, partition: str
) -> list[str]:
    """The upstream partition keys that ``mapping`` maps ``partition`` to (same partitions def).

    Uses the mapping's own API, so the window an asset reads is exactly the one Dagster shows as
    its dependencies, clipped at the first partition.
    """
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        partitions_def.subset_with_partition_keys([partition]), partitions_def, partitions_def
    )
    return sorted(result.partitions_subset.get_partition_keys())
