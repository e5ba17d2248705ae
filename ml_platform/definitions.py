"""Assembles the Definitions; nothing else.

Settings are read when Dagster (or a test, or the CLI) calls :func:`defs`, never at import time.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ml_platform.defs.common import AssetBuild, ModelSpec
from ml_platform.defs.evaluation.assets import build_evaluation_assets
from ml_platform.defs.features.assets import build_feature_assets
from ml_platform.defs.ingest.assets import build_raw_assets
from ml_platform.defs.publish import BuildInfo
from ml_platform.defs.registry.assets import build_registry_assets
from ml_platform.defs.training.assets import build_model_assets
from ml_platform.defs.validation.assets import build_validated_assets
from ml_platform.lib.versioning import git_commit
from ml_platform.partitions import build_partitioning
from ml_platform.resources import MlflowResource, OptunaResource, RawSourceResource, VersionedStoreResource
from ml_platform.settings import PlatformSettings

DATA_JOB = "daily_data_job"
DATA_GROUPS = ("ingest", "validation", "features")
MODEL_JOB = "weekly_model_job"
MODEL_GROUPS = ("training", "evaluation", "registry")


def model_spec(settings: PlatformSettings) -> ModelSpec:
    """How models are trained and promoted, from settings (plain data: no torch import)."""
    return ModelSpec(
        window_weeks=settings.training_window_weeks,
        validation_days=settings.validation_days,
        hpo_trials=settings.hpo_trials,
        train_config={
            "max_epochs": settings.max_epochs,
            "patience": settings.patience,
            "batch_size": settings.batch_size,
            "seed": settings.seed,
            "separate_heads": settings.model_heads == "separate",
            "device": settings.training_device,
            "world_size": settings.training_processes,
        },
        gpus=settings.training_gpus,
        promotion_policy=settings.promotion_policy,
        champion_tolerance=settings.champion_tolerance,
        gate_metrics=tuple(settings.gate_metrics),
        refit_full_window=settings.refit_full_window,
    )


def build_definitions(settings: PlatformSettings) -> dg.Definitions:
    """All assets, checks, jobs, resources and the executor for ``settings``."""
    # Window mappings over missing upstream partitions and backfill policies are beta in 1.13;
    # we rely on them deliberately (docs/architecture.md), so keep the warnings out of every log.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    partitioning = build_partitioning(settings)
    build = AssetBuild(
        partitioning=partitioning,
        build=BuildInfo(git_commit=settings.git_commit or git_commit(settings.root_dir)),
        max_quarantine_share=settings.max_quarantine_share,
        # One partition per UI-launched run: each run covers one layer's day or the whole graph's
        # day. Range runs (one layer over many days) are launched by `mlp demo` (ml_platform.demo).
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        model=model_spec(settings),
    )
    assets = [
        *build_raw_assets(build),
        *build_validated_assets(build),
        *build_feature_assets(build),
        *build_model_assets(build),
        *build_evaluation_assets(build),
        *build_registry_assets(build),
    ]
    data_job = dg.define_asset_job(
        DATA_JOB,
        selection=dg.AssetSelection.groups(*DATA_GROUPS),
        partitions_def=partitioning.daily,
        description="raw -> validated -> flight_features for one day (the main job of `make demo`).",
    )
    model_job = dg.define_asset_job(
        MODEL_JOB,
        selection=dg.AssetSelection.groups(*MODEL_GROUPS),
        partitions_def=partitioning.weekly,
        description="delay_model -> model_evaluation -> model_promotion for one week.",
    )
    return dg.Definitions(
        assets=assets,
        jobs=[data_job, model_job],
        resources={
            "versioned_store": VersionedStoreResource(delta_root=str(settings.delta_root)),
            "source": RawSourceResource(
                kind=settings.source,
                drop_folder=str(settings.drop_folder) if settings.drop_folder else None,
            ),
            "mlflow_registry": MlflowResource(
                tracking_uri=settings.mlflow_tracking_uri or "",
                experiment=settings.mlflow_experiment,
                artifact_root=settings.mlflow_artifact_root,
                ui_url=settings.mlflow_ui_url,
                model_name=settings.registered_model,
                audit_table=str(settings.audit_table),
            ),
            "optuna_storage": OptunaResource(storage=settings.optuna_storage or ""),
        },
        executor=_executor(settings),
    )


def _executor(settings: PlatformSettings) -> dg.ExecutorDefinition:
    if settings.executor == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent})


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for ``dagster dev`` and the webserver (see workspace.yaml)."""
    return build_definitions(PlatformSettings())
