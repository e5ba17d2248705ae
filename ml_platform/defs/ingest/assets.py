"""``raw_flights`` and ``raw_weather``: one day as delivered, with its source identity."""

from collections.abc import Iterator
from datetime import UTC, date, datetime

import dagster as dg

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import k8s_tags
from ml_platform.defs.publish import (
    AssetEvent,
    PartitionReporter,
    PartitionResult,
    RecordedVersions,
    describe,
    partition_metadata,
)
from ml_platform.lib import hashing, metadata
from ml_platform.lib.ingest import contracts, sources, times
from ml_platform.lib.ingest.sources import DATASETS, Dataset, SourceError, with_source_columns
from ml_platform.lib.storage import delta
from ml_platform.lib.versioning import code_version_of
from ml_platform.resources import RawSourceResource, VersionedStoreResource

_DESCRIPTIONS: dict[Dataset, str] = {
    "flights": "One day of scheduled NYC departures as delivered by the source, plus _source_file,"
    " _source_sha256 and _ingested_at. Partition = local calendar day of the scheduled departure.",
    "weather": "One day of hourly weather observations at EWR, JFK and LGA as delivered, plus"
    " _source_file, _source_sha256 and _ingested_at.",
}


def build_raw_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """One raw asset per dataset."""
    code_version = code_version_of(sources, contracts, times, delta, hashing)
    return [_raw_asset(dataset, build, code_version) for dataset in DATASETS]


def _raw_asset(dataset: Dataset, build: AssetBuild, code_version: str) -> dg.AssetsDefinition:
    name = f"raw_{dataset}"

    @dg.asset(
        name=name,
        group_name="ingest",
        kinds={"polars", "delta"},
        partitions_def=build.partitioning.daily,
        op_tags=k8s_tags(name, "small"),
        backfill_policy=build.backfill_policy,
        output_required=False,  # a range run reports per-partition events instead (PartitionReporter)
        code_version=code_version,
        automation_condition=build.automation,
        description=_DESCRIPTIONS[dataset],
    )
    def _asset(
        context: dg.AssetExecutionContext, source: RawSourceResource, versioned_store: VersionedStoreResource
    ) -> Iterator[AssetEvent]:
        reader = source.source()
        store = versioned_store.store()
        reporter = PartitionReporter(context)
        published = RecordedVersions(context.instance, context.asset_key, reporter.partitions, table=name)
        for partition in reporter.partitions:
            try:
                raw = reader.read_day(dataset, date.fromisoformat(partition))
            except SourceError as exc:
                raise dg.Failure(
                    description=str(exc),
                    metadata={"partition": exc.partition, "file": exc.file, "problem": exc.problem},
                ) from exc
            frame = with_source_columns(raw, datetime.now(UTC))
            version = store.write_partition(name, partition, frame, unless_same_as=published.get(partition))
            reporter.log(
                f"{name}[{partition}]: {version.row_count} rows from {raw.source_file} -> {describe(version)}"
            )
            yield from reporter.publish(
                PartitionResult(
                    partition,
                    version,
                    partition_metadata(
                        version,
                        frame,
                        table_uri=store.table_uri(name),
                        upstream=[],
                        code_version=code_version,
                        build=build.build,
                        extra={
                            metadata.LINEAGE_SOURCE: dg.MetadataValue.json(
                                {"file": raw.source_file, "sha256": raw.source_sha256}
                            )
                        },
                    ),
                )
            )
        yield from reporter.finish()

    return _asset
