"""The evaluation plots: valid PNGs of the documented size, correct binning, refusals, markdown."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from ml_platform.lib.evaluation.metrics import EvaluationError
from ml_platform.lib.evaluation.plots import (
    DPI,
    FIGSIZE,
    MAX_SCATTER_POINTS,
    PNG_MAGIC,
    CalibrationBin,
    calibration_bins,
    calibration_plot,
    metric_history_plot,
    png_markdown,
    residual_plot,
    subsample_index,
)

RNG = np.random.default_rng(3)
N = 800
ACTUAL = RNG.normal(5.0, 30.0, N)
PREDICTED = ACTUAL + RNG.normal(0.0, 10.0, N)
OUTCOME = ACTUAL > 15.0
PROB = np.clip(1 / (1 + np.exp(-(PREDICTED - 15.0) / 10.0)), 0.0, 1.0)
DEFAULT_SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


def _size(png: bytes) -> tuple[int, int]:
    """Check ``png`` is a decodable PNG and return its (width, height) in pixels."""
    assert png.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def test_residual_plot_is_a_png() -> None:
    assert _size(residual_plot(ACTUAL, PREDICTED, title="holdout 2013-03-04")) == DEFAULT_SIZE


def test_residual_plot_subsamples_deterministically() -> None:
    n = MAX_SCATTER_POINTS + 1000
    actual = RNG.normal(size=n)
    assert residual_plot(actual, actual * 0.5) == residual_plot(actual, actual * 0.5)
    index = subsample_index(n)
    assert index.size == MAX_SCATTER_POINTS
    assert np.unique(index).size == index.size and np.all(np.diff(index) > 0)
    assert index.min() >= 0 and index.max() < n
    np.testing.assert_array_equal(index, subsample_index(n))
    np.testing.assert_array_equal(subsample_index(10), np.arange(10))


def test_residual_plot_refusals() -> None:
    with pytest.raises(EvaluationError, match="actual has no rows"):
        residual_plot([], [])
    with pytest.raises(EvaluationError, match="length mismatch: actual has 3 rows, predicted has 2 rows"):
        residual_plot([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(EvaluationError, match=r"predicted has 1 NaN/inf value\(s\) out of 2 rows"):
        residual_plot([1.0, 2.0], [1.0, np.nan])


def test_calibration_bins_by_hand() -> None:
    outcome = [0, 1, 1, 0, 1]
    prob = [0.05, 0.15, 0.95, 1.0, 0.5]
    # 0.5 starts the upper bin; 1.0 belongs to the last bin.
    assert calibration_bins(outcome, prob, bins=2) == [
        CalibrationBin(0.0, 0.5, 2, pytest.approx(0.1), 0.5),  # type: ignore[arg-type]
        CalibrationBin(0.5, 1.0, 3, pytest.approx((0.5 + 0.95 + 1.0) / 3), pytest.approx(2 / 3)),  # type: ignore[arg-type]
    ]
    ten = calibration_bins(np.array(outcome, dtype=bool), prob, bins=10)
    assert [(b.lower, b.rows) for b in ten] == [
        (0.0, 1),
        (pytest.approx(0.1), 1),
        (pytest.approx(0.5), 1),
        (pytest.approx(0.9), 2),
    ]
    assert sum(b.rows for b in calibration_bins(OUTCOME, PROB)) == N


@pytest.mark.parametrize(
    ("outcome", "prob", "bins", "match"),
    [
        pytest.param([0, 1], [0.1, 0.2], 0, "bins must be >= 1", id="bins"),
        pytest.param([0, 1], [0.1, 1.5], 10, r"1 of 2 probabilities lie outside \[0, 1\]", id="range"),
        pytest.param([0, 2], [0.1, 0.2], 10, "outcome must be 0/1; 1 of 2", id="binary"),
        pytest.param([0, 1, 1], [0.1, 0.2], 10, "length mismatch", id="length"),
        pytest.param([0, 1], [0.1, np.nan], 10, "probability has 1 NaN/inf", id="nan"),
        pytest.param([], [], 10, "outcome has no rows", id="empty"),
    ],
)
def test_calibration_refusals(outcome: list[float], prob: list[float], bins: int, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        calibration_bins(outcome, prob, bins)
    with pytest.raises(EvaluationError, match=match):
        calibration_plot(outcome, {"model": prob}, bins)


def test_calibration_plot_single_and_several_series() -> None:
    assert _size(calibration_plot(OUTCOME, PROB)) == DEFAULT_SIZE
    series = {"model": PROB, "baseline": np.full(N, OUTCOME.mean()), "champion": np.clip(PROB * 0.9, 0, 1)}
    several = calibration_plot(OUTCOME, series, bins=5, title="week 2013-03-04")
    assert _size(several) == DEFAULT_SIZE
    assert several != calibration_plot(OUTCOME, PROB, bins=5, title="week 2013-03-04")


def test_calibration_plot_refuses_an_empty_mapping_and_bad_series() -> None:
    with pytest.raises(EvaluationError, match="no probability series"):
        calibration_plot(OUTCOME, {})
    with pytest.raises(EvaluationError, match="outside"):
        calibration_plot(OUTCOME, {"model": PROB, "broken": PROB + 1.0})


HISTORY = [
    ("2013-02-25", {"mae": 12.0, "rmse": 20.0, "roc_auc": 0.70}),
    ("2013-03-04", {"mae": 11.5, "rmse": 19.0}),  # roc_auc missing: a gap, not an error
    ("2013-03-11", {"mae": 11.0, "rmse": 18.5, "roc_auc": 0.72}),
]


def test_metric_history_plot_grows_with_the_metrics() -> None:
    assert _size(metric_history_plot(HISTORY, ["mae", "rmse"])) == DEFAULT_SIZE
    width, height = _size(metric_history_plot(HISTORY, ["mae", "rmse", "roc_auc"], title="weekly"))
    assert (width, height) == (DEFAULT_SIZE[0], round(1.8 * 3 * DPI))
    assert _size(metric_history_plot(HISTORY[:1], ["mae"])) == DEFAULT_SIZE
    long = [(f"2013-{1 + i // 4:02d}-{1 + 7 * (i % 4):02d}", {"mae": float(i)}) for i in range(52)]
    assert _size(metric_history_plot(long, ["mae"])) == DEFAULT_SIZE


def test_metric_history_plot_refusals() -> None:
    with pytest.raises(EvaluationError, match="empty history"):
        metric_history_plot([], ["mae"])
    with pytest.raises(EvaluationError, match="no metrics to plot"):
        metric_history_plot(HISTORY, [])
    with pytest.raises(EvaluationError, match="'brier' is in none of the 3 partitions"):
        metric_history_plot(HISTORY, ["mae", "brier"])
    with pytest.raises(EvaluationError, match="mae is nan in partition 2013-03-04"):
        metric_history_plot([*HISTORY[:1], ("2013-03-04", {"mae": float("nan")})], ["mae"])


def test_png_markdown_round_trips() -> None:
    png = residual_plot(ACTUAL[:50], PREDICTED[:50])
    markdown = png_markdown(png, "residuals [holdout]")
    match = re.fullmatch(r"!\[(.*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match is not None
    assert match.group(1) == r"residuals \[holdout\]"
    assert base64.b64decode(match.group(2), validate=True) == png


def test_png_markdown_refuses_non_png() -> None:
    with pytest.raises(EvaluationError, match="4 bytes that do not start with the PNG signature"):
        png_markdown(b"GIF8", "x")
