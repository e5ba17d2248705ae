"""``online_features``: the day's trailing aggregates and recent weather, written to the online store."""

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.publish import (
    AssetEvent,
    PartitionReporter,
    PartitionResult,
    RecordedVersions,
    read_pinned,
)
from ml_platform.lib import metadata as keys
from ml_platform.lib.online.features import FEATURE_SCHEMA, build_snapshot
from ml_platform.lib.online.snapshot import KINDS
from ml_platform.lib.online.store import OnlineStoreError
from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.partitions import upstream_keys
from ml_platform.resources import OnlineStoreResource, VersionedStoreResource

NAME = "online_features"
FEATURES = "flight_features"
WEATHER = "validated_weather"
#: What computes the snapshot and how stores hold it: a change re-materializes the days.
MODULES = (
    "ml_platform.lib.online.features",
    "ml_platform.lib.online.snapshot",
    "ml_platform.lib.online.store",
)
ONLINE_DAY = "online/day"
ONLINE_STORE = "online/store"
ONLINE_SERVED = "online/served"
ONLINE_STORE_DAY = "online/store_day"
ONLINE_OBSERVATIONS = "online/weather_observations"
ONLINE_AS_OF = "online/aggregates_as_of"
ONLINE_CONTENT_HASH = "online/content_hash"


def keys_metadata(kind: str) -> str:
    """The metadata key of the number of ``kind`` keys (``online/route_keys``)."""
    return f"online/{kind}_keys"


def build_online_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The online feature store asset."""
    parts = build.partitioning
    code_version = code_version_of_names(*MODULES)

    @dg.asset(
        name=NAME,
        group_name="serving",
        kinds={"polars", "redis"},
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        deps=[
            dg.AssetDep(FEATURES),
            dg.AssetDep(WEATHER, partition_mapping=parts.weather_window),
        ],
        partitions_def=parts.daily,
        backfill_policy=build.backfill_policy,
        output_required=False,  # a range run reports per-partition events instead (PartitionReporter)
        code_version=code_version,
        automation_condition=build.automation,
        description=(
            "The online feature store the served model reads: the day's trailing 7- and 28-day"
            " aggregates per origin, carrier and route (from flight_features, as of the day's cutoff)"
            " and the weather observations of the day and the day before (from validated_weather),"
            " written as one atomic snapshot to Redis (MLP_ONLINE_STORE_URL) or the embedded sqlite"
            " store. The store keeps the newest day: an older day is recorded but not served."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        online_store: OnlineStoreResource,
    ) -> Iterator[AssetEvent]:
        reporter = PartitionReporter(context)
        weather_keys = {p: upstream_keys(parts.weather_window, parts.daily, p) for p in reporter.partitions}
        feature_versions = RecordedVersions(
            context.instance, dg.AssetKey(FEATURES), reporter.partitions, table=FEATURES
        )
        weather_versions = RecordedVersions(
            context.instance,
            dg.AssetKey(WEATHER),
            {k for ks in weather_keys.values() for k in ks},
            table=WEATHER,
        )
        store = versioned_store.store()
        target = online_store.store()
        where = target.describe()
        verified: dict[PartitionVersion, pl.DataFrame] = {}  # a weather day is read once per step
        for partition in reporter.partitions:
            day = date.fromisoformat(partition)
            (feature_pin,) = feature_versions.require([partition])
            weather_pins = weather_versions.require(weather_keys[partition])
            features = read_pinned(store, [feature_pin]).drop(PARTITION_COLUMN)
            weather = read_pinned(store, weather_pins, verified).drop(PARTITION_COLUMN)
            try:
                snapshot = build_snapshot(day, features, weather)
            except ValueError as exc:
                raise dg.Failure(f"{NAME}[{partition}]: {exc}") from exc
            content_hash = snapshot.content_hash()
            try:
                target.write(snapshot)  # replaces the held snapshot unless that is of a newer day
                held = target.info()
            except OnlineStoreError as exc:
                raise dg.Failure(f"{NAME}[{partition}]: {exc}") from exc
            served = held is not None and held.day == day and held.content_hash == content_hash
            counts = snapshot.key_counts()
            if served:
                reporter.log(
                    f"{NAME}[{partition}]: {counts} keys and {snapshot.observations} weather observations"
                    f" -> {where}"
                )
            else:
                holds = "nothing" if held is None else f"the snapshot of {held.day}"
                context.log.warning(
                    f"{NAME}[{partition}]: {where} holds {holds} (the newest day wins);"
                    " this day is recorded but not served"
                )
            for pin in [p for p in verified if p.partition < weather_keys[partition][0]]:
                del verified[pin]
            upstream = [pin.to_metadata() for pin in [feature_pin, *weather_pins]]
            for item in upstream:
                item.pop("files", None)
            metadata: dict[str, Any] = {
                keys.ROW_COUNT: dg.MetadataValue.int(snapshot.records),
                keys.SCHEMA: dg.TableSchema(
                    columns=[dg.TableColumn(name, str(dtype)) for name, dtype in FEATURE_SCHEMA.items()]
                ),
                ONLINE_DAY: partition,
                **{keys_metadata(kind): dg.MetadataValue.int(counts[kind]) for kind in KINDS},
                ONLINE_OBSERVATIONS: dg.MetadataValue.int(snapshot.observations),
                ONLINE_AS_OF: snapshot.aggregates_as_of.isoformat(),
                ONLINE_STORE: where,
                ONLINE_SERVED: dg.MetadataValue.bool(served),
                ONLINE_STORE_DAY: held.day.isoformat() if held else "",
                ONLINE_CONTENT_HASH: content_hash,
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(upstream),
                keys.LINEAGE_CODE_VERSION: code_version,
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            }
            # the reporter's record of the partition: no table behind it, the snapshot's hash as version
            version = PartitionVersion(
                table=NAME,
                partition=partition,
                table_version=None,
                content_hash=content_hash,
                row_count=snapshot.records,
            )
            yield from reporter.publish(PartitionResult(partition, version, metadata))
        yield from reporter.finish()

    return [_asset]
