"""Partitions of the graph and the window mappings between them, built from settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

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
    #: Models are partitioned by week (Monday to Sunday); the first week has a full training window.
    weekly: dg.WeeklyPartitionsDefinition
    #: Model week W trains on the feature days of the ``training_window_weeks`` weeks before W.
    training_window: dg.TimeWindowPartitionMapping
    #: Model week W is evaluated on the feature days of W itself: the week after its window.
    holdout_window: dg.TimeWindowPartitionMapping


def build_partitioning(settings: PlatformSettings) -> Partitioning:
    """Daily partitions over ``[partition_start, partition_end)``, weekly model partitions, windows."""
    weeks = settings.training_window_weeks
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
        weekly=dg.WeeklyPartitionsDefinition(
            start_date=first_model_week(settings.partition_start, weeks).isoformat(),
            end_date=settings.partition_end.isoformat(),
            day_offset=1,  # weeks start on Monday
        ),
        # offsets count downstream (weekly) partitions: weeks W-n..W-1, as days
        training_window=dg.TimeWindowPartitionMapping(start_offset=-weeks, end_offset=-1),
        holdout_window=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=0),
    )


def first_model_week(partition_start: date, window_weeks: int) -> date:
    """The first Monday whose training window (``window_weeks`` weeks before it) has only data days."""
    earliest = partition_start + timedelta(weeks=window_weeks)
    return earliest + timedelta(days=(7 - earliest.weekday()) % 7)


def upstream_keys(
    mapping: dg.TimeWindowPartitionMapping,
    partitions_def: dg.PartitionsDefinition,
    partition: str,
    upstream_def: dg.PartitionsDefinition | None = None,
) -> list[str]:
    """The upstream partition keys that ``mapping`` maps ``partition`` of ``partitions_def`` to.

    ``upstream_def`` defaults to ``partitions_def`` (a daily asset reading daily partitions). Uses
    the mapping's own API, so the window an asset reads is exactly the one Dagster shows as its
    dependencies, clipped at the first partition.
    """
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        partitions_def.subset_with_partition_keys([partition]), partitions_def, upstream_def or partitions_def
    )
    return sorted(result.partitions_subset.get_partition_keys())
