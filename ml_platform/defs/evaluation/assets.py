"""``model_evaluation``: the week's model on its out-of-time holdout, against two baselines, gated."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.publish import RecordedVersions, latest_materializations, read_pinned
from ml_platform.lib import metadata as keys
from ml_platform.lib.evaluation import gates as gate_names
from ml_platform.lib.storage import PARTITION_COLUMN, PartitionVersion
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.partitions import upstream_keys
from ml_platform.resources import MlflowResource, VersionedStoreResource

NAME = "model_evaluation"
MODEL = "delay_model"
FEATURES = "flight_features"
HISTORY_METRICS = ("mae", "rmse", "roc_auc", "pr_auc", "brier")
EVALUATION_MODULES = (
    "ml_platform.lib.evaluation.evaluate",
    "ml_platform.lib.evaluation.gates",
    "ml_platform.lib.evaluation.metrics",
    "ml_platform.lib.evaluation.plots",
)


def metric_key(who: str, metric: str) -> str:
    """Metadata key of one measured metric (``who``: model, baseline or champion)."""
    return f"evaluation/{who}_{metric}"


def recorded_model(instance: dg.DagsterInstance, partition: str) -> dg.EventLogRecord:
    """The latest ``delay_model`` materialization of ``partition``; what evaluation and promotion judge."""
    record = latest_materializations(instance, dg.AssetKey(MODEL), [partition]).get(partition)
    if record is None:
        raise dg.Failure(f"{MODEL}[{partition}] has no materialization; materialize it first")
    return record


def build_evaluation_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The evaluation asset and its blocking gates."""
    parts = build.partitioning
    spec = build.model

    @dg.asset(
        name=NAME,
        group_name="evaluation",
        kinds={"torch", "mlflow"},
        op_tags=k8s_tags(NAME, "medium", model=DELAY_MODEL),
        deps=[MODEL, dg.AssetDep(FEATURES, partition_mapping=parts.holdout_window)],
        partitions_def=parts.weekly,
        code_version=code_version_of_names(*EVALUATION_MODULES),
        description=(
            "Out-of-time evaluation of the week's delay_model version on the week itself (the week"
            " after its training window): MAE and RMSE of arr_delay in minutes, ROC AUC, PR AUC and"
            " Brier score of is_delayed. Compared on the same rows with the historical mean per route"
            " (fitted on the model's training window) and with the current champion. Blocking gates,"
            f" on {', '.join(spec.gate_metrics)}: beat the naive baseline; be no worse than the"
            f" champion beyond {spec.champion_tolerance:.0%}. A version that fails stays challenger,"
            " and the rejection is written to the audit log."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                gate_names.BEATS_BASELINE,
                asset=NAME,
                blocking=True,
                description=f"Beats the per-route historical mean on {', '.join(spec.gate_metrics)}.",
            ),
            dg.AssetCheckSpec(
                gate_names.NOT_WORSE_THAN_CHAMPION,
                asset=NAME,
                blocking=True,
                description=(
                    f"No gate metric worse than the champion's by more than {spec.champion_tolerance:.0%}."
                ),
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        mlflow_registry: MlflowResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from ml_platform.lib.evaluation.evaluate import evaluate
        from ml_platform.lib.evaluation.metrics import EvaluationError
        from ml_platform.lib.registry.promotion import Decision
        from ml_platform.lib.training.tracking import load_model

        partition = context.partition_key
        where = f"{NAME}[{partition}]"
        model_record = recorded_model(context.instance, partition)
        model_meta = model_record.asset_materialization.metadata  # type: ignore[union-attr]
        version = str(model_meta[keys.MLFLOW_MODEL_VERSION].value)
        run_id = str(model_meta[keys.MLFLOW_RUN_ID].value)
        store = versioned_store.store()
        # the baseline sees exactly the window the model trained on, as its lineage recorded it
        window_pins = [PartitionVersion.from_metadata(p) for p in model_meta[keys.LINEAGE_UPSTREAM].value]  # type: ignore[union-attr]
        window = read_pinned(store, window_pins)
        days = upstream_keys(parts.holdout_window, parts.weekly, partition, parts.daily)
        holdout_pins = RecordedVersions(
            context.instance, dg.AssetKey(FEATURES), days, table=FEATURES
        ).require(days)
        holdout = read_pinned(store, holdout_pins).drop(PARTITION_COLUMN)
        registry = mlflow_registry.registry()
        champion_version = registry.champion()
        if champion_version == version:
            champion_version = None  # re-evaluating the champion itself: no other champion to compare
        uri = mlflow_registry.tracking_uri
        try:
            report = evaluate(
                holdout,
                window,
                load_model(uri, mlflow_registry.model_name, version),
                champion=load_model(uri, mlflow_registry.model_name, champion_version)
                if champion_version
                else None,
                champion_version=champion_version,
                tolerance=spec.champion_tolerance,
                gate_metrics=spec.gate_metrics,
            )
        except EvaluationError as exc:
            raise dg.Failure(f"{where} (model v{version}): {exc}", metadata={"partition": partition}) from exc
        history = _history(context.instance, partition, report.model.metrics)
        plots = _plots(report, history)
        evidence: dict[str, Any] = {
            "partition": partition,
            "model_version": version,
            "mlflow_run_id": run_id,
            "training_dagster_run_id": model_record.run_id,
            "evaluation_dagster_run_id": context.run_id,
            "holdout": f"{days[0]}..{days[-1]}",
            "holdout_rows": report.rows,
            "metrics": {
                "model": report.model.metrics,
                "baseline": report.baseline.metrics,
                **({"champion": report.champion.metrics} if report.champion else {}),
            },
            "champion_version": champion_version,
            "gates": [g.to_dict() for g in report.gates],
        }
        _log_to_mlflow(mlflow_registry, run_id, report, plots)
        registry.record_evaluation(version, evidence)
        if not report.passed:
            failed = [g for g in report.gates if not g.passed]
            event = registry.apply(
                version,
                Decision("reject", "; ".join(f"{g.name}: {g.detail}" for g in failed)),
                actor="policy:gates",
                evidence=evidence,
            )
            context.log.warning(
                f"{where}: v{version} failed {', '.join(g.name for g in failed)}; it stays challenger"
                f" (audit event {event.event_id})"
            )
        metadata: dict[str, Any] = {
            keys.MLFLOW_MODEL_VERSION: version,
            keys.MLFLOW_RUN_ID: run_id,
            keys.EVALUATION_HOLDOUT: f"{days[0]}..{days[-1]} ({report.rows} labelled rows)",
            keys.EVALUATION_CHAMPION_VERSION: champion_version or "none",
            keys.EVALUATION_PASSED: report.passed,
            keys.EVALUATION_GATES: dg.MetadataValue.json([g.to_dict() for g in report.gates]),
            keys.LINEAGE_UPSTREAM: dg.MetadataValue.json(
                [
                    {
                        "asset": MODEL,
                        "partition": partition,
                        "run_id": model_record.run_id,
                        "model_version": version,
                    }
                ]
                + [p.to_metadata() for p in holdout_pins]
            ),
            keys.LINEAGE_CODE_VERSION: context.assets_def.code_versions_by_key[context.asset_key] or "",
            keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
            "evaluation/metrics": dg.MetadataValue.md(_metrics_table(report)),
            **{metric_key("model", m): float(v) for m, v in report.model.metrics.items()},
            **{metric_key("baseline", m): float(v) for m, v in report.baseline.metrics.items()},
            **(
                {metric_key("champion", m): float(v) for m, v in report.champion.metrics.items()}
                if report.champion
                else {}
            ),
            **{f"evaluation/plot_{name}": dg.MetadataValue.md(md) for name, (md, _) in plots.items()},
        }
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name=g.name,
                    passed=g.passed,
                    description=g.detail,
                    metadata={"model_version": version, "comparisons": dg.MetadataValue.json(g.comparisons)},
                )
                for g in report.gates
            ],
        )

    return [_asset]


