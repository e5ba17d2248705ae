"""What the asset factories of every domain share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg

from ml_platform.defs.publish import BuildInfo
from ml_platform.partitions import Partitioning

if TYPE_CHECKING:
    from ml_platform.lib.monitoring.drift import DriftPolicy


@dataclass(frozen=True)
class ModelSpec:
    """How models are trained, judged and promoted (from settings)."""

    window_weeks: int
    validation_days: int
    hpo_trials: int
    #: Keyword arguments of ``ml_platform.lib.training.loop.TrainConfig`` (kept as plain data so
    #: building Definitions does not import torch).
    train_config: dict[str, Any]
    gpus: int
    promotion_policy: Literal["automatic", "manual"]
    champion_tolerance: float
    gate_metrics: tuple[str, ...]
    refit_full_window: bool


@dataclass(frozen=True)
class MonitoringSpec:
    """How drift is judged and when the retrain sensor acts (from settings)."""

    drift_features: tuple[str, ...]
    #: Settings' threshold overrides: feature (or "*") -> measure -> (warn, error) or None.
    drift_overrides: Mapping[str, Mapping[str, tuple[float, float] | None]]
    champion_max_age_days: int
    degradation_threshold: float
    live_window_days: int
    cooldown_hours: float
    max_retrains_per_day: int
    sensor_interval_seconds: int
    sensors_running: bool

    def policy(self) -> DriftPolicy:
        """The drift policy: calibrated defaults, then the settings' overrides on top."""
        from ml_platform.lib.monitoring.drift import (
            DEFAULT_THRESHOLDS,
            DriftPolicy,
            Threshold,
            default_overrides,
        )

        defaults = dict(DEFAULT_THRESHOLDS)
        overrides: dict[str, dict[Any, Threshold | None]] = {
            k: dict(v) for k, v in default_overrides().items()
        }
        for feature, measures in self.drift_overrides.items():
            for measure, pair in measures.items():
                threshold = None if pair is None else Threshold(*pair)
                if feature == "*":
                    if threshold is None:
                        raise ValueError(f'MLP_DRIFT_THRESHOLDS: "*" needs [warn, error] for {measure}')
                    defaults[measure] = threshold  # type: ignore[index]
                else:
                    overrides.setdefault(feature, {})[measure] = threshold
        return DriftPolicy(self.drift_features, defaults, overrides)


@dataclass(frozen=True)
class AssetBuild:
    """Inputs of the asset factories, resolved from settings when Definitions are built."""

    partitioning: Partitioning
    build: BuildInfo
    max_quarantine_share: float
    backfill_policy: dg.BackfillPolicy
    model: ModelSpec
    monitoring: MonitoringSpec
    #: Declarative automation of the daily assets (new raw partitions flow downstream by themselves).
    automation: dg.AutomationCondition | None = None  # type: ignore[type-arg]
