"""``live_performance``: the champion's metrics on the days' actuals, against its evaluation."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.monitoring.assets import model_version_lineage, version_record
from ml_platform.defs.predictions.assets import NAME as PREDICTIONS
from ml_platform.defs.publish import RecordedVersions, read_pinned, storage_metadata
from ml_platform.lib import metadata as keys
from ml_platform.lib.features.transforms import KEY_COLUMNS
from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import MlflowResource, MonitoringResource, VersionedStoreResource

NAME = "live_performance"
CHECK = "no_performance_decay"
FEATURES = "flight_features"
EVALUATION = "model_evaluation"
#: Metadata keys read by the retrain sensor.
LIVE_DEGRADED = "live/degraded"
LIVE_DECAY = "live/decay"
LIVE_MODEL_VERSION = "live/model_version"
#: Fitted baselines by the training pins they were fitted on.
_BASELINES: dict[tuple[tuple[str, str], ...], Any] = {}


def _baseline(store: Any, pins: list[PartitionVersion]) -> Any:
    from ml_platform.lib.evaluation.metrics import RouteMeanBaseline

    key = tuple((p.partition, p.content_hash) for p in pins)
    if key not in _BASELINES:
        _BASELINES.clear()
        _BASELINES[key] = RouteMeanBaseline.fit(read_pinned(store, pins))
    return _BASELINES[key]


def build_performance_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The live performance asset."""
    parts = build.partitioning
    spec = build.monitoring
    metrics = build.model.gate_metrics

    @dg.asset(
        name=NAME,
        group_name="monitoring",
        kinds={"delta"},
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        deps=[PREDICTIONS, FEATURES],
        partitions_def=parts.daily,
        output_required=False,  # no predictions for the day: nothing to judge
        code_version=code_version_of_names(
            "ml_platform.lib.monitoring.performance", "ml_platform.lib.evaluation.metrics"
        ),
        automation_condition=build.automation,
        description=(
            "Live metrics of the version that predicted the day (flight_delay_predictions joined with"
            " the day's actuals from flight_features), pooled over the last"
            f" {spec.live_window_days} days that version scored (judged once it scored that many),"
            " next to the naive per-route baseline on the same rows. Decay is the relative worsening"
            f" of the model's skill over that baseline since its evaluation, on {', '.join(metrics)};"
            f" above {spec.degradation_threshold:.0%} the check no_performance_decay fails and the"
            " retrain sensor acts."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=NAME,
                partitions_def=parts.daily,
                description=f"Skill over the baseline within {spec.degradation_threshold:.0%} of evaluation.",
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        mlflow_registry: MlflowResource,
        monitoring: MonitoringResource,
    ) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
        from ml_platform.lib.evaluation.metrics import EvaluationError, score
        from ml_platform.lib.monitoring import metrics as prom
        from ml_platform.lib.monitoring.performance import DecayError, judge_decay

        partition = context.partition_key
        where = f"{NAME}[{partition}]"
        store = versioned_store.store()
        day = date.fromisoformat(partition)
        window = [(day - timedelta(days=i)).isoformat() for i in range(spec.live_window_days)][::-1]
        predicted = RecordedVersions(context.instance, dg.AssetKey(PREDICTIONS), window, table=PREDICTIONS)
        if predicted.get(partition) is None:
            context.log.warning(f"{where}: {PREDICTIONS}[{partition}] is not materialized; skipped")
            return
        today = read_pinned(store, [predicted.require([partition])[0]])
        version = str(today["model_version"][0])
        # pool back from today over consecutive days scored by the same version
        pins = []
        for key in reversed(window):
            pin = predicted.get(key)
            if pin is None:
                break
            frame = today if key == partition else read_pinned(store, [pin])
            if frame.height and str(frame["model_version"][0]) != version:
                break
            pins.append(pin)
        pins.reverse()
        days = [p.partition for p in pins]
        predictions = read_pinned(store, pins).drop(PARTITION_COLUMN)
        actual_pins = RecordedVersions(context.instance, dg.AssetKey(FEATURES), days, table=FEATURES).require(
            days
        )
        actuals = read_pinned(store, actual_pins).drop(PARTITION_COLUMN)
        rows = predictions.join(actuals, on=list(KEY_COLUMNS), how="inner").filter(pl.col("has_target"))
        if rows.height == 0:
            raise dg.Failure(f"{where}: no labelled flights among {predictions.height} predictions of {days}")
        model = model_version_lineage(context.instance, version, mlflow_registry.model_name)
        evaluation = version_record(context.instance, EVALUATION, version)
        if evaluation is None or evaluation.asset_materialization is None:
            raise dg.Failure(f"{where}: v{version} has no {EVALUATION} materialization to compare with")
        meta = evaluation.asset_materialization.metadata
        evaluated = {
            who: {m: float(meta[f"evaluation/{who}_{m}"].value) for m in metrics}  # type: ignore[arg-type]
            for who in ("model", "baseline")
        }
        actual_delay = rows["arr_delay"].cast(pl.Float64).to_numpy()
        actual_delayed = rows["is_delayed"].cast(pl.Float64).to_numpy()
        try:
            live_model = score(
                actual_delay,
                actual_delayed,
                rows["predicted_arr_delay"].to_numpy(),
                rows["delay_probability"].to_numpy(),
            )
            live_baseline = score(actual_delay, actual_delayed, *_baseline(store, model.pins).predict(rows))
            decays = judge_decay(
                live_model,
                live_baseline,
                evaluated["model"],
                evaluated["baseline"],
                metrics,
                spec.degradation_threshold,
            )
        except (EvaluationError, DecayError) as exc:
            raise dg.Failure(f"{where}: {exc}") from exc
        # a version is judged on a full window: a day or two of flights is too noisy to call decay
        judged = len(days) >= spec.live_window_days
        degraded = [d for d in decays if d.degraded] if judged else []
        table = pl.DataFrame([d.to_dict() for d in decays]).with_columns(
            pl.lit(version).alias("model_version"),
            pl.lit(f"{days[0]}..{days[-1]}").alias("pooled_days"),
            pl.lit(rows.height).alias("rows"),
        )
        published = RecordedVersions(context.instance, context.asset_key, [partition], table=NAME)
        written = store.write_partition(NAME, partition, table, unless_same_as=published.get(partition))
        prom.write_textfile(
            monitoring.metrics_path("live"),
            prom.live_exposition(
                version,
                {d.metric: d.live_model for d in decays},
                {d.metric: d.degradation for d in decays},
                written_at=datetime.now(UTC),
            ),
        )
        if judged:
            summary = "; ".join(d.summary for d in decays)
        else:
            measured = "; ".join(f"{d.measured} ({d.degradation:+.1%})" for d in decays)
            summary = (
                f"not judged yet ({len(days)} of {spec.live_window_days} days by v{version}): {measured}"
            )
        context.log.info(f"{where}: v{version} over {days[0]}..{days[-1]} ({rows.height} flights): {summary}")
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(written.data_version),
            metadata={
                **storage_metadata(written, store.table_uri(NAME)),
                LIVE_MODEL_VERSION: version,
                LIVE_DEGRADED: dg.MetadataValue.bool(bool(degraded)),
                "live/judged": dg.MetadataValue.bool(judged),
                LIVE_DECAY: dg.MetadataValue.json([d.to_dict() for d in decays]),
                "live/pooled_days": f"{days[0]}..{days[-1]} ({len(days)} days, {rows.height} flights)",
                "live/model_metrics": dg.MetadataValue.json(live_model),
                "live/baseline_metrics": dg.MetadataValue.json(live_baseline),
                "live/summary": summary,
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    [{**p.to_metadata(), "role": "predictions"} for p in pins]
                    + [{**p.to_metadata(), "role": "actuals"} for p in actual_pins]
                ),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK,
                    passed=not degraded,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=summary,
                    metadata={"partition": partition, "model_version": version},
                )
            ],
        )

    return [_asset]
