"""Holdout metrics of both heads and the naive per-route baseline they are judged against.

:func:`score` measures one set of predictions on labelled holdout rows: the regression head in
minutes (:data:`REGRESSION_METRICS`) and the probability head (:data:`CLASSIFICATION_METRICS`).
It refuses anything that would make a number meaningless (NaN, a single class, probabilities
outside ``[0, 1]``) with an :class:`EvaluationError` instead of returning a placeholder.

:class:`RouteMeanBaseline` is the reference the ``beats_naive_baseline`` gate compares against:
the historical mean delay and delayed share of each route over the training window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

REGRESSION_METRICS: Final = ("mae", "rmse")
CLASSIFICATION_METRICS: Final = ("roc_auc", "pr_auc", "brier")
#: Every metric :func:`score` returns, in order.
ALL_METRICS: Final = (*REGRESSION_METRICS, *CLASSIFICATION_METRICS)

#: Columns :meth:`RouteMeanBaseline.fit` needs (``predict`` needs only ``route``).
BASELINE_COLUMNS: Final = ("route", "arr_delay", "is_delayed", "has_target")

FloatArray = npt.NDArray[np.float64]


class EvaluationError(ValueError):
    """Metrics cannot be computed meaningfully from the given rows or predictions."""


def _as_vector(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a 1-D float64 array, or an :class:`EvaluationError` naming ``name``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{name} is not numeric (nulls or objects?): {exc}") from exc
    if array.ndim != 1:
        raise EvaluationError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_finite(name: str, array: FloatArray) -> None:
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise EvaluationError(
            f"{name} has {bad.size} NaN/inf value(s) out of {array.size} rows "
            f"(first at index {int(bad[0])}); evaluate labelled rows with finite predictions only"
        )


def _check_probability(name: str, array: FloatArray) -> None:
    bad = np.flatnonzero((array < 0.0) | (array > 1.0))
    if bad.size:
        raise EvaluationError(
            f"{name} has {bad.size} value(s) outside [0, 1] out of {array.size} rows "
            f"(first at index {int(bad[0])}: {array[bad[0]]!r})"
        )


def _check_binary(name: str, array: FloatArray) -> None:
    bad = np.flatnonzero((array != 0.0) & (array != 1.0))
    if bad.size:
        raise EvaluationError(
            f"{name} must be 0/1 (or bool); {bad.size} value(s) out of {array.size} rows are not "
            f"(first at index {int(bad[0])}: {array[bad[0]]!r})"
        )


def _vectors(arrays: Mapping[str, npt.ArrayLike]) -> dict[str, FloatArray]:
    """Convert and check that all ``arrays`` are non-empty, of equal length and finite."""
    vectors = {name: _as_vector(name, values) for name, values in arrays.items()}
    lengths = {name: v.size for name, v in vectors.items()}
    if len(set(lengths.values())) > 1:
        raise EvaluationError(
            "length mismatch: " + ", ".join(f"{name} has {n} rows" for name, n in lengths.items())
        )
    if not next(iter(lengths.values()), 0):
        raise EvaluationError(f"no rows to evaluate ({', '.join(vectors)} are empty)")
    for name, vector in vectors.items():
        _check_finite(name, vector)
    return vectors


def score(
    arr_delay: npt.ArrayLike,
    is_delayed: npt.ArrayLike,
    pred_delay: npt.ArrayLike,
    pred_prob: npt.ArrayLike,
) -> dict[str, float]:
    """Metrics of both heads on the same labelled rows.

    ``arr_delay`` and ``pred_delay`` are minutes; ``is_delayed`` is bool or 0/1; ``pred_prob`` is
    the predicted probability of ``is_delayed``. Returns exactly the keys of :data:`ALL_METRICS`:
    ``mae`` and ``rmse`` (minutes), ``roc_auc``, ``pr_auc`` (average precision) and ``brier``.
    The number of rows is ``len(arr_delay)``; it is not part of the result.

    Raises :class:`EvaluationError` for no rows, arrays of different lengths, NaN/inf in any
    array, ``is_delayed`` not 0/1, probabilities outside ``[0, 1]``, or a single class in
    ``is_delayed`` (the AUCs are undefined then).
    """
    v = _vectors(
        {"arr_delay": arr_delay, "is_delayed": is_delayed, "pred_delay": pred_delay, "pred_prob": pred_prob}
    )
    actual, outcome, delay, prob = v["arr_delay"], v["is_delayed"], v["pred_delay"], v["pred_prob"]
    _check_binary("is_delayed", outcome)
    _check_probability("pred_prob", prob)
    positives = int(outcome.sum())
    if positives in (0, outcome.size):
        only = "delayed" if positives else "on time"
        raise EvaluationError(
            f"is_delayed has a single class (all {outcome.size} rows {only}): "
            "roc_auc and pr_auc are undefined; evaluate on a larger holdout"
        )

    from sklearn.metrics import average_precision_score, roc_auc_score

    error = delay - actual
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error * error))),
        "roc_auc": float(roc_auc_score(outcome, prob)),
        "pr_auc": float(average_precision_score(outcome, prob)),
        "brier": float(np.mean((prob - outcome) ** 2)),
    }


@dataclass(frozen=True)
class RouteMeanBaseline:
    """The naive baseline: the historical mean per route, fitted on the training window.

    ``delay_by_route`` is the mean ``arr_delay`` (minutes) and ``share_by_route`` the share of
    delayed flights of each route seen in training; routes never seen (and null routes) get the
    global values over all labelled training rows.
    """

    delay_by_route: dict[str, float]
    share_by_route: dict[str, float]
    global_delay: float
    global_share: float

    @classmethod
    def fit(cls, train: pl.DataFrame) -> RouteMeanBaseline:
        """Fit on the labelled rows (``has_target``) of ``train``, a ``flight_features`` frame.

        Raises :class:`EvaluationError` if columns are missing, no row is labelled, or a labelled
        row has a null target.
        """
        missing = [c for c in BASELINE_COLUMNS if c not in train.columns]
        if missing:
            raise EvaluationError(f"baseline training frame lacks column(s) {missing} ({train.height} rows)")
        labelled = train.filter(pl.col("has_target"))
        if labelled.height == 0:
            raise EvaluationError(
                f"no labelled rows (has_target) among {train.height} training rows: cannot fit the baseline"
            )
        nulls = labelled.select(
            pl.col("arr_delay").is_null().sum(), pl.col("is_delayed").is_null().sum()
        ).row(0)
        if any(nulls):
            raise EvaluationError(
                f"{nulls[0]} labelled row(s) with null arr_delay and {nulls[1]} with null is_delayed "
                f"among {labelled.height}: has_target disagrees with the targets"
            )
        stats = labelled.with_columns(pl.col("is_delayed").cast(pl.Float64)).select(
            "route", delay=pl.col("arr_delay").cast(pl.Float64), share=pl.col("is_delayed")
        )
        per_route = (
            stats.filter(pl.col("route").is_not_null()).group_by("route").agg(pl.mean("delay", "share"))
        )
        totals = stats.select(pl.mean("delay", "share")).row(0)
        return cls(
            delay_by_route=dict(zip(per_route["route"].to_list(), per_route["delay"].to_list(), strict=True)),
            share_by_route=dict(zip(per_route["route"].to_list(), per_route["share"].to_list(), strict=True)),
            global_delay=float(totals[0]),
            global_share=float(totals[1]),
        )

    def predict(self, frame: pl.DataFrame) -> tuple[FloatArray, FloatArray]:
        """``(predicted delay in minutes, predicted probability of delay)`` for each row of ``frame``.

        Only the ``route`` column is read; unseen or null routes fall back to the global values.
        """
        if "route" not in frame.columns:
            raise EvaluationError(f"frame to predict lacks column 'route' ({frame.height} rows)")
        route = pl.col("route").cast(pl.String)
        out = frame.select(
            delay=route.replace_strict(
                self.delay_by_route, default=self.global_delay, return_dtype=pl.Float64
            ),
            share=route.replace_strict(
                self.share_by_route, default=self.global_share, return_dtype=pl.Float64
            ),
        )
        return out["delay"].to_numpy().astype(np.float64), out["share"].to_numpy().astype(np.float64)
