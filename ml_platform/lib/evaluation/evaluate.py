"""Out-of-time evaluation of one model version on its holdout week, against two baselines.

The candidate, the naive baseline (historical mean per route, fitted on the candidate's training
window) and the current champion are scored on the same labelled holdout rows, and the gates
(:mod:`ml_platform.lib.evaluation.gates`) judge the candidate from those numbers alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from ml_platform.lib.evaluation.gates import (
    DEFAULT_GATE_METRICS,
    GateResult,
    beats_baseline,
    not_worse_than_champion,
)
from ml_platform.lib.evaluation.metrics import EvaluationError, RouteMeanBaseline, score

Array = npt.NDArray[np.floating]


class Predictor(Protocol):
    """Anything that scores feature rows (the MLflow pyfunc ``DelayModel`` does)."""

    def predict_frame(self, frame: pl.DataFrame) -> tuple[Array, Array]: ...


@dataclass(frozen=True)
class Scored:
    """One predictor's holdout predictions and metrics."""

    name: str
    metrics: dict[str, float]
    delay: Array
    probability: Array


@dataclass(frozen=True)
class EvaluationReport:
    """Everything the evaluation measured, and the gates' verdicts."""

    rows: int
    actual_delay: Array
    actual_delayed: Array
    model: Scored
    baseline: Scored
    champion: Scored | None
    champion_version: str | None
    gates: list[GateResult]

    @property
    def passed(self) -> bool:
        """True when every gate passed."""
        return all(g.passed for g in self.gates)


def evaluate(
    holdout: pl.DataFrame,
    window: pl.DataFrame,
    candidate: Predictor,
    *,
    champion: Predictor | None,
    champion_version: str | None,
    tolerance: float,
    gate_metrics: Sequence[str] = DEFAULT_GATE_METRICS,
) -> EvaluationReport:
    """Score candidate, baseline and champion on the labelled rows of ``holdout``.

    Raises:
        EvaluationError: no labelled holdout rows, or a predictor produced unusable values (the
            message names the predictor); nothing is ever replaced by a placeholder.
    """
    rows = holdout.filter(pl.col("has_target"))
    if rows.height == 0:
        raise EvaluationError(f"the holdout has no labelled rows ({holdout.height} rows in all)")
    actual_delay = rows["arr_delay"].cast(pl.Float64).to_numpy()
    actual_delayed = rows["is_delayed"].cast(pl.Float64).to_numpy()

    def scored(name: str, delay: Array, probability: Array) -> Scored:
        try:
            metrics = score(actual_delay, actual_delayed, delay, probability)
        except EvaluationError as exc:
            raise EvaluationError(f"{name}: {exc}") from exc
        return Scored(name, metrics, np.asarray(delay), np.asarray(probability))

    model = scored("model", *candidate.predict_frame(rows))
    baseline = scored("baseline", *RouteMeanBaseline.fit(window).predict(rows))
    champ = scored(f"champion v{champion_version}", *champion.predict_frame(rows)) if champion else None
    gates = [
        beats_baseline(model.metrics, baseline.metrics, gate_metrics),
        not_worse_than_champion(
            model.metrics,
            champ.metrics if champ else None,
            tolerance,
            gate_metrics,
            champion_version=champion_version,
        ),
    ]
    return EvaluationReport(
        rows=rows.height,
        actual_delay=actual_delay,
        actual_delayed=actual_delayed,
        model=model,
        baseline=baseline,
        champion=champ,
        champion_version=champion_version,
        gates=gates,
    )
