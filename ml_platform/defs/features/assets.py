"""``flight_features``: point-in-time weather, trailing aggregates and targets per flight."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl

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
)
from ml_platform.lib import hashing
from ml_platform.lib.features import transforms
from ml_platform.lib.features.transforms import build_flight_features, feature_invariants
from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion, delta
from ml_platform.lib.versioning import code_version_of
from ml_platform.partitions import upstream_keys
from ml_platform.resources import VersionedStoreResource

NAME = "flight_features"
FLIGHTS = "validated_flights"
WEATHER = "validated_weather"
INVARIANTS = {
    "no_look_ahead": "Weather observed strictly before departure; aggregates cut off before the day.",
    "complete": "One feature row per validated flight of the day: nothing dropped, nothing added.",
    "targets_consistent": "is_delayed == (arr_delay > 15), null exactly for cancelled/diverted flights.",
}


def build_feature_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The feature asset."""
    code_version = code_version_of(transforms, delta, hashing)
    parts = build.partitioning

    @dg.asset(
        name=NAME,
        group_name="features",
        kinds={"polars", "delta"},
        op_tags=k8s_tags(NAME, "medium"),
        deps=[
            dg.AssetDep(FLIGHTS, partition_mapping=parts.flights_window),
            dg.AssetDep(WEATHER, partition_mapping=parts.weather_window),
        ],
        partitions_def=parts.daily,
        backfill_policy=build.backfill_policy,
        output_required=False,  # a range run reports per-partition events instead (PartitionReporter)
        code_version=code_version,
        automation_condition=build.automation,
        description=(
            "One row per scheduled flight of the day: calendar features, the latest weather observed"
            " before departure (as-of join), trailing 7- and 28-day delay aggregates per origin,"
            " carrier and route (through a TimeWindowPartitionMapping over validated_flights), and"
            " the targets arr_delay and is_delayed. Cancelled and diverted flights are kept and"
            " marked (flight_status, has_target)."
        ),
        check_specs=[
            dg.AssetCheckSpec(name, asset=NAME, blocking=True, partitions_def=parts.daily, description=text)
            for name, text in INVARIANTS.items()
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, versioned_store: VersionedStoreResource
    ) -> Iterator[AssetEvent]:
        store = versioned_store.store()
        reporter = PartitionReporter(context)
        windows = {
            p: (
                upstream_keys(parts.flights_window, parts.daily, p),
                upstream_keys(parts.weather_window, parts.daily, p),
            )
            for p in reporter.partitions
        }
        flight_versions = RecordedVersions(
            context.instance, dg.AssetKey(FLIGHTS), {k for f, _ in windows.values() for k in f}, table=FLIGHTS
        )
        weather_versions = RecordedVersions(
            context.instance, dg.AssetKey(WEATHER), {k for _, w in windows.values() for k in w}, table=WEATHER
        )
        published = RecordedVersions(context.instance, context.asset_key, reporter.partitions, table=NAME)
        verified: dict[PartitionVersion, pl.DataFrame] = {}  # each upstream day is read once per step
        for partition in reporter.partitions:
            day = date.fromisoformat(partition)
            flight_pins = flight_versions.require(windows[partition][0])
            weather_pins = weather_versions.require(windows[partition][1])
            flights = read_pinned(store, flight_pins, verified).drop(PARTITION_COLUMN)
            weather = read_pinned(store, weather_pins, verified).drop(PARTITION_COLUMN)
            frame = build_flight_features(day, flights, weather)
            outcomes = feature_invariants(frame, flights.filter(flights["flight_date"] == day))
            checks = [
                dg.AssetCheckResult(
                    check_name=o.name,
                    passed=o.passed,
                    metadata={"partition": partition, "violations": o.violations, "rule": o.description},
                )
                for o in outcomes
            ]
            failed = [o for o in outcomes if not o.passed]
            if failed:
                yield from reporter.fail(partition, checks)
                raise dg.Failure(
                    description=f"{NAME}[{partition}]: invariant(s) failed, nothing published: "
                    + "; ".join(f"{o.name} ({o.violations} {o.description})" for o in failed),
                    metadata={"partition": partition},
                )
            version = store.write_partition(NAME, partition, frame, unless_same_as=published.get(partition))
            reporter.log(
                f"{NAME}[{partition}]: {version.row_count} rows from {len(flight_pins)} flight and"
                f" {len(weather_pins)} weather partitions -> {describe(version)}"
            )
            # days are processed in order: what lies before today's window is never read again
            for pin in [p for p in verified if p.partition < windows[partition][0][0]]:
                del verified[pin]
            yield from reporter.publish(
                PartitionResult(
                    partition,
                    version,
                    partition_metadata(
                        version,
                        frame,
                        table_uri=store.table_uri(NAME),
                        upstream=[*flight_pins, *weather_pins],
                        code_version=code_version,
                        build=build.build,
                        extra={
                            "features/weather_coverage": float(
                                frame["weather_observed_at"].is_not_null().sum() / frame.height
                            ),
                            "features/rows_without_target": int((~frame["has_target"]).sum()),
                        },
                    ),
                    checks=checks,
                )
            )
        yield from reporter.finish()

    return [_asset]
