"""Profiles of the daily data and the daily ``drift_report`` against the champion's training window."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
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
    describe,
    partition_metadata,
    read_pinned,
    storage_metadata,
)
from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import MlflowResource, MonitoringResource, VersionedStoreResource

#: Profile asset -> the asset whose daily partitions it profiles.
PROFILED = {
    "flight_feature_profiles": "flight_features",
    "validated_flight_profiles": "validated_flights",
    "prediction_log_profiles": "prediction_log",
}
FEATURE_PROFILES = "flight_feature_profiles"
#: The profiles of the online predictions: in the monitoring job with the log (not the data job).
PREDICTION_LOG_PROFILES = "prediction_log_profiles"
#: Sources whose day may be absent (no online prediction of the day's flights): nothing to profile.
OPTIONAL_SOURCES = frozenset({"prediction_log"})
DRIFT = "drift_report"
CHECK = "no_feature_drift"
MODEL = "delay_model"
EVALUATION = "model_evaluation"
PROFILE_MODULES = ("ml_platform.lib.monitoring.profiles", "ml_platform.lib.storage.delta")
DRIFT_MODULES = (
    *PROFILE_MODULES,
    "ml_platform.lib.monitoring.drift",
    "ml_platform.lib.monitoring.report",
    "ml_platform.lib.monitoring.metrics",
)
#: Metadata keys of the drift report (read by the retrain sensor and the replay timeline).
DRIFT_SEVERITY = "drift/severity"
DRIFT_ERRORS = "drift/features_error"
DRIFT_WARNINGS = "drift/features_warn"
DRIFT_MODEL_VERSION = "drift/model_version"
DRIFT_MODEL_PARTITION = "drift/model_partition"
DRIFT_REFERENCE = "drift/reference_window"


@dataclass(frozen=True)
class ChampionModel:
    """The champion version and the delay_model materialization that made it."""

    version: str
    #: The weekly delay_model partition.
    partition: str
    #: The feature partitions it trained on, as recorded (table version and content hash).
    pins: list[PartitionVersion]
    #: The Dagster run of that delay_model materialization (with the partition: which one it was).
    run_id: str = ""
    #: The registered model's name.
    model_name: str = ""

    def upstream(self, role: str = "model") -> dict[str, Any]:
        """The model as a ``lineage/upstream`` entry: the delay_model materialization and its version.

        The same run reference a Bento records (asset, partition, Dagster run), so the lineage
        tools and the OpenLineage export follow it from what the model made to the model.
        """
        return {
            "asset": MODEL,
            "partition": self.partition,
            "run_id": self.run_id,
            "registered_model": self.model_name,
            "model_version": self.version,
            "role": role,
        }

    @property
    def window_end(self) -> date:
        """The last day of its training data."""
        return max(date.fromisoformat(p.partition) for p in self.pins)


def find_champion(instance: dg.DagsterInstance, mlflow_registry: MlflowResource) -> ChampionModel | None:
    """The champion of the registry with its training lineage; None when there is no champion.

    Raises:
        dg.Failure: when the champion version has no delay_model materialization in this instance.
    """
    version = mlflow_registry.registry().champion()
    return None if version is None else model_version_lineage(instance, version, mlflow_registry.model_name)


def model_version_lineage(instance: dg.DagsterInstance, version: str, model_name: str) -> ChampionModel:
    """The delay_model materialization that registered ``version``, with its training pins.

    Raises:
        dg.Failure: when no delay_model materialization of this instance registered ``version``.
    """
    record = version_record(instance, MODEL, version)
    if record is None:
        raise dg.Failure(
            f"v{version} of {model_name} has no {MODEL} materialization in this Dagster instance: its"
            " training window (the drift reference, the live baseline) is unknown"
        )
    mat = record.asset_materialization
    assert mat is not None
    pins = [PartitionVersion.from_metadata(item) for item in mat.metadata[keys.LINEAGE_UPSTREAM].value]  # type: ignore[union-attr]
    return ChampionModel(version, str(mat.partition), pins, run_id=record.run_id, model_name=model_name)


def evaluation_of(instance: dg.DagsterInstance, model: ChampionModel) -> dg.EventLogRecord | None:
    """The newest ``model_evaluation`` of the model's week that evaluated exactly its training run.

    Found by the evaluation's recorded ``lineage/upstream`` (the delay_model partition and run it
    read), not by the version number alone: an evaluation is pinned to the materialization that
    made the model.
    """
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(EVALUATION), asset_partitions=[model.partition]),
            limit=50,
            cursor=cursor,
        )
        for record in page.records:
            mat = record.asset_materialization
            recorded = mat.metadata.get(keys.LINEAGE_UPSTREAM) if mat is not None else None
            entries = recorded.value if recorded is not None else []
            if any(
                isinstance(e, dict)
                and e.get("asset") == MODEL
                and e.get("partition") == model.partition
                and e.get("run_id") == model.run_id
                for e in entries  # type: ignore[union-attr]
            ):
                return record
        if not page.has_more:
            return None
        cursor = page.cursor


def evaluation_upstream(record: dg.EventLogRecord, model: ChampionModel) -> dict[str, Any]:
    """The evaluation a judgement compared with, as a ``lineage/upstream`` run reference."""
    mat = record.asset_materialization
    assert mat is not None
    return {
        "asset": EVALUATION,
        "partition": mat.partition,
        "run_id": record.run_id,
        "model_version": model.version,
        "role": "evaluation",
    }


def model_dep() -> dg.AssetDep:
    """The graph edge from ``delay_model`` to what the champion makes (predictions, drift, performance).

    A day is made by whichever week's model is champion, which no partition mapping can say; the
    edge maps each day to every model week. Automation ignores it (:func:`ignoring_models`), so a
    new model (champion or not) does not re-run days, and missing weeks do not hold them back;
    which materialization made the day is recorded in ``lineage/upstream``.
    """
    return dg.AssetDep(MODEL, partition_mapping=dg.AllPartitionMapping())


def ignoring_models(condition: dg.AutomationCondition | None) -> dg.AutomationCondition | None:  # type: ignore[type-arg]
    """``condition`` without regard to the model assets (see :func:`model_dep`)."""
    if condition is None:
        return None
    return condition.ignore(dg.AssetSelection.assets(MODEL, EVALUATION))  # type: ignore[attr-defined,no-any-return]


#: delay_model records by (event storage, version): a version is registered by exactly one
#: materialization, so a found record never changes.
_MODEL_RECORDS: dict[tuple[str, str], dg.EventLogRecord] = {}
_MAX_CACHED = 256


def _storage_identity(instance: dg.DagsterInstance) -> str | None:
    """What names the instance's event storage across instance objects (the daemon makes one per tick)."""
    try:
        return repr(instance.get_ref().event_storage_data)
    except Exception:  # an ephemeral instance has no ref: nothing to cache by
        return None