def _history(
    instance: dg.DagsterInstance, partition: str, current: dict[str, float]
) -> list[tuple[str, dict[str, float]]]:
    """The model's holdout metrics of every evaluated week up to this one (the metric over time)."""
    weeks = instance.get_materialized_partitions(dg.AssetKey(NAME))
    earlier = sorted(p for p in weeks if p < partition)
    out = []
    for week, record in sorted(latest_materializations(instance, dg.AssetKey(NAME), earlier).items()):
        meta = record.asset_materialization.metadata  # type: ignore[union-attr]
        values = {
            m: float(meta[metric_key("model", m)].value)
            for m in HISTORY_METRICS
            if metric_key("model", m) in meta
        }  # type: ignore[arg-type]
        out.append((week, values))
    return [*out, (partition, current)]


def _plots(report: Any, history: Sequence[tuple[str, dict[str, float]]]) -> dict[str, tuple[str, bytes]]:
    from ml_platform.lib.evaluation.plots import (
        calibration_plot,
        metric_history_plot,
        png_markdown,
        residual_plot,
    )

    series = {"model": report.model.probability, "baseline (route mean)": report.baseline.probability}
    if report.champion:
        series[report.champion.name] = report.champion.probability
    pngs = {
        "residuals": residual_plot(
            report.actual_delay, report.model.delay, title="arr_delay residuals (holdout)"
        ),
        "calibration": calibration_plot(
            report.actual_delayed, series, title="is_delayed calibration (holdout)"
        ),
        "metrics_over_time": metric_history_plot(
            history, ("rmse", "mae", "brier", "roc_auc"), title="Holdout metrics by week"
        ),
    }
    return {name: (png_markdown(png, name), png) for name, png in pngs.items()}


def _metrics_table(report: Any) -> str:
    who = [("model", report.model), ("baseline", report.baseline)]
    if report.champion:
        who.append((report.champion.name, report.champion))
    head = "| metric | " + " | ".join(name for name, _ in who) + " |"
    rows = [head, "|---" * (len(who) + 1) + "|"]
    for metric in HISTORY_METRICS:
        rows.append(f"| {metric} | " + " | ".join(f"{s.metrics[metric]:.4f}" for _, s in who) + " |")
    return "\n".join(rows)


def _log_to_mlflow(
    resource: MlflowResource, run_id: str, report: Any, plots: dict[str, tuple[str, bytes]]
) -> None:
    """Holdout metrics and plots onto the model's training run, so MLflow shows them beside it."""
    import tempfile
    from pathlib import Path

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resource.tracking_uri)
    metrics = [("holdout", report.model), ("baseline", report.baseline)]
    if report.champion:
        metrics.append(("champion", report.champion))
    for prefix, scored in metrics:
        for metric, value in scored.metrics.items():
            client.log_metric(run_id, f"{prefix}_{metric}", float(value))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (_, png) in plots.items():
            path = Path(tmp) / f"{name}.png"
            path.write_bytes(png)
            client.log_artifact(run_id, str(path), artifact_path="evaluation")
