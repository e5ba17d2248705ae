"""Per-feature drift of a day's profile against a reference profile, judged by effect sizes.

Measures (all computed from the profiles' sketches, no rows):

* ``psi``: population stability index over the reference's deciles (numeric) or over the
  categories (categorical). Bins below :data:`PSI_FLOOR` share are floored, the usual guard
  against log(0).
* ``ks``: the Kolmogorov-Smirnov statistic, the largest gap between the two CDFs (numeric).
* ``tvd``: total variation distance between the category mixes, half the L1 distance: the share
  of rows that would have to change category (categorical: carrier, origin, dest, route).
* ``mean_shift``: how far the mean moved, in reference standard deviations (Glass's delta;
  numeric). The measure for day-level features: one day's weather or one day's trailing
  aggregates are a single draw (three airports, one sky), so the day's *shape* always differs
  from an eight-week mixture (KS near 1 on ordinary days) while its *level* tells an ordinary
  day from a shifted one.
* ``missing``: the absolute change of the null share (a feed that stops delivering weather).

Each is an effect size, not a test: at thousands of rows a day, p-values flag columns whose
distribution did not change in any way that matters. Thresholds are per measure, with per-feature
overrides (:class:`DriftPolicy`); a feature's severity is the worst over its measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from ml_platform.lib.monitoring import profiles
from ml_platform.lib.monitoring.profiles import Kind

Measure = Literal["psi", "ks", "mean_shift", "tvd", "missing"]
Severity = Literal["ok", "warn", "error"]
SEVERITY_RANK: Final[dict[Severity, int]] = {"ok": 0, "warn": 1, "error": 2}
MEASURES: Final[dict[Kind, tuple[Measure, ...]]] = {
    "numeric": ("psi", "ks", "mean_shift", "missing"),
    "categorical": ("psi", "tvd", "missing"),
}
#: Smallest bin share in the PSI sum.
PSI_FLOOR: Final = 1e-4
#: Quantile levels at which a merged (approximate) KLL sketch is compared for the KS statistic;
#: an exact sketch (fewer values than its k, as a day is) is compared at every value.
_KS_LEVELS: Final = np.linspace(0.0, 1.0, 201)
_DECILES: Final = np.linspace(0.1, 0.9, 9)


class DriftError(ValueError):
    """Drift cannot be scored (a feature missing from a profile, an empty profile)."""


@dataclass(frozen=True)
class Threshold:
    """Scores at or above ``warn`` warn; at or above ``error`` they are errors."""

    warn: float
    error: float

    def __post_init__(self) -> None:
        if not 0 <= self.warn <= self.error:
            raise ValueError(f"a threshold needs 0 <= warn <= error, got warn={self.warn} error={self.error}")

    def judge(self, score: float) -> Severity:
        """The severity of ``score``."""
        if score >= self.error:
            return "error"
        return "warn" if score >= self.warn else "ok"


#: Defaults, from the usual PSI rule of thumb (0.1 watch, 0.25 act) and the same scale for KS
#: and TVD. Per-feature overrides (:func:`default_overrides`) cover the day-level features.
DEFAULT_THRESHOLDS: Final[dict[Measure, Threshold]] = {
    "psi": Threshold(0.1, 0.25),
    "ks": Threshold(0.1, 0.2),
    "mean_shift": Threshold(1.0, 2.0),
    "tvd": Threshold(0.1, 0.2),
    "missing": Threshold(0.1, 0.3),
}


def default_overrides() -> dict[str, dict[Measure, Threshold | None]]:
    """Per-feature thresholds of the flight features, calibrated on 2013 (docs/architecture.md).

    ``None`` reports a measure without judging it. Weather and trailing aggregates are judged by
    ``mean_shift`` only (see the module docstring); their PSI and KS are still reported. Routes
    and destinations are many small categories whose daily mix wobbles more than carriers'.
    """
    from ml_platform.lib.features.transforms import WEATHER_COLUMNS, aggregate_names

    day_level: dict[Measure, Threshold | None] = {"psi": None, "ks": None}
    out: dict[str, dict[Measure, Threshold | None]] = {}
    for column in WEATHER_COLUMNS:
        out[column] = {**day_level, "mean_shift": Threshold(3.0, 5.0)}
    for column in aggregate_names():
        out[column] = {**day_level, "mean_shift": Threshold(2.5, 4.5)}
    # wind gusts are only reported above a speed, so their null share swings with the wind
    out["wind_gust"]["missing"] = Threshold(0.5, 0.8)
    out["pressure"]["missing"] = Threshold(0.3, 0.7)
    out["route"] = {"psi": Threshold(0.3, 0.6), "tvd": Threshold(0.15, 0.3)}
    out["dest"] = {"psi": Threshold(0.15, 0.4), "tvd": Threshold(0.15, 0.3)}
    return out


@dataclass(frozen=True)
class DriftPolicy:
    """Which features are judged and by which thresholds."""

    features: tuple[str, ...]
    defaults: Mapping[Measure, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    #: Per-feature overrides of some measures' thresholds; None: report the measure, never judge it.
    overrides: Mapping[str, Mapping[Measure, Threshold | None]] = field(default_factory=dict)

    def threshold(self, feature: str, measure: Measure) -> Threshold | None:
        """The threshold of ``measure`` for ``feature`` (None: reported only)."""
        feature_overrides = self.overrides.get(feature, {})
        if measure in feature_overrides:
            return feature_overrides[measure]
        return self.defaults[measure]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift scores and verdict."""

    feature: str
    kind: Kind
    scores: dict[str, float]
    thresholds: dict[str, Threshold | None]
    severity: Severity
    reference_rows: int
    current_rows: int

    @property
    def breaches(self) -> list[str]:
        """The measures at warn or worse, as ``"psi 0.41 >= 0.25 (error)"``."""
        out = []
        for measure, score in self.scores.items():
            threshold = self.thresholds[measure]
            verdict = threshold.judge(score) if threshold else "ok"
            if verdict != "ok":
                out.append(f"{measure} {score:.3g} >= {getattr(threshold, verdict):g} ({verdict})")
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (for metadata, sensor causes and the report table)."""
        return {
            "feature": self.feature,
            "kind": self.kind,
            "severity": self.severity,
            # JSON has no infinity: a constant reference gives mean_shift inf, stored as the largest float
            "scores": {k: round(min(v, 1e308), 6) for k, v in self.scores.items()},
            "thresholds": {
                k: {"warn": t.warn, "error": t.error} if t else None for k, t in self.thresholds.items()
            },
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
        }


def describe(feature: Mapping[str, Any]) -> str:
    """One line for a feature of a stored report (:meth:`FeatureDrift.to_dict` form).

    Each judged measure at warn or worse, with its thresholds: ``"temp mean_shift 6.08 (warn 3,
    error 5)"``. Alerts, the sensor's reasons and the replay's timeline all read reports this way.
    """
    parts = []
    for measure, threshold in feature["thresholds"].items():
        score = feature["scores"].get(measure)
        if threshold is not None and score is not None and score >= threshold["warn"]:
            parts.append(f"{measure} {score:.3g} (warn {threshold['warn']:g}, error {threshold['error']:g})")
    return f"{feature['feature']} " + ", ".join(parts)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=float), PSI_FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=float), PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def mean_shift(reference_mean: float, reference_std: float, current_mean: float) -> float:
    """``|current - reference|`` in reference standard deviations (0 for equal means)."""
    gap = abs(current_mean - reference_mean)
    if gap == 0:
        return 0.0
    return gap / reference_std if reference_std > 0 else math.inf


def _support(sketch: Any) -> np.ndarray:
    """Where a sketch's CDF can step: every value of an exact sketch (a day), else 201 quantiles."""
    if sketch.is_estimation_mode():
        levels = _KS_LEVELS
    else:
        n = int(sketch.get_n())
        levels = np.arange(n) / n
    return np.asarray(sketch.get_quantiles(levels), dtype=float)


