"""MLflow tracking of trainings: parent run, nested HPO trials, dataset inputs, the registered model.

The tracking URI is passed in (settings resolve it), never read from the environment here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow.entities import Dataset, DatasetInput, InputTag

from ml_platform.lib.training.data import INPUT_COLUMNS, Preprocessor
from ml_platform.lib.training.loop import EpochStats, TrainConfig, TrainResult

#: Tags every training run carries, so a run leads back to the Dagster materialization.
TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSET = "dagster.asset_key"
TAG_PARTITION = "dagster.partition"
TAG_GIT_COMMIT = "git.commit"
TAG_CODE_VERSION = "dagster.code_version"


@dataclass(frozen=True)
class DatasetRef:
    """One feature partition a run read, as recorded in lineage."""

    table: str
    partition: str
    table_uri: str
    #: The Delta table version (Delta backend) or None (lakeFS: ``commit`` pins it).
    table_version: int | None
    content_hash: str
    rows: int
    #: "training" (the window) or "holdout" (the evaluation week).
    context: str
    #: The lakeFS commit holding the partition (lakeFS backend).
    commit: str = ""

    def to_input(self) -> DatasetInput:
        """The MLflow dataset input: the partition, its Delta version or lakeFS commit, its data version."""
        source: dict[str, object] = {"uri": self.table_uri, "partition": self.partition}
        version_tag = [InputTag("delta_table_version", str(self.table_version))]
        if self.commit:
            source["lakefs_commit"] = self.commit
            version_tag = [InputTag("lakefs_commit", self.commit)]
        else:
            source["delta_table_version"] = self.table_version
        return DatasetInput(
            dataset=Dataset(
                name=f"{self.table}[{self.partition}]",
                digest=self.content_hash[:36],
                source_type="lakefs" if self.commit else "delta",
                source=json.dumps(source, sort_keys=True),
                profile=json.dumps({"num_rows": self.rows}),
            ),
            tags=[
                InputTag("mlflow.data.context", self.context),
                InputTag("data_version", self.content_hash),
                *version_tag,
            ],
        )


@dataclass(frozen=True)
class LoggedModel:
    """A model logged to a run and registered."""

    run_id: str
    model_uri: str
    registered_name: str
    version: str


class MlflowTracking:
    """One experiment in one MLflow tracking server (or sqlite file)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id; created (with its artifact location) on first use."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(self.experiment, artifact_location=self.artifact_root))

    @contextmanager
    def run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[str]:
        """An active MLflow run (fluent API, so nested trial runs and ``log_model`` attach to it)."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name, tags=dict(tags)) as run:
            yield str(run.info.run_id)

    def log_datasets(self, run_id: str, refs: Sequence[DatasetRef]) -> None:
        """Record every partition read as a dataset input of ``run_id``."""
        self.client.log_inputs(run_id, datasets=[ref.to_input() for ref in refs])

    def log_history(self, history: Sequence[EpochStats], prefix: str = "") -> None:
        """Per-epoch losses of the active run."""
        for stats in history:
            mlflow.log_metrics(
                {
                    f"{prefix}train_loss": stats.train_loss,
                    f"{prefix}val_loss": stats.val_loss,
                    f"{prefix}val_delay_loss": stats.val_delay_loss,
                    f"{prefix}val_class_loss": stats.val_class_loss,
                },
                step=stats.epoch,
            )

    def log_model(
        self,
        *,
        result: TrainResult,
        preprocessor: Preprocessor,
        config: TrainConfig,
        example: pl.DataFrame,
        registered_name: str,
    ) -> LoggedModel:
        """Log the pyfunc model to the active run with signature and input example, and register it."""
        import numpy
        import pandas
        import torch
        from mlflow.models import infer_signature

        from ml_platform.lib.training.pyfunc import DelayModel, save_artifacts

        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("log_model needs an active MLflow run (use MlflowTracking.run)")
        inputs = example.select(INPUT_COLUMNS)
        with tempfile.TemporaryDirectory(prefix="mlp-model-") as tmp:
            artifacts = save_artifacts(Path(tmp), result.state_dict, preprocessor, config.model_kwargs())
            model = DelayModel()
            model.load(Path(artifacts["weights"]), Path(artifacts["spec"]))
            example_pd = inputs.to_pandas()
            signature = infer_signature(example_pd, model.predict(None, example_pd))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                artifacts=artifacts,
                signature=signature,
                input_example=example_pd,
                registered_model_name=registered_name,
                # explicit requirements: inferring them would re-import the model in a subprocess
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"polars=={pl.__version__}",
                    f"pandas=={pandas.__version__}",
                    f"numpy=={numpy.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
            )
        if info.registered_model_version is None:
            raise RuntimeError(f"MLflow did not register {registered_name} for run {active.info.run_id}")
        return LoggedModel(
            run_id=str(active.info.run_id),
            model_uri=str(info.model_uri),
            registered_name=registered_name,
            version=str(info.registered_model_version),
        )

    def trial_observer(self) -> MlflowTrialObserver:
        """Nested runs for the HPO trials of the active run."""
        return MlflowTrialObserver(self)


class MlflowTrialObserver:
    """One nested MLflow run per Optuna trial, with its parameters and per-epoch losses."""

    def __init__(self, tracking: MlflowTracking) -> None:
        self.tracking = tracking

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        """Open the trial's nested run."""
        # explicit experiment: without one, a nested run goes to the *default* experiment, not its parent's
        mlflow.start_run(
            experiment_id=self.tracking.experiment_id(),
            run_name=f"trial-{number:03d}",
            nested=True,
            tags={"optuna.trial": str(number)},
        )
        mlflow.log_params(params)

    def trial_epoch(self, number: int, stats: EpochStats) -> None:
        """Log one epoch."""
        self.tracking.log_history([stats])

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        """Close the nested run: FINISHED, KILLED (pruned) or FAILED."""
        mlflow.set_tag("optuna.state", state)
        if value is not None:
            mlflow.log_metric("best_val_loss", value)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        mlflow.end_run(status=status)


