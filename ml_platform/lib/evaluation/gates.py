"""The promotion gates: pure comparisons of measured metrics, each with its evidence.

Every gate compares the candidate model against a reference measured on the same holdout rows.
Metrics named in :data:`LOWER_IS_BETTER` improve downwards; the others (the AUCs) upwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

LOWER_IS_BETTER: Final = frozenset({"mae", "rmse", "brier"})
#: Metrics the gates judge by default: one per head, each the proper score of what the head
#: estimates. The delay head and the per-route baseline both estimate a mean, which RMSE judges;
#: MAE rewards a median instead and is reported, not gated (docs/architecture.md).
DEFAULT_GATE_METRICS: Final = ("rmse", "brier")

BEATS_BASELINE: Final = "beats_naive_baseline"
NOT_WORSE_THAN_CHAMPION: Final = "not_worse_than_champion"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate and the numbers behind it."""

    name: str
    passed: bool
    detail: str
    #: ``{metric: {"model": x, "reference": y}}`` for every metric the gate judged.
    comparisons: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (evidence of audit events and metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            passed=bool(data["passed"]),
            detail=str(data["detail"]),
            comparisons={k: dict(v) for k, v in dict(data.get("comparisons", {})).items()},
        )


def _worse(metric: str, model: float, reference: float, tolerance: float) -> bool:
    """True when ``model`` is worse than ``reference`` by more than ``tolerance`` (relative)."""
    slack = abs(reference) * tolerance
    if metric in LOWER_IS_BETTER:
        return model > reference + slack
    return model < reference - slack


def beats_baseline(
    model: Mapping[str, float], baseline: Mapping[str, float], metrics: Sequence[str] = DEFAULT_GATE_METRICS
) -> GateResult:
    """Passes when the model is strictly better than the naive baseline on every gate metric."""
    comparisons = {m: {"model": float(model[m]), "reference": float(baseline[m])} for m in metrics}
    losing = [
        m
        for m, c in comparisons.items()
        if not (c["model"] < c["reference"] if m in LOWER_IS_BETTER else c["model"] > c["reference"])
    ]
    detail = (
        f"better than the per-route historical mean on {', '.join(metrics)}"
        if not losing
        else "not better than the per-route historical mean on "
        + ", ".join(
            f"{m} ({comparisons[m]['model']:.4g} vs {comparisons[m]['reference']:.4g})" for m in losing
        )
    )
    return GateResult(BEATS_BASELINE, not losing, detail, comparisons)


def not_worse_than_champion(
    model: Mapping[str, float],
    champion: Mapping[str, float] | None,
    tolerance: float,
    metrics: Sequence[str] = DEFAULT_GATE_METRICS,
    champion_version: str | None = None,
) -> GateResult:
    """Passes when no champion exists yet, or the model is within ``tolerance`` of it on every metric."""
    if champion is None:
        return GateResult(NOT_WORSE_THAN_CHAMPION, True, "no champion yet: nothing to compare against")
    comparisons = {m: {"model": float(model[m]), "reference": float(champion[m])} for m in metrics}
    worse = [m for m, c in comparisons.items() if _worse(m, c["model"], c["reference"], tolerance)]
    who = f"champion v{champion_version}" if champion_version else "the champion"
    detail = (
        f"within {tolerance:.1%} of {who} on {', '.join(metrics)}"
        if not worse
        else f"worse than {who} by more than {tolerance:.1%} on "
        + ", ".join(
            f"{m} ({comparisons[m]['model']:.4g} vs {comparisons[m]['reference']:.4g})" for m in worse
        )
    )
    return GateResult(NOT_WORSE_THAN_CHAMPION, not worse, detail, comparisons)