def version_record(instance: dg.DagsterInstance, asset: str, version: str) -> dg.EventLogRecord | None:
    """The newest materialization of ``asset`` whose ``mlflow/model_version`` is ``version``.

    Pages back through the asset's materializations, newest first (a first page of 10: the
    version asked for is usually recent), until it finds one. A delay_model record never changes
    once written, so it is remembered per event storage for the process (the sensor ticks every
    minute in the same code server, with a new instance object each time).
    """
    identity = _storage_identity(instance) if asset == MODEL else None
    if identity is not None and (identity, version) in _MODEL_RECORDS:
        return _MODEL_RECORDS[identity, version]
    cursor, limit = None, 10
    while True:
        page = instance.fetch_materializations(dg.AssetKey(asset), limit=limit, cursor=cursor)
        for record in page.records:
            mat = record.asset_materialization
            recorded = mat.metadata.get(keys.MLFLOW_MODEL_VERSION) if mat is not None else None
            if recorded is not None and str(recorded.value) == version:
                if identity is not None:
                    if len(_MODEL_RECORDS) >= _MAX_CACHED:
                        _MODEL_RECORDS.clear()
                    _MODEL_RECORDS[identity, version] = record
                return record
        if not page.has_more:
            return None
        cursor, limit = page.cursor, 200


