"""Assembles the Definitions; nothing else.

Settings are read when Dagster (or a test, or the CLI) calls :func:`defs`, never at import time.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

from ml_platform.defs.common import AssetBuild, ModelSpec, MonitoringSpec
from ml_platform.defs.evaluation.assets import build_evaluation_assets
from ml_platform.defs.features.assets import build_feature_assets
from ml_platform.defs.ingest.assets import build_raw_assets
from ml_platform.defs.monitoring.assets import (
    DRIFT,
    PREDICTION_LOG_PROFILES,
    PROFILED,
    build_monitoring_assets,
)
from ml_platform.defs.monitoring.performance import NAME as LIVE_PERFORMANCE
from ml_platform.defs.monitoring.performance import build_performance_assets
from ml_platform.defs.monitoring.sensors import Clock, build_retrain_sensor, utc_now
from ml_platform.defs.openlineage import build_openlineage_sensor
from ml_platform.defs.predictions.assets import NAME as PREDICTIONS
from ml_platform.defs.predictions.assets import build_prediction_assets
from ml_platform.defs.publish import BuildInfo
from ml_platform.defs.registry.assets import build_registry_assets
from ml_platform.defs.serving.bento import NAME as DELAY_BENTO
from ml_platform.defs.serving.bento import build_bento_assets
from ml_platform.defs.serving.deployment import build_deployment_assets
from ml_platform.defs.serving.online import NAME as ONLINE_FEATURES
from ml_platform.defs.serving.online import build_online_assets
from ml_platform.defs.serving.prediction_log import NAME as PREDICTION_LOG
from ml_platform.defs.serving.prediction_log import build_prediction_log_assets
from ml_platform.defs.training.assets import build_model_assets
from ml_platform.defs.validation.assets import build_validated_assets
from ml_platform.lib.versioning import git_commit
from ml_platform.partitions import build_partitioning
from ml_platform.resources import (
    DeploymentResource,
    MlflowResource,
    MonitoringResource,
    OnlineStoreResource,
    OptunaResource,
    RawSourceResource,
    VersionedStoreResource,
)
from ml_platform.settings import PlatformSettings

DATA_JOB = "daily_data_job"
DATA_GROUPS = ("ingest", "validation", "features")
MODEL_JOB = "weekly_model_job"
MODEL_GROUPS = ("training", "evaluation", "registry")
MONITORING_JOB = "daily_monitoring_job"
#: Run retries are for runs whose worker died. A failed step (a rejected gate, a quarantine above
#: the threshold) is a decision: retrying would only repeat it (and register another model version).
NO_RETRY_ON_FAILURE = {"dagster/retry_on_asset_or_op_failure": "false"}
AUTOMATION_SENSOR = "data_automation_sensor"


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


def monitoring_spec(settings: PlatformSettings) -> MonitoringSpec:
    """How drift is judged and when the retrain sensor acts, from settings."""
    from ml_platform.lib.monitoring.profiles import ROUTE
    from ml_platform.lib.training.data import INPUT_COLUMNS

    features = settings.drift_features or [c for c in INPUT_COLUMNS if c != "day_of_week"] + [ROUTE]
    return MonitoringSpec(
        drift_features=tuple(features),
        drift_overrides={
            feature: {m: None if pair is None else (pair[0], pair[1]) for m, pair in measures.items()}
            for feature, measures in settings.drift_thresholds.items()
        },
        champion_max_age_days=settings.champion_max_age_days,
        degradation_threshold=settings.degradation_threshold,
        live_window_days=settings.live_window_days,
        cooldown_hours=settings.retrain_cooldown_hours,
        max_retrains_per_day=settings.max_retrains_per_day,
        sensor_interval_seconds=settings.sensor_interval_seconds,
        sensors_running=settings.sensors_running,
    )


def build_definitions(settings: PlatformSettings, clock: Clock = utc_now) -> dg.Definitions:
    """All assets, checks, jobs, sensors, resources and the executor for ``settings``.

    ``clock`` is the retrain sensor's clock (its cooldown and daily cap); ``mlp replay`` passes a
    simulated one.
    """
    # Window mappings over missing upstream partitions and backfill policies are beta in 1.13;
    # we rely on them deliberately (docs/architecture.md), so keep the warnings out of every log.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    partitioning = build_partitioning(settings)
    build = AssetBuild(
        partitioning=partitioning,
        build=BuildInfo(git_commit=settings.git_commit or git_commit()),
        max_quarantine_share=settings.max_quarantine_share,
        # One partition per UI-launched run: each run covers one layer's day or the whole graph's
        # day. Range runs (one layer over many days) are launched by `mlp demo` (ml_platform.demo).
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        model=model_spec(settings),
        monitoring=monitoring_spec(settings),
        automation=dg.AutomationCondition.eager(),
    )
    assets = [
        *build_raw_assets(build),
        *build_validated_assets(build),
        *build_feature_assets(build),
        *build_model_assets(build),
        *build_evaluation_assets(build),
        *build_registry_assets(build),
        *build_monitoring_assets(build),
        *build_prediction_assets(build),
        *build_performance_assets(build),
        *build_online_assets(build),
        *build_prediction_log_assets(build, settings.prediction_log_dir),
        *build_bento_assets(build, settings.bentoml_home, settings.root_dir / "constraints.txt"),
    ]
    deployment_assets, deploy_job, deploy_sensor = build_deployment_assets(
        settings.sensors_running, build.build.git_commit
    )
    assets += deployment_assets
    data_job = dg.define_asset_job(
        DATA_JOB,
        # online_features rides with the day's features: the snapshot of day D is refreshed when D lands
        selection=dg.AssetSelection.groups(*DATA_GROUPS)
        | dg.AssetSelection.assets(*(p for p in PROFILED if p != PREDICTION_LOG_PROFILES), ONLINE_FEATURES),
        tags=NO_RETRY_ON_FAILURE,
        partitions_def=partitioning.daily,
        description="raw -> validated -> flight_features (and their profiles, and the online feature"
        " store's snapshot) for one day (the main job of `make demo`).",
    )
    model_job = dg.define_asset_job(
        MODEL_JOB,
        # the week's Bento is built after the gates and the promotion decision
        selection=dg.AssetSelection.groups(*MODEL_GROUPS) | dg.AssetSelection.assets(DELAY_BENTO),
        partitions_def=partitioning.weekly,
        description="delay_model -> model_evaluation -> model_promotion -> delay_bento for one week.",
        # a run tag (every run of the job carries it, whoever launched it), so the production
        # instance's run-level limit of one GPU run at a time applies (deploy/dagster)
        tags={"ml_platform/accelerator": "gpu" if settings.training_gpus else "cpu", **NO_RETRY_ON_FAILURE},
    )
    monitoring_job = dg.define_asset_job(
        MONITORING_JOB,
        selection=dg.AssetSelection.assets(
            DRIFT, PREDICTIONS, PREDICTION_LOG, PREDICTION_LOG_PROFILES, LIVE_PERFORMANCE
        ),
        tags=NO_RETRY_ON_FAILURE,
        partitions_def=partitioning.daily,
        description="For one day: drift_report (the day's features against the champion's training"
        " window), the champion's batch predictions, the served model's prediction log and its"
        " profile, and live performance (batch and online predictions) on the day's actuals.",
    )
    automation = dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.groups(*DATA_GROUPS, "monitoring", "predictions")
        | dg.AssetSelection.assets(ONLINE_FEATURES, PREDICTION_LOG),
        default_status=dg.DefaultSensorStatus.RUNNING
        if settings.sensors_running
        else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Declarative automation of the daily graph: a new raw partition flows through"
        " validation, features, profiles and the drift report by itself (AutomationCondition.eager).",
    )
    return dg.Definitions(
        assets=assets,
        jobs=[data_job, model_job, monitoring_job, deploy_job],
        sensors=[
            automation,
            build_retrain_sensor(build, MODEL_JOB, clock),
            deploy_sensor,
            *_storage_sensors(settings),
            build_openlineage_sensor(settings),
        ],
        resources={
            "versioned_store": _versioned_store(settings),
            "source": RawSourceResource(
                kind=settings.source,
                drop_folder=str(settings.drop_folder) if settings.drop_folder else None,
                inject_shifts=settings.inject_shifts,
            ),
            "mlflow_registry": MlflowResource(
                tracking_uri=_env_var_if_set("MLP_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri or ""),
                experiment=settings.mlflow_experiment,
                artifact_root=settings.mlflow_artifact_root,
                ui_url=settings.mlflow_ui_url,
                model_name=settings.registered_model,
                audit_table=str(settings.audit_table),
            ),
            "optuna_storage": OptunaResource(
                storage=_env_var_if_set("MLP_OPTUNA_STORAGE", settings.optuna_storage or "")
            ),
            "online_store": OnlineStoreResource(
                url=_env_var_if_set("MLP_ONLINE_STORE_URL", settings.online_store_url or "") or None,
                embedded_path=str(settings.online_store_path),
            ),
            "deployment": _deployment(settings),
            "monitoring": MonitoringResource(
                metrics_dir=str(settings.metrics_dir),
                events_table=str(settings.monitoring_events_table),
                notify=_notify_targets(settings),
            ),
        },
        executor=_executor(settings),
    )


def _versioned_store(settings: PlatformSettings) -> VersionedStoreResource:
    """Delta under the storage root, or lakeFS with its credentials as EnvVars (not in snapshots)."""
    if settings.storage_backend == "delta":
        return VersionedStoreResource(delta_root=str(settings.delta_root))
    return VersionedStoreResource(
        backend="lakefs",
        delta_root=str(settings.delta_root),
        lakefs_endpoint=settings.lakefs_endpoint,
        lakefs_repository=settings.lakefs_repository,
        lakefs_access_key_id=_env_var_if_set("MLP_LAKEFS_ACCESS_KEY_ID", settings.lakefs_access_key_id or ""),
        lakefs_secret_access_key=_env_var_if_set(
            "MLP_LAKEFS_SECRET_ACCESS_KEY", settings.lakefs_secret_access_key or ""
        ),
        lakefs_main_branch=settings.lakefs_main_branch,
    )


def _deployment(settings: PlatformSettings) -> DeploymentResource:
    """The local deployment: desired state and status under the storage root, policy from settings."""
    return DeploymentResource(
        state_dir=str(settings.deployment_dir),
        log_table=str(settings.deployment_log_table),
        bentoml_home=str(settings.bentoml_home),
        strategy=settings.deploy_strategy,
        canary_share=settings.deploy_canary_share,
        promote_after_s=settings.deploy_promote_after_s,
        max_error_rate=settings.deploy_canary_max_error_rate,
        max_p99_ms=settings.deploy_canary_max_p99_ms,
        min_requests=settings.deploy_canary_min_requests,
        wait_s=settings.deploy_wait_s,
    )


def _storage_sensors(settings: PlatformSettings) -> list[dg.SensorDefinition]:
    """lakeFS's publish / unpublished sensors (write-audit-publish); none for Delta."""
    if settings.storage_backend != "lakefs":
        return []
    from ml_platform.defs.lakefs import build_lakefs_sensors

    return build_lakefs_sensors()


