"""What the asset factories of every domain share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg

from ml_platform.defs.publish import BuildInfo
from ml_platform.partitions import Partitioning


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
class AssetBuild:
    """Inputs of the asset factories, resolved from settings when Definitions are built."""

    partitioning: Partitioning
    build: BuildInfo
    max_quarantine_share: float
    backfill_policy: dg.BackfillPolicy
    model: ModelSpec