def latest_data_day(instance: dg.DagsterInstance, asset: str = "flight_features") -> date | None:
    """The newest materialized daily partition of ``asset`` (the platform's "today")."""
    keys_ = instance.get_materialized_partitions(dg.AssetKey(asset))
    return max((date.fromisoformat(k) for k in keys_), default=None)


def build_monitoring_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The profile assets and the drift report."""
    return [*(_profile_asset(name, source, build) for name, source in PROFILED.items()), _drift_asset(build)]


def _profile_asset(name: str, source: str, build: AssetBuild) -> dg.AssetsDefinition:
    parts = build.partitioning
    # a log row also says who asked and where it was read: not features of the flight
    not_profiled: tuple[str, ...] = ()
    modules: tuple[str, ...] = PROFILE_MODULES
    if source == "prediction_log":
        from ml_platform.lib.serving.prediction_log import NOT_PROFILED

        not_profiled = NOT_PROFILED
        modules = (*PROFILE_MODULES, "ml_platform.lib.serving.prediction_log")
    code_version = code_version_of_names(*modules)

    @dg.asset(
        name=name,
        group_name="monitoring",
        kinds={"whylogs", "delta"},
        deps=[source],
        op_tags=k8s_tags(name, "small"),
        partitions_def=parts.daily,
        # the data job's policy; none in the monitoring job, like its other assets (one run per day)
        backfill_policy=None if source in OPTIONAL_SOURCES else build.backfill_policy,
        output_required=False,  # a range run reports per-partition events (PartitionReporter)
        code_version=code_version,
        automation_condition=build.automation,
        description=(
            f"whylogs profile of each daily partition of {source}, read at the version its"
            " materialization recorded: counts, a KLL quantile sketch per numeric column and a"
            " frequent-items sketch per string column (plus route = origin-dest). One row per day in"
            " Delta: the profile's protobuf bytes and the source's table version and content hash."
            " A model's drift reference is the merge of its training window's daily profiles."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, versioned_store: VersionedStoreResource
    ) -> Iterator[AssetEvent]:
        from ml_platform.lib.monitoring import profiles

        store = versioned_store.store()
        reporter = PartitionReporter(context)
        sources = RecordedVersions(context.instance, dg.AssetKey(source), reporter.partitions, table=source)
        published = RecordedVersions(context.instance, context.asset_key, reporter.partitions, table=name)
        for partition in reporter.partitions:
            if source in OPTIONAL_SOURCES and sources.get(partition) is None:
                context.log.info(f"{name}[{partition}]: {source}[{partition}] is not materialized; skipped")
                continue
            (pin,) = sources.require([partition])
            frame = profiles.with_route(read_pinned(store, [pin]).drop(PARTITION_COLUMN))
            kinds = profiles.profiled_columns(
                frame, exclude=[c for c in frame.columns if c.startswith("_") or c in not_profiled]
            )
            view = profiles.profile_frame(frame, date.fromisoformat(partition), kinds)
            blob = profiles.serialize(view)
            row = pl.DataFrame(
                {
                    "profile": [blob],
                    "columns": [json.dumps(kinds, sort_keys=True)],
                    "rows": [frame.height],
                    "source_table": [source],
                    "source_partition": [partition],
                    "source_table_version": [pin.table_version],
                    "source_content_hash": [pin.content_hash],
                },
                schema_overrides={"profile": pl.Binary, "source_table_version": pl.Int64},
            )
            version = store.write_partition(name, partition, row, unless_same_as=published.get(partition))
            reporter.log(
                f"{name}[{partition}]: {len(kinds)} columns of {frame.height} rows -> {describe(version)}"
            )
            yield from reporter.publish(
                PartitionResult(
                    partition,
                    version,
                    partition_metadata(
                        version,
                        row,
                        table_uri=store.table_uri(name),
                        upstream=[pin],
                        code_version=code_version,
                        build=build.build,
                        extra={
                            "profile/columns": len(kinds),
                            "profile/rows": frame.height,
                            "profile/bytes": len(blob),
                        },
                    ),
                )
            )
        if reporter.results or reporter.ranged:
            yield from reporter.finish()

    return _asset


#: Merged reference profiles by the pins they merge (a replay judges many days against one model).
_REFERENCES: dict[tuple[tuple[str, str], ...], Any] = {}


def _reference(
    store: Any, champion: ChampionModel, recorded: RecordedVersions
) -> tuple[Any, list[PartitionVersion]]:
    """The merge of the profiles of the champion's training days, checked against its lineage."""
    from ml_platform.lib.monitoring import profiles

    days = sorted(p.partition for p in champion.pins)
    profile_pins = recorded.require(days)
    cache_key = tuple((p.partition, p.content_hash) for p in profile_pins)
    if cache_key in _REFERENCES:
        return _REFERENCES[cache_key], profile_pins
    rows = read_pinned(store, profile_pins)
    trained_on = {p.partition: p.content_hash for p in champion.pins}
    stale = rows.filter(
        pl.col("source_content_hash") != pl.col("source_partition").replace_strict(trained_on, default=None)
    )
    if stale.height:
        day = stale["source_partition"][0]
        raise dg.Failure(
            f"{DRIFT}: the profile of flight_features[{day}] was made from content"
            f" {stale['source_content_hash'][0][:12]}, but champion v{champion.version} trained on"
            f" {trained_on[day][:12]}; rematerialize {FEATURE_PROFILES}[{day}] (or retrain) so the"
            " reference is the data the model saw"
        )
    views = [
        profiles.deserialize(b, f"{FEATURE_PROFILES}[{d}]")
        for b, d in rows.select("profile", "source_partition").iter_rows()
    ]
    reference = profiles.merge(views)
    _REFERENCES.clear()  # one champion at a time
    _REFERENCES[cache_key] = reference
    return reference, profile_pins


