"""``delay_model``: one torch model per week, trained on a version-pinned window of feature days."""

from datetime import timedelta
from typing import Any

import dagster as dg

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import resource_tags
from ml_platform.defs.publish import RecordedVersions, read_pinned
from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import PARTITION_COLUMN
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.partitions import upstream_keys
from ml_platform.resources import MlflowResource, OptunaResource, VersionedStoreResource

NAME = "delay_model"
FEATURES = "flight_features"
#: The lib modules whose source is the model's code version (not imported here: torch is heavy).
TRAINING_MODULES = (
    "ml_platform.lib.training.data",
    "ml_platform.lib.training.model",
    "ml_platform.lib.training.loop",
    "ml_platform.lib.training.hpo",
    "ml_platform.lib.training.pipeline",
    "ml_platform.lib.training.pyfunc",
    "ml_platform.lib.training.tracking",
    "ml_platform.lib.features.transforms",
)


def build_model_assets(build: AssetBuild) -> list[dg.AssetsDefinition]:
    """The training asset."""
    parts = build.partitioning
    spec = build.model

    @dg.asset(
        name=NAME,
        group_name="training",
        kinds={"torch", "optuna", "mlflow"},
        deps=[dg.AssetDep(FEATURES, partition_mapping=parts.training_window)],
        partitions_def=parts.weekly,
        code_version=code_version_of_names(*TRAINING_MODULES),
        op_tags=resource_tags(spec.gpus),
        # the UI's view of the freshness policy (wall clock since the last training); the retrain
        # sensor applies the same limit in data time (ml_platform.defs.monitoring.sensors)
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(days=build.monitoring.champion_max_age_days)
        ),
        description=(
            f"The delay model of one week (Monday to Sunday), trained on the flight_features days of"
            f" the {spec.window_weeks} weeks before it, read at the versions their materializations"
            f" recorded. An Optuna study ({spec.hpo_trials} trials, TPE + median pruning) picks the"
            f" hyperparameters, the final training is tracked in MLflow with every feature partition"
            f" as a dataset input, and the model is registered as a new version with alias"
            f" 'challenger'. Torch network with embeddings for carrier, origin, dest and hour, and two"
            f" heads: arr_delay (minutes) and is_delayed (probability)."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        versioned_store: VersionedStoreResource,
        mlflow_registry: MlflowResource,
        optuna_storage: OptunaResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from ml_platform.lib.training.data import TrainingDataError
        from ml_platform.lib.training.loop import TrainConfig, TrainingError
        from ml_platform.lib.training.pipeline import TrainingRequest, train_partition
        from ml_platform.lib.training.tracking import (
            TAG_ASSET,
            TAG_CODE_VERSION,
            TAG_DAGSTER_RUN,
            TAG_GIT_COMMIT,
            TAG_PARTITION,
            DatasetRef,
        )

        partition = context.partition_key
        where = f"{NAME}[{partition}]"
        days = upstream_keys(parts.training_window, parts.weekly, partition, parts.daily)
        if len(days) != 7 * spec.window_weeks:
            raise dg.Failure(
                f"{where}: the training window has {len(days)} days, expected {7 * spec.window_weeks};"
                " the daily partitions do not cover it"
            )
        store = versioned_store.store()
        pins = RecordedVersions(context.instance, dg.AssetKey(FEATURES), days, table=FEATURES).require(days)
        frame = read_pinned(store, pins).drop(PARTITION_COLUMN)
        table_uri = store.table_uri(FEATURES)
        datasets = [
            DatasetRef(
                FEATURES,
                p.partition,
                table_uri,
                p.table_version,
                p.content_hash,
                p.row_count,
                "training",
                commit=p.commit,
            )
            for p in pins
        ]
        code_version = context.assets_def.code_versions_by_key[context.asset_key] or ""
        tracking = mlflow_registry.tracking()
        request = TrainingRequest(
            model_name=mlflow_registry.model_name,
            partition=partition,
            features=frame,
            datasets=datasets,
            config=TrainConfig(**spec.train_config),
            validation_days=spec.validation_days,
            hpo_trials=spec.hpo_trials,
            optuna_storage=optuna_storage.storage,
            # one study per materialization of the partition: a rerun never extends an old study
            study_name=f"{NAME}[{partition}]@{context.run_id}",
            refit_full_window=spec.refit_full_window,
            tags={
                TAG_DAGSTER_RUN: context.run_id,
                TAG_ASSET: NAME,
                TAG_PARTITION: partition,
                TAG_GIT_COMMIT: build.build.git_commit,
                TAG_CODE_VERSION: code_version,
            },
        )
        try:
            outcome = train_partition(request, tracking, context.log.info)
        except (TrainingDataError, TrainingError, ValueError) as exc:
            raise dg.Failure(f"{where}: {exc}", metadata={"partition": partition}) from exc
        version = outcome.logged.version
        event = mlflow_registry.registry().mark_challenger(
            version,
            actor="policy:registration",
            evidence={
                "mlflow_run_id": outcome.logged.run_id,
                "dagster_run_id": context.run_id,
                "partition": partition,
                "weights_digest": outcome.weights_digest,
            },
        )
        experiment_id = tracking.experiment_id()
        result = outcome.result
        study = outcome.study
        return dg.MaterializeResult(
            data_version=dg.DataVersion(outcome.weights_digest[:32]),
            metadata={
                keys.MLFLOW_EXPERIMENT_ID: experiment_id,
                keys.MLFLOW_RUN_ID: outcome.logged.run_id,
                keys.MLFLOW_RUN_URL: dg.MetadataValue.url(
                    mlflow_registry.run_url(experiment_id, outcome.logged.run_id)
                ),
                keys.MLFLOW_MODEL_NAME: outcome.logged.registered_name,
                keys.MLFLOW_MODEL_VERSION: version,
                keys.MLFLOW_MODEL_URI: f"models:/{outcome.logged.registered_name}/{version}",
                keys.MLFLOW_MODEL_URL: dg.MetadataValue.url(mlflow_registry.model_version_url(version)),
                keys.TRAINING_WINDOW: f"{days[0]}..{days[-1]} ({len(days)} feature partitions)",
                keys.TRAINING_ROWS: outcome.train_rows,
                keys.TRAINING_VALIDATION_ROWS: outcome.validation_rows,
                keys.TRAINING_CONFIG: dg.MetadataValue.json(
                    {
                        **outcome.config.__dict__,
                        "best_epoch": outcome.selection.best_epoch,
                        "epochs": len(outcome.selection.history),
                        "refit_full_window": request.refit_full_window,
                    }
                ),
                keys.TRAINING_WEIGHTS_DIGEST: outcome.weights_digest,
                keys.TRAINING_SAMPLES_PER_SECOND: float(result.samples_per_second),
                keys.TRAINING_DEVICE: f"{result.device} x{result.world_size}"
                + (f" ({result.mixed_precision} autocast)" if result.mixed_precision else ""),
                "training/best_val_loss": float(outcome.selection.best_val_loss),
                keys.HPO_STUDY: request.study_name,
                keys.HPO_TRIALS: dg.MetadataValue.md(_trials_table(study)) if study else "no search",
                keys.LINEAGE_UPSTREAM: dg.MetadataValue.json([p.to_metadata() for p in pins]),
                keys.LINEAGE_CODE_VERSION: code_version,
                keys.LINEAGE_GIT_COMMIT: build.build.git_commit,
                keys.REGISTRY_EVENT: event.event_id,
            },
        )

    return [_asset]


def _trials_table(study: Any) -> str:
    rows = ["| trial | state | validation loss | epochs | params |", "|---|---|---|---|---|"]
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None and t.state == "COMPLETE" else "-"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
        )
        rows.append(f"| {t.number} | {t.state} | {value} | {t.epochs} | {params} |")
    return "\n".join(rows)