def _env_var_if_set(name: str, value: str) -> str:
    """``dg.EnvVar(name)`` where ``value`` came from that variable, else ``value``.

    Resource config values are stored in every run's job snapshot (and shown in the UI); a URL
    with a password must go there as the name of its variable, resolved when the step runs.
    """
    return dg.EnvVar(name) if value and os.environ.get(name) == value else value


def _notify_targets(settings: PlatformSettings) -> str:
    """The alert targets as JSON; ``dg.EnvVar("MLP_NOTIFY")`` when they came from it (webhook tokens)."""
    import json

    raw = os.environ.get("MLP_NOTIFY")
    try:
        from_env = raw is not None and json.loads(raw) == settings.notify
    except ValueError:
        from_env = False
    return dg.EnvVar("MLP_NOTIFY") if from_env else json.dumps(settings.notify)


def _executor(settings: PlatformSettings) -> dg.ExecutorDefinition:
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "k8s":
        return k8s_executor(settings)
    return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent})


def k8s_executor(settings: PlatformSettings) -> dg.ExecutorDefinition:
    """dagster-k8s's ``k8s_job_executor``: one Kubernetes Job per step.

    Each step's pod resources, GPU toleration and node selector, and its ``ml-platform/asset`` and
    ``ml-platform/model`` labels come from the asset's ``dagster-k8s/config`` op tags
    (:mod:`ml_platform.defs.k8s`); the team label is set here for every step. Imported lazily:
    dagster_k8s pulls in the kubernetes client, which loading the Definitions must not pay for.
    """
    from dagster_k8s import k8s_job_executor

    from ml_platform.defs.k8s import TEAM_LABEL, label_value

    return k8s_job_executor.configured(
        {
            "job_namespace": settings.k8s_namespace,
            "job_image": settings.k8s_image,
            "service_account_name": settings.k8s_service_account,
            "env_secrets": list(settings.k8s_env_secrets),
            "labels": {TEAM_LABEL: label_value(settings.cost_team)},
            "max_concurrent": settings.max_concurrent,
        },
        name="k8s",
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for ``dagster dev`` and the webserver (see workspace.yaml)."""
    return build_definitions(PlatformSettings())