def _drift_asset(build: AssetBuild) -> dg.AssetsDefinition:
    parts = build.partitioning
    spec = build.monitoring
    policy = spec.policy()

    @dg.multi_asset(
        name=DRIFT,
        op_tags=k8s_tags(DRIFT, "medium", model=DELAY_MODEL),
        partitions_def=parts.daily,
        # no champion yet: nothing to compare against, so neither the report nor its check result
        # (an @asset's check output is always required; a skippable spec's, with can_subset, is not)
        can_subset=True,
        specs=[
            dg.AssetSpec(
                DRIFT,
                group_name="monitoring",
                kinds={"whylogs", "delta"},
                deps=[FEATURE_PROFILES, model_dep()],
                partitions_def=parts.daily,
                skippable=True,
                code_version=code_version_of_names(*DRIFT_MODULES),
                automation_condition=ignoring_models(build.automation),
                description=(
                    "Drift of each day's flight features against the champion model's training window: the"
                    " merge of the daily profiles of exactly the feature versions the champion trained on."
                    f" {len(policy.features)} features; numeric ones by PSI, KS and mean shift, categorical"
                    " ones (carrier, origin, dest, route) by PSI and total variation distance, every one by"
                    " its change in null share; effect sizes against per-feature thresholds"
                    " (MLP_DRIFT_THRESHOLDS). A table and a plot per day; the check no_feature_drift warns or"
                    " errs; the retrain sensor acts on errors."
                ),
            )
        ],
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=DRIFT,
                partitions_def=parts.daily,
                description="Every judged feature under its warn threshold (WARN severity above it,"
                " ERROR above the error threshold).",
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        mlflow_registry: MlflowResource,
        monitoring: MonitoringResource,
    ) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
        from ml_platform.lib.monitoring import metrics, profiles, report
        from ml_platform.lib.monitoring.drift import DriftError, score_drift, worst

        partition = context.partition_key
        where = f"{DRIFT}[{partition}]"
        champion = find_champion(context.instance, mlflow_registry)
        if champion is None:
            context.log.warning(f"{where}: no champion model yet, so nothing to judge drift against; skipped")
            return
        store = versioned_store.store()
        days = sorted(p.partition for p in champion.pins)
        recorded = RecordedVersions(
            context.instance, dg.AssetKey(FEATURE_PROFILES), [*days, partition], table=FEATURE_PROFILES
        )
        reference, reference_pins = _reference(store, champion, recorded)
        (current_pin,) = recorded.require([partition])
        current_row = read_pinned(store, [current_pin])
        current = profiles.deserialize(current_row["profile"][0], f"{FEATURE_PROFILES}[{partition}]")
        try:
            results = score_drift(reference, current, policy)
        except DriftError as exc:
            raise dg.Failure(f"{where}: {exc}") from exc
        severity = worst(results)
        frame = report.report_frame(
            results, model_version=champion.version, model_partition=champion.partition
        )
        published = RecordedVersions(context.instance, context.asset_key, [partition], table=DRIFT)
        version = store.write_partition(DRIFT, partition, frame, unless_same_as=published.get(partition))
        errors = [r for r in results if r.severity == "error"]
        warnings = [r for r in results if r.severity == "warn"]
        window = f"{days[0]}..{days[-1]}"
        context.log.info(
            f"{where}: {severity} vs champion v{champion.version} ({MODEL}[{champion.partition}], window"
            f" {window}); errors: {[r.feature for r in errors]}, warnings: {[r.feature for r in warnings]}"
        )
        metrics.write_textfile(
            monitoring.metrics_path("drift"),
            metrics.drift_exposition(
                report.samples(results),
                {r.feature: metrics.SEVERITY_CODES[r.severity] for r in results},
                model_version=champion.version,
                partition_day=date.fromisoformat(partition),
                written_at=datetime.now(UTC),
            ),
        )
        title = f"{where} vs champion v{champion.version} (reference {window})"
        check = dg.AssetCheckResult(
            check_name=CHECK,
            passed=severity == "ok",
            severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
            description=(
                "no judged feature over its warn threshold"
                if severity == "ok"
                else "; ".join(f"{r.feature}: {', '.join(r.breaches)}" for r in [*errors, *warnings][:8])
            ),
            metadata={
                "partition": partition,
                "errors": dg.MetadataValue.json([r.to_dict() for r in errors]),
                "warnings": dg.MetadataValue.json([r.to_dict() for r in warnings]),
            },
        )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(version.data_version),
            metadata={
                **storage_metadata(version, store.table_uri(DRIFT)),
                DRIFT_SEVERITY: severity,
                DRIFT_ERRORS: dg.MetadataValue.json([r.to_dict() for r in errors]),
                DRIFT_WARNINGS: dg.MetadataValue.json([r.to_dict() for r in warnings]),
                DRIFT_MODEL_VERSION: champion.version,
                DRIFT_MODEL_PARTITION: champion.partition,
                DRIFT_REFERENCE: f"{window} ({len(days)} feature partitions as the champion trained on them)",
                "drift/table": dg.MetadataValue.md(report.markdown_table(results)),
                "drift/plot": dg.MetadataValue.md(
                    _png_markdown(report.drift_plot(results, title), f"drift of {partition}")
                ),
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    [{**p.to_metadata(), "role": "reference"} for p in reference_pins]
                    + [{**current_pin.to_metadata(), "role": "current"}, champion.upstream()]
                ),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            },
            check_results=[check],
        )

    return _asset


def _png_markdown(png: bytes, alt: str) -> str:
    from ml_platform.lib.evaluation.plots import png_markdown

    return png_markdown(png, alt)
