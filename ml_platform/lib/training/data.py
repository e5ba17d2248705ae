"""Turn ``flight_features`` frames into tensors, with standardization fitted on training rows only.

The :class:`Preprocessor` is fitted once per model partition on the training split of its window
and saved with the model (:meth:`Preprocessor.to_dict`), so serving and evaluation encode rows
exactly as training did. Unknown categories map to index 0; missing numeric values become the
training mean (0 after standardization) and missing weather is flagged in its own column
(``weather_age_minutes`` is null exactly when no observation preceded the departure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from ml_platform.lib.features.transforms import WEATHER_COLUMNS, aggregate_names

CATEGORICAL: Final = ("carrier", "origin", "dest", "sched_hour")
NUMERIC: Final = (
    "distance",
    "day_of_week",
    *WEATHER_COLUMNS,
    "weather_age_minutes",
    *aggregate_names(),
)
WEATHER_MISSING: Final = "weather_missing"
REGRESSION_TARGET: Final = "arr_delay"
CLASSIFICATION_TARGET: Final = "is_delayed"
#: Columns a caller must provide to :meth:`Preprocessor.encode` (the model's input schema).
INPUT_COLUMNS: Final = (*CATEGORICAL, *NUMERIC)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class TrainingDataError(ValueError):
    """The training or evaluation frame cannot be used (missing columns, no labelled rows)."""


@dataclass(frozen=True)
class Encoded:
    """Model inputs (and, for labelled rows, targets) as numpy arrays."""

    categorical: IntArray
    numeric: FloatArray
    #: Standardized ``arr_delay`` (NaN where unknown).
    delay: FloatArray
    #: ``is_delayed`` as 0/1 (NaN where unknown).
    delayed: FloatArray

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def subset(self, index: npt.NDArray[np.int64]) -> Encoded:
        """The rows at ``index``."""
        return Encoded(self.categorical[index], self.numeric[index], self.delay[index], self.delayed[index])


@dataclass(frozen=True)
class Preprocessor:
    """Vocabularies and standardization statistics fitted on the training split."""

    vocabularies: dict[str, list[str]]
    means: dict[str, float]
    stds: dict[str, float]
    delay_mean: float
    delay_std: float
    numeric_columns: list[str] = field(default_factory=lambda: [*NUMERIC, WEATHER_MISSING])

    @property
    def cardinalities(self) -> list[int]:
        """Embedding sizes per categorical column (index 0 is "unknown")."""
        return [len(self.vocabularies[c]) + 1 for c in CATEGORICAL]

    def encode(self, frame: pl.DataFrame) -> Encoded:
        """Encode ``frame`` (rows without a target get NaN targets)."""
        _require(frame, INPUT_COLUMNS, "model input")
        cats = np.stack(
            [
                frame[c]
                .cast(pl.String)
                .replace_strict(
                    self.vocabularies[c], list(range(1, len(self.vocabularies[c]) + 1)), default=0
                )
                .cast(pl.Int64)
                .to_numpy()
                for c in CATEGORICAL
            ],
            axis=1,
        ).astype(np.int64)
        nums = frame.select(
            *[
                ((pl.col(c).cast(pl.Float64) - self.means[c]) / self.stds[c]).fill_null(0.0).fill_nan(0.0)
                for c in NUMERIC
            ],
            # weather_age_minutes is null exactly when no observation was found (NaN via pandas)
            (
                pl.col("weather_age_minutes").is_null()
                | pl.col("weather_age_minutes").cast(pl.Float64).is_nan()
            )
            .cast(pl.Float64)
            .alias(WEATHER_MISSING),
        ).to_numpy()
        if REGRESSION_TARGET in frame.columns:
            delay = (
                (frame[REGRESSION_TARGET].cast(pl.Float64) - self.delay_mean) / self.delay_std
            ).to_numpy()
            delayed = frame[CLASSIFICATION_TARGET].cast(pl.Float64).to_numpy()
        else:
            delay = delayed = np.full(frame.height, np.nan)
        return Encoded(
            cats,
            nums.astype(np.float32),
            np.nan_to_num(delay.astype(np.float32), nan=np.nan),
            delayed.astype(np.float32),
        )

    def delay_minutes(self, standardized: FloatArray) -> FloatArray:
        """Undo the target standardization."""
        return (standardized * self.delay_std + self.delay_mean).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, saved with the model."""
        return {
            "vocabularies": self.vocabularies,
            "means": self.means,
            "stds": self.stds,
            "delay_mean": self.delay_mean,
            "delay_std": self.delay_std,
            "numeric_columns": self.numeric_columns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def canonical_order(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows sorted by every column, so equal content always comes in the same order.

    Delta does not keep row order: delta-rs may write a partition's batches in any order, and
    the content hash (the data version) is taken over sorted rows for that reason. Training
    indexes rows (the seeded epoch permutation, float sums), so without this the same data
    versions could train a different model on another run.
    """
    return frame.sort(frame.columns, nulls_last=True)


def labelled(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with a known outcome (cancelled and diverted flights have no arrival delay)."""
    _require(frame, ("has_target",), "features")
    return frame.filter(pl.col("has_target"))


def fit_preprocessor(train: pl.DataFrame) -> Preprocessor:
    """Fit vocabularies and standardization on the labelled training rows ``train``.

    Raises:
        TrainingDataError: when ``train`` lacks a column or has no labelled rows.
    """
    _require(train, (*INPUT_COLUMNS, REGRESSION_TARGET, CLASSIFICATION_TARGET), "training features")
    if train.height == 0:
        raise TrainingDataError("the training split has no labelled rows")
    vocab = {c: sorted(train[c].cast(pl.String).drop_nulls().unique().to_list()) for c in CATEGORICAL}
    stats = train.select(
        *[pl.col(c).cast(pl.Float64).mean().alias(f"{c}__mean") for c in NUMERIC],
        *[pl.col(c).cast(pl.Float64).std().alias(f"{c}__std") for c in NUMERIC],
    ).row(0, named=True)
    means = {c: _finite(stats[f"{c}__mean"], 0.0) for c in NUMERIC}
    stds = {c: _scale(stats[f"{c}__std"]) for c in NUMERIC}
    delay = train[REGRESSION_TARGET].cast(pl.Float64)
    return Preprocessor(
        vocabularies=vocab,
        means=means,
        stds=stds,
        delay_mean=_finite(delay.mean(), 0.0),
        delay_std=_scale(delay.std()),
    )


def split_by_time(frame: pl.DataFrame, validation_days: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split the window into its earlier days (train) and its last ``validation_days`` (validation).

    A time split, not a random one: early stopping and HPO then judge on days after the ones the
    model was fitted on, like the holdout week does.
    """
    _require(frame, ("flight_date",), "features")
    last = frame["flight_date"].max()
    if not isinstance(last, date):
        raise TrainingDataError("the training window has no rows")
    first_validation = last - timedelta(days=validation_days - 1)
    train = frame.filter(pl.col("flight_date") < first_validation)
    validation = frame.filter(pl.col("flight_date") >= first_validation)
    if train.height == 0 or validation.height == 0:
        raise TrainingDataError(
            f"cannot split the window at {first_validation}: {train.height} training rows,"
            f" {validation.height} validation rows"
        )
    return train, validation


def _require(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{what} lack column(s) {missing}")


def _finite(value: Any, default: float) -> float:
    return float(value) if value is not None and np.isfinite(value) else default


def _scale(value: Any) -> float:
    std = _finite(value, 1.0)
    return std if std > 1e-9 else 1.0