def numeric_scores(reference: Any, current: Any) -> dict[str, float]:
    """``psi`` and ``ks`` of two KLL sketches (``whylogs_sketching.kll_doubles_sketch``)."""
    if reference.is_empty() or current.is_empty():
        raise DriftError("an empty distribution has no drift score")
    points = np.unique(np.concatenate([_support(reference), _support(current)]))
    # get_cdf(points) gives P(X < p) at each point and a final 1.0; compare at and just after
    # every point, so ties (integer-valued features) count on the right side of the step
    after = np.nextafter(points, np.inf)
    grid = np.unique(np.concatenate([points, after]))
    ks = float(
        np.max(np.abs(np.asarray(reference.get_cdf(grid))[:-1] - np.asarray(current.get_cdf(grid))[:-1]))
    )
    edges = np.unique(np.asarray(reference.get_quantiles(_DECILES), dtype=float))
    ref_cdf = np.asarray(reference.get_cdf(edges), dtype=float)
    cur_cdf = np.asarray(current.get_cdf(edges), dtype=float)
    ref_shares = np.diff(np.concatenate([[0.0], ref_cdf]))
    cur_shares = np.diff(np.concatenate([[0.0], cur_cdf]))
    return {"psi": psi(ref_shares, cur_shares), "ks": ks}