def config_params(config: TrainConfig) -> dict[str, Any]:
    """A training config as MLflow parameters."""
    return asdict(config)


def load_model(tracking_uri: str, model_name: str, version: str) -> Any:
    """Load registered ``model_name`` version ``version`` as the python ``DelayModel`` it wraps."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    return model.unwrap_python_model()


@dataclass(frozen=True)
class ModelLineage:
    """A registered version traced back through its MLflow run to the feature partitions it read."""

    model_name: str
    version: str
    aliases: list[str]
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    #: ``(dataset name, context, Delta table version, data version)`` per dataset input of the run.
    datasets: list[tuple[str, str, str, str]]


def model_lineage(client: mlflow.MlflowClient, model_name: str, version: str) -> ModelLineage:
    """Read a version's lineage from the registry and its run's dataset inputs."""
    mv = client.get_model_version(model_name, version)
    if not mv.run_id:
        raise ValueError(f"{model_name} v{version} has no MLflow run: it was not registered by a training")
    run = client.get_run(mv.run_id)
    datasets = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        source = json.loads(item.dataset.source) if item.dataset.source_type in ("delta", "lakefs") else {}
        pinned = source.get("delta_table_version", tags.get("delta_table_version"))
        if item.dataset.source_type == "lakefs":
            pinned = "lakefs:" + str(source.get("lakefs_commit", tags.get("lakefs_commit", "")))[:12]
        datasets.append(
            (
                item.dataset.name,
                tags.get("mlflow.data.context", ""),
                "" if pinned is None else str(pinned),
                tags.get("data_version", item.dataset.digest),
            )
        )
    return ModelLineage(
        model_name=model_name,
        version=str(version),
        aliases=list(mv.aliases or []),
        run_id=mv.run_id,
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        metrics=dict(run.data.metrics),
        datasets=sorted(datasets),
    )
