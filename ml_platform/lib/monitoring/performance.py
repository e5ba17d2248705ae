"""Live performance of the champion against what its evaluation promised.

Actuals of day D arrive with D's data. Joined with the predictions the champion made for D
(``flight_delay_predictions``), they give live metrics. A raw metric moves with the days
themselves (a storm day has an RMSE twice an ordinary day's), so decay is judged on **skill**:
the model's metric relative to the naive per-route baseline on the same rows, the same
comparison the evaluation gate made. Degradation is how much that skill worsened since
evaluation, relative:

    skill = model / baseline            (lower is better: mae, rmse, brier)
    skill = baseline / model            (higher is better: roc_auc, pr_auc)
    degradation = live skill / evaluation skill - 1      (> 0: worse)

A day is judged on the rows pooled over the last days the same version scored (up to a week), so
one odd day does not decide. Degradation above the threshold (5 % by default) is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

LOWER_IS_BETTER: Final = frozenset({"mae", "rmse", "brier"})
HIGHER_IS_BETTER: Final = frozenset({"roc_auc", "pr_auc"})


class DecayError(ValueError):
    """Decay cannot be judged (a metric missing, a zero metric)."""


def skill(metric: str, model: float, baseline: float) -> float:
    """The model's skill on ``metric`` relative to the baseline (lower is better, 1.0 = no better)."""
    if metric in LOWER_IS_BETTER:
        if baseline <= 0:
            raise DecayError(f"{metric}: the baseline scored {baseline}, a skill ratio needs it positive")
        return model / baseline
    if metric in HIGHER_IS_BETTER:
        if model <= 0:
            raise DecayError(f"{metric}: the model scored {model}, a skill ratio needs it positive")
        return baseline / model
    raise DecayError(
        f"unknown metric {metric!r}; expected one of {sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER)}"
    )


@dataclass(frozen=True)
class Decay:
    """One metric's live skill against its evaluation-time skill."""

    metric: str
    live_model: float
    live_baseline: float
    evaluation_model: float
    evaluation_baseline: float
    threshold: float

    @property
    def live_skill(self) -> float:
        """Skill on the live rows."""
        return skill(self.metric, self.live_model, self.live_baseline)

    @property
    def evaluation_skill(self) -> float:
        """Skill on the holdout week, when the version was evaluated."""
        return skill(self.metric, self.evaluation_model, self.evaluation_baseline)

    @property
    def degradation(self) -> float:
        """Relative worsening of the skill since evaluation (> 0: worse)."""
        return self.live_skill / self.evaluation_skill - 1.0

    @property
    def degraded(self) -> bool:
        """Whether the degradation exceeds the threshold; exactly at it is not degraded.

        Skill ratios are floats: a live skill exactly 5 % worse computes as 0.050000000000000044 or
        0.04999999999999982 depending on the numbers, so "at the threshold" is within a relative
        1e-9 of it, and only a degradation beyond that counts.
        """
        return self.degradation > self.threshold and not math.isclose(
            self.degradation, self.threshold, rel_tol=1e-9, abs_tol=1e-12
        )

    @property
    def summary(self) -> str:
        """``"rmse skill 1.04 vs 0.96 at evaluation (+8.3% > 5%)"``."""
        sign = ">" if self.degraded else "<="
        return f"{self.measured} ({self.degradation:+.1%} {sign} {self.threshold:.0%})"

    @property
    def measured(self) -> str:
        """The numbers without a verdict: ``"rmse skill 1.04 vs 0.96 at evaluation"``."""
        return f"{self.metric} skill {self.live_skill:.3f} vs {self.evaluation_skill:.3f} at evaluation"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (metadata, sensor evidence)."""
        return {
            "metric": self.metric,
            "live_model": self.live_model,
            "live_baseline": self.live_baseline,
            "evaluation_model": self.evaluation_model,
            "evaluation_baseline": self.evaluation_baseline,
            "live_skill": self.live_skill,
            "evaluation_skill": self.evaluation_skill,
            "degradation": self.degradation,
            "threshold": self.threshold,
            "degraded": self.degraded,
        }


def judge_decay(
    live_model: Mapping[str, float],
    live_baseline: Mapping[str, float],
    evaluation_model: Mapping[str, float],
    evaluation_baseline: Mapping[str, float],
    metrics: Sequence[str],
    threshold: float,
) -> list[Decay]:
    """One :class:`Decay` per metric.

    Raises:
        DecayError: naming a metric missing from any of the four tables.
    """
    out = []
    for metric in metrics:
        tables = {
            "live model": live_model,
            "live baseline": live_baseline,
            "evaluation model": evaluation_model,
            "evaluation baseline": evaluation_baseline,
        }
        missing = [name for name, table in tables.items() if metric not in table]
        if missing:
            raise DecayError(f"{metric}: no value in the {', '.join(missing)} metrics")
        out.append(
            Decay(
                metric,
                float(live_model[metric]),
                float(live_baseline[metric]),
                float(evaluation_model[metric]),
                float(evaluation_baseline[metric]),
                threshold,
            )
        )
    return out
