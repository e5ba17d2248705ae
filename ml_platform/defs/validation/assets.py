"""``validated_flights`` and ``validated_weather``: pandera-validated days, bad rows quarantined."""

from collections.abc import Callable, Iterator
from datetime import date

import dagster as dg
import pandera.polars as pa
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import k8s_tags
from ml_platform.defs.publish import (
    AssetEvent,
    PartitionReporter,
    PartitionResult,
    RecordedVersions,
    describe,
    partition_metadata,
    read_pinned,
    version_metadata,
)
from ml_platform.lib import hashing, metadata
from ml_platform.lib.ingest.contracts import INGESTED_AT_COLUMN
from ml_platform.lib.storage import PARTITION_COLUMN, delta
from ml_platform.lib.validation import derive, quarantine, schemas
from ml_platform.lib.validation.quarantine import (
    QuarantineThresholdExceeded,
    SchemaLevelError,
    enforce_threshold,
    validate_day,
)
from ml_platform.lib.versioning import code_version_of
from ml_platform.resources import VersionedStoreResource

THRESHOLD_CHECK = "quarantine_share_within_threshold"
CLEAN_CHECK = "no_quarantined_rows"

_DERIVE: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "flights": derive.derive_flight_columns,
    "weather": derive.derive_weather_columns,
}


def build_validated_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """One validated asset per dataset."""
    code_version = code_version_of(schemas, quarantine, derive, delta, hashing)
    return [
        _validated_asset(dataset, schema, build, code_version) for dataset, schema in schemas.SCHEMAS.items()
    ]


def _validated_asset(
    dataset: str, schema: type[pa.DataFrameModel], build: AssetBuild, code_version: str
) -> dg.AssetsDefinition:
    name = f"validated_{dataset}"
    upstream = f"raw_{dataset}"
    quarantine_table = f"quarantine_{dataset}"
    share = build.max_quarantine_share

    @dg.asset(
        name=name,
        group_name="validation",
        kinds={"polars", "delta", "pandera"},
        op_tags=k8s_tags(name, "small"),
        deps=[upstream],
        partitions_def=build.partitioning.daily,
        backfill_policy=build.backfill_policy,
        output_required=False,  # a range run reports per-partition events instead (PartitionReporter)
        code_version=code_version,
        automation_condition=build.automation,
        description=(
            f"The day's {dataset} rows that pass {schema.__name__} (pandera, polars backend, lazy"
            f" validation), with derived columns. Failing rows go to the Delta table"
            f" '{quarantine_table}' with a reason each; the partition fails when more than"
            f" {share:.1%} of its rows fail."
        ),
        metadata={
            # the declared schema, with its constraints, as a table on the asset's page
            "pandera/schema": pandera_schema_to_dagster_type(schema).metadata["schema"],
            "pandera/model": schema.__name__,
            "quality/max_quarantine_share": share,
        },
        check_specs=[
            dg.AssetCheckSpec(
                THRESHOLD_CHECK,
                asset=name,
                blocking=True,
                partitions_def=build.partitioning.daily,
                description=f"At most {share:.1%} of the day's rows fail {schema.__name__}.",
            ),
            dg.AssetCheckSpec(
                CLEAN_CHECK,
                asset=name,
                blocking=False,
                partitions_def=build.partitioning.daily,
                description="Warns when any row of the day was quarantined.",
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, versioned_store: VersionedStoreResource
    ) -> Iterator[AssetEvent]:
        store = versioned_store.store()
        reporter = PartitionReporter(context)
        raw_versions = RecordedVersions(
            context.instance, dg.AssetKey(upstream), reporter.partitions, table=upstream
        )
        published = RecordedVersions(context.instance, context.asset_key, reporter.partitions, table=name)
        for partition in reporter.partitions:
            pins = raw_versions.require([partition])
            raw = read_pinned(store, pins).drop(PARTITION_COLUMN)
            try:
                outcome = validate_day(raw, schema, date.fromisoformat(partition), name)
            except SchemaLevelError as exc:
                raise dg.Failure(description=str(exc), metadata={"partition": partition}) from exc
            quarantined = store.write_partition(quarantine_table, partition, outcome.quarantined)
            evidence = {
                "partition": partition,
                "rows": outcome.total_rows,
                "quarantined_rows": outcome.quarantined.height,
                "quarantine_share": outcome.quarantine_share,
                "max_quarantine_share": share,
                "failures_by_check": dg.MetadataValue.json(outcome.failures_by_check),
                "quarantine_table_version": version_metadata(quarantined),
            }
            try:
                enforce_threshold(outcome, share, name, partition)
            except QuarantineThresholdExceeded as exc:
                failed = dg.AssetCheckResult(check_name=THRESHOLD_CHECK, passed=False, metadata=evidence)
                yield from reporter.fail(partition, [failed])
                raise dg.Failure(description=str(exc), metadata=evidence) from exc
            frame = _DERIVE[dataset](outcome.valid).drop(INGESTED_AT_COLUMN, strict=False)
            version = store.write_partition(name, partition, frame, unless_same_as=published.get(partition))
            reporter.log(
                f"{name}[{partition}]: {version.row_count} valid, {outcome.quarantined.height} quarantined"
                f" -> {describe(version)}"
            )
            yield from reporter.publish(
                PartitionResult(
                    partition,
                    version,
                    partition_metadata(
                        version,
                        frame,
                        table_uri=store.table_uri(name),
                        upstream=pins,
                        code_version=code_version,
                        build=build.build,
                        extra={
                            metadata.QUALITY_QUARANTINED_ROWS: dg.MetadataValue.int(
                                outcome.quarantined.height
                            ),
                            metadata.QUALITY_QUARANTINE_SHARE: dg.MetadataValue.float(
                                outcome.quarantine_share
                            ),
                            metadata.QUALITY_QUARANTINE_TABLE: version_metadata(quarantined),
                            metadata.QUALITY_FAILURES_BY_CHECK: dg.MetadataValue.json(
                                outcome.failures_by_check
                            ),
                        },
                    ),
                    checks=[
                        dg.AssetCheckResult(check_name=THRESHOLD_CHECK, passed=True, metadata=evidence),
                        dg.AssetCheckResult(
                            check_name=CLEAN_CHECK,
                            passed=outcome.quarantined.is_empty(),
                            severity=dg.AssetCheckSeverity.WARN,
                            metadata=evidence,
                        ),
                    ],
                )
            )
        yield from reporter.finish()

    return _asset
