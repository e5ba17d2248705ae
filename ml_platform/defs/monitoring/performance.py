"""``live_performance``: the champion's metrics on the days' actuals, against its evaluation.

Two sources of predictions are joined with the actuals, and kept apart by a ``source`` column:
``batch`` (``flight_delay_predictions``, the champion's scoring of every flight of the day) and
``online`` (``prediction_log``, what the served model answered for the day's flights, by the same
model version). Both are scored on the same actuals against the per-route baseline on their own
rows, and judged with the same rule. The check ``no_performance_decay`` and the retrain trigger
(``live/degraded``) follow the batch source: it covers every flight of the day, the population the
evaluation measured, while online traffic is the flights callers asked about (few, repeated, or
skewed to some routes). Online decay is reported next to it (``live/online_*``, the table's
``online`` rows, the check's description): online worse than batch on the same days points at the
serving path (features, version), not at the model.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.monitoring.assets import (
    evaluation_of,
    evaluation_upstream,
    ignoring_models,
    model_dep,
    model_version_lineage,
)
from ml_platform.defs.predictions.assets import NAME as PREDICTIONS
from ml_platform.defs.publish import RecordedVersions, read_pinned, storage_metadata
from ml_platform.defs.serving.prediction_log import NAME as PREDICTION_LOG
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
LIVE_ROWS_BY_SOURCE = "live/rows_by_source"
LIVE_ONLINE_DECAY = "live/online_decay"
LIVE_ONLINE_SUMMARY = "live/online_summary"
#: The ``source`` column of the joined rows and of the table: batch or online predictions.
SOURCE = "source"
BATCH, ONLINE = "batch", "online"
PREDICTION_COLUMNS = ("predicted_arr_delay", "delay_probability")
#: Fitted baselines by the training pins they were fitted on.
_BASELINES: dict[tuple[tuple[str, str], ...], Any] = {}


def _baseline(store: Any, pins: list[PartitionVersion]) -> Any:
    from ml_platform.lib.evaluation.metrics import RouteMeanBaseline

    key = tuple((p.partition, p.content_hash) for p in pins)
    if key not in _BASELINES:
        _BASELINES.clear()
        # in key order: sums over the stored row order would change in the last bits with it
        _BASELINES[key] = RouteMeanBaseline.fit(read_pinned(store, pins).sort(PARTITION_COLUMN, *KEY_COLUMNS))
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
        deps=[
            PREDICTIONS,
            FEATURES,
            PREDICTION_LOG,
            model_dep(),
            dg.AssetDep(EVALUATION, partition_mapping=dg.AllPartitionMapping()),
        ],
        partitions_def=parts.daily,
        output_required=False,  # no predictions for the day: nothing to judge
        code_version=code_version_of_names(
            "ml_platform.lib.monitoring.performance", "ml_platform.lib.evaluation.metrics"
        ),
        automation_condition=ignoring_models(_automation(build.automation)),
        description=(
            "Live metrics of the version that predicted the day (flight_delay_predictions, and the"
            " online predictions of prediction_log by the same version, joined with the day's actuals"
            " from flight_features; a source column tells them apart), pooled over the last"
            f" {spec.live_window_days} days that version scored (judged once it scored that many),"
            " next to the naive per-route baseline on the same rows. Decay is the relative worsening"
            f" of the model's skill over that baseline since its evaluation (the model_evaluation of"
            " the model's week that evaluated its training run; the delay_model and model_evaluation"
            f" materializations are recorded in lineage/upstream), on {', '.join(metrics)};"
            f" above {spec.degradation_threshold:.0%} the check no_performance_decay fails and the"
            " retrain sensor acts (on the batch source; online decay is reported next to it)."
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
        batch = read_pinned(store, pins).drop(PARTITION_COLUMN)
        logged = RecordedVersions(context.instance, dg.AssetKey(PREDICTION_LOG), days, table=PREDICTION_LOG)
        log_pins = [pin for key in days if (pin := logged.get(key)) is not None]
        online_all = read_pinned(store, log_pins).drop(PARTITION_COLUMN) if log_pins else None
        online = None if online_all is None else online_all.filter(pl.col("model_version") == version)
        other_versions = 0 if online_all is None or online is None else online_all.height - online.height
        actual_pins = RecordedVersions(context.instance, dg.AssetKey(FEATURES), days, table=FEATURES).require(
            days
        )
        actuals = read_pinned(store, actual_pins).drop(PARTITION_COLUMN)
        keyed = batch.select(*KEY_COLUMNS, *PREDICTION_COLUMNS)
        predictions = pl.concat(
            [
                keyed.with_columns(pl.lit(BATCH).alias(SOURCE)),
                *(
                    []
                    if online is None
                    else [
                        online.select(*KEY_COLUMNS, *PREDICTION_COLUMNS)
                        .cast(dict(keyed.schema))  # type: ignore[arg-type]
                        .with_columns(pl.lit(ONLINE).alias(SOURCE))
                    ]
                ),
            ]
        )
        joined = predictions.join(actuals.drop(SOURCE, strict=False), on=list(KEY_COLUMNS), how="inner")
        # in key order: the join's order follows the stored rows, and the metrics' float sums follow it
        rows = joined.filter(pl.col("has_target")).sort(SOURCE, *KEY_COLUMNS)
        by_source = {src: rows.filter(pl.col(SOURCE) == src) for src in (BATCH, ONLINE)}
        if by_source[BATCH].height == 0:
            raise dg.Failure(f"{where}: no labelled flights among {batch.height} predictions of {days}")
        model = model_version_lineage(context.instance, version, mlflow_registry.model_name)
        # the evaluation of exactly the materialization that made the version (recorded below)
        evaluation = evaluation_of(context.instance, model)
        if evaluation is None or evaluation.asset_materialization is None:
            raise dg.Failure(
                f"{where}: v{version} ({model.upstream()['asset']}[{model.partition}] run {model.run_id})"
                f" has no {EVALUATION}[{model.partition}] that evaluated that run, to compare with"
            )
        meta = evaluation.asset_materialization.metadata
        evaluated = {
            who: {m: float(meta[f"evaluation/{who}_{m}"].value) for m in metrics}  # type: ignore[arg-type]
            for who in ("model", "baseline")
        }
        baseline = _baseline(store, model.pins)

        def judge(labelled: pl.DataFrame) -> tuple[dict[str, float], dict[str, float], list[Any]]:
            actual_delay = labelled["arr_delay"].cast(pl.Float64).to_numpy()
            actual_delayed = labelled["is_delayed"].cast(pl.Float64).to_numpy()
            live_model = score(
                actual_delay,
                actual_delayed,
                labelled["predicted_arr_delay"].to_numpy(),
                labelled["delay_probability"].to_numpy(),
            )
            live_baseline = score(actual_delay, actual_delayed, *baseline.predict(labelled))
            decays = judge_decay(
                live_model,
                live_baseline,
                evaluated["model"],
                evaluated["baseline"],
                metrics,
                spec.degradation_threshold,
            )
            return live_model, live_baseline, decays

        try:
            live_model, live_baseline, decays = judge(by_source[BATCH])
        except (EvaluationError, DecayError) as exc:
            raise dg.Failure(f"{where}: {exc}") from exc
        # a version is judged on a full window: a day or two of flights is too noisy to call decay
        judged = len(days) >= spec.live_window_days
        degraded = [d for d in decays if d.degraded] if judged else []
        online_rows = by_source[ONLINE]
        online_decays: list[Any] = []
        online_metrics: dict[str, dict[str, float]] = {}
        if online is None:
            online_summary = f"no online predictions of {days[0]}..{days[-1]}"
        elif online_rows.height == 0:
            online_summary = f"none of {online.height} online predictions by v{version} has a labelled flight"
        else:
            try:
                online_model, online_baseline, online_decays = judge(online_rows)
                online_metrics = {"model": online_model, "baseline": online_baseline}
                online_summary = _summary(online_decays, judged, len(days), spec.live_window_days, version)
            except (EvaluationError, DecayError) as exc:
                online_summary = f"{online_rows.height} online predictions not scored: {exc}"
        if other_versions:
            online_summary += f" ({other_versions} online predictions by other versions left out)"
        table = pl.concat(
            [
                pl.DataFrame([d.to_dict() for d in found]).with_columns(
                    pl.lit(source).alias(SOURCE), pl.lit(by_source[source].height).alias("rows")
                )
                for source, found in ((BATCH, decays), (ONLINE, online_decays))
                if found
            ]
        ).with_columns(
            pl.lit(version).alias("model_version"),
            pl.lit(f"{days[0]}..{days[-1]}").alias("pooled_days"),
        )
        published = RecordedVersions(context.instance, context.asset_key, [partition], table=NAME)
        written = store.write_partition(NAME, partition, table, unless_same_as=published.get(partition))
        prom.write_textfile(  # the batch source: what the alert rules and the retrain act on
            monitoring.metrics_path("live"),
            prom.live_exposition(
                version,
                {d.metric: d.live_model for d in decays},
                {d.metric: d.degradation for d in decays},
                written_at=datetime.now(UTC),
            ),
        )
        summary = _summary(decays, judged, len(days), spec.live_window_days, version)
        rows_by_source = {src: frame.height for src, frame in by_source.items()}
        context.log.info(
            f"{where}: v{version} over {days[0]}..{days[-1]} ({rows_by_source[BATCH]} flights): {summary};"
            f" online: {online_summary}"
        )
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(written.data_version),
            metadata={
                **storage_metadata(written, store.table_uri(NAME)),
                LIVE_MODEL_VERSION: version,
                LIVE_DEGRADED: dg.MetadataValue.bool(bool(degraded)),
                "live/judged": dg.MetadataValue.bool(judged),
                LIVE_DECAY: dg.MetadataValue.json([d.to_dict() for d in decays]),
                "live/pooled_days": (
                    f"{days[0]}..{days[-1]} ({len(days)} days, {rows_by_source[BATCH]} flights)"
                ),
                "live/model_metrics": dg.MetadataValue.json(live_model),
                "live/baseline_metrics": dg.MetadataValue.json(live_baseline),
                "live/summary": summary,
                LIVE_ROWS_BY_SOURCE: dg.MetadataValue.json(rows_by_source),
                LIVE_ONLINE_DECAY: dg.MetadataValue.json([d.to_dict() for d in online_decays]),
                "live/online_model_metrics": dg.MetadataValue.json(online_metrics.get("model", {})),
                "live/online_baseline_metrics": dg.MetadataValue.json(online_metrics.get("baseline", {})),
                "live/online_unmatched": dg.MetadataValue.int(
                    0 if online is None else online.height - joined.filter(pl.col(SOURCE) == ONLINE).height
                ),
                "live/online_other_versions": dg.MetadataValue.int(other_versions),
                LIVE_ONLINE_SUMMARY: online_summary,
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                    [{**p.to_metadata(), "role": "predictions"} for p in pins]
                    + [{**p.to_metadata(), "role": "online_predictions"} for p in log_pins]
                    + [{**p.to_metadata(), "role": "actuals"} for p in actual_pins]
                    + [model.upstream(), evaluation_upstream(evaluation, model)]
                ),
                keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK,
                    passed=not degraded,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"{summary}; online: {online_summary}",
                    metadata={"partition": partition, "model_version": version},
                )
            ],
        )

    return [_asset]


def _automation(eager: dg.AutomationCondition | None) -> dg.AutomationCondition | None:  # type: ignore[type-arg]
    """Eager, except that the day's ``prediction_log`` may be missing, and never in its run.

    A day without online traffic has no ``prediction_log`` partition: the batch side is judged
    anyway (and judged again when the day's log lands: ``any_deps_updated``). And a run that
    requests ``prediction_log`` must not also request this asset: when the log is empty, Dagster
    skips the steps downstream of an output that was not produced, in the same run. So this asset
    waits for the next evaluation (the replay's next round, the daemon's next tick).
    """
    if eager is None:
        return None
    log = dg.AssetSelection.assets(PREDICTION_LOG)
    return (
        eager.replace("any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(log))
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).allow(log)
    ).with_label("eager, prediction_log optional and in its own run")


def _summary(decays: list[Any], judged: bool, days: int, window: int, version: str) -> str:
    """The decays in one line; "not judged yet" until the version scored a full window."""
    if judged:
        return "; ".join(d.summary for d in decays)
    measured = "; ".join(f"{d.measured} ({d.degradation:+.1%})" for d in decays)
    return f"not judged yet ({days} of {window} days by v{version}): {measured}"
