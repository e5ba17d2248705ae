"""Evaluation plots as PNG bytes, for MLflow artifacts and Dagster markdown metadata.

matplotlib is imported lazily and drawn through its Agg canvas on a standalone
:class:`~matplotlib.figure.Figure` (no pyplot, no global state), so plotting is safe in worker
threads and never opens a window. Every figure is about 6x4 inches at :data:`DPI` dots per inch.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from ml_platform.lib.evaluation.metrics import EvaluationError, FloatArray, _as_vector

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGSIZE: Final = (6.0, 4.0)
DPI: Final = 100
#: The residual scatter shows at most this many points (a deterministic random subsample).
MAX_SCATTER_POINTS: Final = 5000
#: Seed of the scatter subsample: the same inputs always give the same picture.
SUBSAMPLE_SEED: Final = 0
#: Most x tick labels :func:`metric_history_plot` writes; longer histories label every k-th key.
MAX_X_LABELS: Final = 12
PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


def _figure(width: float = FIGSIZE[0], height: float = FIGSIZE[1]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _vector(plot: str, name: str, values: npt.ArrayLike) -> FloatArray:
    array = _as_vector(f"{plot}: {name}", values)
    if array.size == 0:
        raise EvaluationError(f"{plot}: {name} has no rows")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise EvaluationError(
            f"{plot}: {name} has {bad.size} NaN/inf value(s) out of {array.size} rows "
            f"(first at index {int(bad[0])})"
        )
    return array


def _same_length(plot: str, arrays: Mapping[str, FloatArray]) -> None:
    if len({a.size for a in arrays.values()}) > 1:
        raise EvaluationError(
            f"{plot}: length mismatch: " + ", ".join(f"{n} has {a.size} rows" for n, a in arrays.items())
        )


def subsample_index(
    n: int, limit: int = MAX_SCATTER_POINTS, seed: int = SUBSAMPLE_SEED
) -> npt.NDArray[np.int64]:
    """Sorted indices of at most ``limit`` of ``n`` rows, the same for the same arguments."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return np.sort(chosen).astype(np.int64)


def residual_plot(
    actual: npt.ArrayLike, predicted: npt.ArrayLike, title: str = "Arrival delay residuals"
) -> bytes:
    """Two panels of ``residual = actual - predicted`` (minutes), as PNG bytes.

    Left: residual against prediction, a scatter of at most :data:`MAX_SCATTER_POINTS` rows
    (:func:`subsample_index`, deterministic). Right: the histogram of all residuals, with their
    mean. Raises :class:`EvaluationError` for empty, mismatched or non-finite inputs.
    """
    plot = "residual_plot"
    y = _vector(plot, "actual", actual)
    yhat = _vector(plot, "predicted", predicted)
    _same_length(plot, {"actual": y, "predicted": yhat})
    residual = y - yhat
    shown = subsample_index(residual.size)

    fig = _figure()
    scatter, hist = fig.subplots(1, 2)
    scatter.scatter(yhat[shown], residual[shown], s=4, alpha=0.3, linewidths=0)
    scatter.axhline(0.0, color="black", linewidth=0.8)
    sampled = f" ({shown.size} of {residual.size})" if shown.size < residual.size else ""
    scatter.set_title(f"Residual vs predicted{sampled}", fontsize=9)
    scatter.set_xlabel("predicted delay (min)")
    scatter.set_ylabel("residual: actual - predicted (min)")

    bins = int(min(60, max(10, math.isqrt(residual.size))))
    hist.hist(residual, bins=bins, color="tab:blue", alpha=0.8)
    hist.axvline(0.0, color="black", linewidth=0.8)
    mean = float(residual.mean())
    hist.axvline(mean, color="tab:red", linestyle="--", linewidth=1.0, label=f"mean {mean:.2f}")
    hist.set_title(f"Residual distribution (n={residual.size})", fontsize=9)
    hist.set_xlabel("residual (min)")
    hist.set_ylabel("rows")
    hist.legend(fontsize=8)
    fig.suptitle(title)
    return _png(fig)


class CalibrationBin(NamedTuple):
    """One non-empty bin of a reliability diagram: ``[lower, upper)`` (the last one includes 1)."""

    lower: float
    upper: float
    rows: int
    mean_probability: float
    observed_rate: float