def categorical_scores(reference: Mapping[str, int], current: Mapping[str, int]) -> dict[str, float]:
    """``psi`` and ``tvd`` of two category count tables (an "other" bucket is the caller's)."""
    ref_total, cur_total = sum(reference.values()), sum(current.values())
    if ref_total == 0 or cur_total == 0:
        raise DriftError("an empty category table has no drift score")
    categories = sorted(set(reference) | set(current))
    ref = np.array([reference.get(c, 0) / ref_total for c in categories])
    cur = np.array([current.get(c, 0) / cur_total for c in categories])
    return {"psi": psi(ref, cur), "tvd": float(0.5 * np.abs(ref - cur).sum())}


def _category_table(view: Any, feature: str) -> dict[str, int]:
    counts = profiles.category_counts(view, feature)
    seen = profiles.row_count(view, feature) - profiles.null_count(view, feature)
    other = seen - sum(counts.values())
    if other > 0:  # values beyond the sketch's capacity
        counts["\0other"] = other
    return counts


def _kind(view: Any, feature: str) -> Kind:
    column = view.get_column(feature)
    if column is None:
        raise DriftError(f"feature {feature!r} is not in the profile")
    return "numeric" if column.get_metric("distribution") is not None else "categorical"


def _null_share(view: Any, feature: str) -> float:
    rows = profiles.row_count(view, feature)
    return profiles.null_count(view, feature) / rows if rows else 0.0


def score_feature(reference: Any, current: Any, feature: str, policy: DriftPolicy) -> FeatureDrift:
    """Score one feature of ``current`` against ``reference`` (both whylogs profile views)."""
    kind = _kind(reference, feature)
    if _kind(current, feature) != kind:
        raise DriftError(f"feature {feature!r} is {kind} in the reference but not in the current profile")
    scores: dict[str, float] = {}
    ref_valid = profiles.row_count(reference, feature) - profiles.null_count(reference, feature)
    cur_valid = profiles.row_count(current, feature) - profiles.null_count(current, feature)
    if ref_valid and cur_valid:
        if kind == "numeric":
            scores.update(numeric_scores(profiles.kll(reference, feature), profiles.kll(current, feature)))
            ref_mean, ref_std = profiles.moments(reference, feature)
            scores["mean_shift"] = mean_shift(ref_mean, ref_std, profiles.moments(current, feature)[0])
        else:
            scores.update(
                categorical_scores(_category_table(reference, feature), _category_table(current, feature))
            )
    # a side without any value (a calm day has no gusts) has no distribution to compare: the
    # change of the null share is then the whole story, and ``missing`` judges it
    scores["missing"] = abs(_null_share(current, feature) - _null_share(reference, feature))
    thresholds: dict[str, Threshold | None] = {m: policy.threshold(feature, m) for m in scores}  # type: ignore[arg-type]
    verdicts = [t.judge(scores[m]) for m, t in thresholds.items() if t is not None]
    severity: Severity = max(verdicts, key=SEVERITY_RANK.__getitem__, default="ok")
    return FeatureDrift(
        feature,
        kind,
        scores,
        thresholds,
        severity,
        profiles.row_count(reference, feature),
        profiles.row_count(current, feature),
    )


def score_drift(reference: Any, current: Any, policy: DriftPolicy) -> list[FeatureDrift]:
    """Every policy feature of ``current`` scored against ``reference``, worst first.

    Raises:
        DriftError: when a policy feature is missing from either profile, or a profile has no rows.
    """
    missing = [f for f in policy.features if reference.get_column(f) is None or current.get_column(f) is None]
    if missing:
        raise DriftError(f"feature(s) {missing} are not in both profiles; profile them first")
    for name, view in (("reference", reference), ("current", current)):
        if policy.features and profiles.row_count(view, policy.features[0]) == 0:
            raise DriftError(
                f"the {name} profile has no rows: an empty day is a broken feed, not a drift score"
            )
    results = [score_feature(reference, current, f, policy) for f in policy.features]
    return sorted(
        results,
        key=lambda r: (-SEVERITY_RANK[r.severity], -max(r.scores.values(), default=0.0), r.feature),
    )


def worst(results: Sequence[FeatureDrift]) -> Severity:
    """The worst severity in ``results`` ("ok" for none)."""
    return max((r.severity for r in results), key=SEVERITY_RANK.__getitem__, default="ok")
