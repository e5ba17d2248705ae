"""MLflow (tracking and registry) and the Optuna study storage as Dagster resources.

dagster-mlflow's ``mlflow_tracking`` is a legacy function-style resource that opens one global
run per Dagster run; a weekly model needs one parent run per partition with nested trial runs,
so this resource hands out the plain-Python tracking and registry objects instead.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field


class MlflowResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The MLflow tracking server (or sqlite file) and the registered model."""

    tracking_uri: str = Field(description="MLflow tracking and registry URI.")
    experiment: str = Field("ml_platform", description="Experiment of the training runs.")
    artifact_root: str | None = Field(None, description="Artifact location of a newly created experiment.")
    ui_url: str = Field("http://127.0.0.1:5000", description="MLflow UI base URL for links.")
    model_name: str = Field("delay_model", description="Registered model name.")
    audit_table: str = Field(description="Delta table of the model alias audit log.")

    def tracking(self):  # type: ignore[no-untyped-def]  # lazy import keeps mlflow out of Definitions
        """The experiment's tracking client."""
        from ml_platform.lib.training.tracking import MlflowTracking

        return MlflowTracking(self.tracking_uri, self.experiment, self.artifact_root)

    def registry(self):  # type: ignore[no-untyped-def]
        """The registered model with its aliases and audit log."""
        import mlflow

        from ml_platform.lib.registry.audit import AuditLog
        from ml_platform.lib.registry.promotion import ModelRegistry

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return ModelRegistry(client, self.model_name, AuditLog(Path(self.audit_table)))

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to a run in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, version: str) -> str:
        """Link to a registered model version in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"


class OptunaResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where Optuna studies live: sqlite on the embedded default, Postgres in production."""

    storage: str = Field(description="SQLAlchemy URL of the study storage.")