def calibration_bins(
    outcome: npt.ArrayLike, probability: npt.ArrayLike, bins: int = 10
) -> list[CalibrationBin]:
    """The non-empty bins of ``bins`` equal-width probability bins over ``[0, 1]``.

    Each bin holds its row count, the mean predicted probability and the observed share of
    ``outcome`` (0/1 or bool). Raises :class:`EvaluationError` for empty, mismatched or non-finite
    inputs, outcomes that are not 0/1, probabilities outside ``[0, 1]`` or ``bins < 1``.
    """
    plot = "calibration"
    if bins < 1:
        raise EvaluationError(f"{plot}: bins must be >= 1, got {bins}")
    y = _vector(plot, "outcome", outcome)
    p = _vector(plot, "probability", probability)
    _same_length(plot, {"outcome": y, "probability": p})
    not_binary = int(np.count_nonzero((y != 0.0) & (y != 1.0)))
    if not_binary:
        raise EvaluationError(f"{plot}: outcome must be 0/1; {not_binary} of {y.size} values are not")
    outside = int(np.count_nonzero((p < 0.0) | (p > 1.0)))
    if outside:
        raise EvaluationError(f"{plot}: {outside} of {p.size} probabilities lie outside [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(p, edges[1:-1])
    result = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            result.append(
                CalibrationBin(
                    float(edges[b]),
                    float(edges[b + 1]),
                    count,
                    float(p[members].mean()),
                    float(y[members].mean()),
                )
            )
    return result


def calibration_plot(
    outcome: npt.ArrayLike,
    probability: npt.ArrayLike | Mapping[str, npt.ArrayLike],
    bins: int = 10,
    title: str = "Calibration (is_delayed)",
) -> bytes:
    """A reliability diagram as PNG bytes: observed delayed share against mean predicted probability.

    ``probability`` is either one array, or a mapping ``{series name: probabilities}`` to overlay
    several predictors of the same rows (e.g. ``{"model": ..., "baseline": ..., "champion": ...}``),
    all judged against the one ``outcome``. The top panel draws each series' non-empty bins
    (:func:`calibration_bins`) and the diagonal of perfect calibration; the bottom panel the row
    count per bin of each series (log scale). Raises :class:`EvaluationError` as
    :func:`calibration_bins` does, or for an empty mapping.
    """
    series: dict[str, npt.ArrayLike] = (
        dict(probability) if isinstance(probability, Mapping) else {"model": probability}
    )
    if not series:
        raise EvaluationError("calibration_plot: no probability series given")
    tables = {name: calibration_bins(outcome, values, bins) for name, values in series.items()}

    fig = _figure()
    reliability, counts = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    reliability.plot([0.0, 1.0], [0.0, 1.0], linestyle=":", color="grey", label="perfectly calibrated")
    width = 1.0 / bins
    for i, (name, table) in enumerate(tables.items()):
        color = f"C{i}"
        reliability.plot(
            [b.mean_probability for b in table],
            [b.observed_rate for b in table],
            marker="o",
            markersize=4,
            color=color,
            label=name,
        )
        offset = width * (i + 0.5) / len(tables)
        counts.bar(
            [b.lower + offset for b in table],
            [b.rows for b in table],
            width=width / len(tables),
            color=color,
            alpha=0.8,
        )
    reliability.set_xlim(0.0, 1.0)
    reliability.set_ylim(0.0, 1.0)
    reliability.set_ylabel("observed delayed share")
    reliability.legend(fontsize=8, loc="upper left")
    counts.set_yscale("log")
    counts.set_ylabel("rows")
    counts.set_xlabel("predicted probability of delay")
    fig.suptitle(title)
    return _png(fig)


def metric_history_plot(
    history: Sequence[tuple[str, Mapping[str, float]]],
    metrics: Sequence[str],
    title: str = "Holdout metrics by partition",
) -> bytes:
    """One subplot per metric of ``history``, ``[(partition key, {metric: value}), ...]``, as PNG bytes.

    The x axis is the partition keys in the given order (e.g. weekly ``"2013-03-04"``); a
    partition that lacks a metric leaves a gap in that metric's line. The figure is 6 inches wide
    and grows 1.8 inches per metric beyond two. Raises :class:`EvaluationError` for an empty
    history or metric list, a metric present in no partition, or a non-finite value.
    """
    plot = "metric_history_plot"
    if not history:
        raise EvaluationError(f"{plot}: empty history")
    if not metrics:
        raise EvaluationError(f"{plot}: no metrics to plot ({len(history)} partitions)")
    keys = [str(key) for key, _ in history]
    columns: dict[str, list[float]] = {}
    for metric in metrics:
        column = []
        for key, values in history:
            value = float(values[metric]) if metric in values else math.nan
            if metric in values and not math.isfinite(value):
                raise EvaluationError(f"{plot}: {metric} is {value} in partition {key}")
            column.append(value)
        if all(math.isnan(v) for v in column):
            raise EvaluationError(f"{plot}: metric {metric!r} is in none of the {len(history)} partitions")
        columns[metric] = column

    fig = _figure(height=max(FIGSIZE[1], 1.8 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(len(keys))
    for ax, (metric, column) in zip(axes, columns.items(), strict=True):
        ax.plot(x, column, marker="o", markersize=3)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    step = max(1, math.ceil(len(keys) / MAX_X_LABELS))
    axes[-1].set_xticks(x[::step], keys[::step], rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlabel("partition")
    fig.suptitle(title)
    return _png(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """``![alt](data:image/png;base64,...)``: an inline image for Dagster's markdown metadata.

    Brackets in ``alt`` are escaped. Raises :class:`EvaluationError` if ``png`` is not a PNG.
    """
    if not png.startswith(PNG_MAGIC):
        raise EvaluationError(f"png_markdown: {len(png)} bytes that do not start with the PNG signature")
    safe_alt = alt.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return f"![{safe_alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
