"""A day's drift scores as a table (rows, markdown) and a plot, for the ``drift_report`` asset."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from ml_platform.lib.monitoring.drift import FeatureDrift
from ml_platform.lib.monitoring.metrics import DriftSample

#: Measure columns of the report table, in order.
MEASURE_COLUMNS: Final = ("psi", "ks", "mean_shift", "tvd", "missing")
_COLORS: Final = {"ok": "#4c9a2a", "warn": "#e0a800", "error": "#c0392b"}
#: Features shown in the plot and the markdown table (worst first); the Delta table has all.
SHOWN: Final = 20


def pressure(result: FeatureDrift) -> float:
    """The largest score / error-threshold ratio over the judged measures (1.0 = at the error line)."""
    ratios = [
        result.scores[m] / t.error
        for m, t in result.thresholds.items()
        if t is not None and t.error > 0 and m in result.scores
    ]
    return max(ratios, default=0.0)


def report_frame(
    results: Sequence[FeatureDrift], *, model_version: str, model_partition: str
) -> pl.DataFrame:
    """One row per feature: kind, severity, each measure's score (null where not defined), breaches."""
    rows = []
    for r in results:
        row: dict[str, object] = {
            "feature": r.feature,
            "kind": r.kind,
            "severity": r.severity,
            "pressure": pressure(r),
        }
        for m in MEASURE_COLUMNS:
            score = r.scores.get(m)
            row[m] = None if score is None else float(min(score, 1e308))
        row["breaches"] = "; ".join(r.breaches)
        row["thresholds"] = json.dumps(r.to_dict()["thresholds"], sort_keys=True)
        row["reference_rows"] = r.reference_rows
        row["current_rows"] = r.current_rows
        row["model_version"] = model_version
        row["model_partition"] = model_partition
        rows.append(row)
    schema = {
        "feature": pl.String,
        "kind": pl.String,
        "severity": pl.String,
        "pressure": pl.Float64,
        **{m: pl.Float64 for m in MEASURE_COLUMNS},
        "breaches": pl.String,
        "thresholds": pl.String,
        "reference_rows": pl.Int64,
        "current_rows": pl.Int64,
        "model_version": pl.String,
        "model_partition": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def markdown_table(results: Sequence[FeatureDrift], limit: int = SHOWN) -> str:
    """The worst ``limit`` features as a markdown table."""
    lines = [
        "| feature | severity | " + " | ".join(MEASURE_COLUMNS) + " | breaches |",
        "|---|---|" + "---|" * len(MEASURE_COLUMNS) + "---|",
    ]
    for r in results[:limit]:
        cells = []
        for m in MEASURE_COLUMNS:
            score = r.scores.get(m)
            judged = m in r.thresholds and r.thresholds[m] is not None
            cells.append("" if score is None else f"{score:.3g}" + ("" if judged else " (report)"))
        lines.append(
            f"| {r.feature} | {r.severity} | " + " | ".join(cells) + f" | {'; '.join(r.breaches) or '-'} |"
        )
    if len(results) > limit:
        lines.append(f"\n{len(results) - limit} more features, all in the drift_report Delta table.")
    return "\n".join(lines)


def drift_plot(results: Sequence[FeatureDrift], title: str, limit: int = SHOWN) -> bytes:
    """Horizontal bars: each feature's :func:`pressure`, colored by severity, against the error line."""
    from ml_platform.lib.evaluation.plots import _figure, _png

    shown = sorted(results, key=pressure, reverse=True)[:limit]
    fig = _figure(7.0, max(3.0, 0.28 * len(shown) + 1.2))
    ax = fig.add_subplot()
    values = np.array([pressure(r) for r in shown])
    positions = np.arange(len(shown))[::-1]
    ax.barh(positions, np.minimum(values, 3.0), color=[_COLORS[r.severity] for r in shown])
    for y, value in zip(positions, values, strict=True):
        if value > 3.0:
            ax.text(2.95, y, f"{value:.1f}", va="center", ha="right", color="white", fontsize=7)
    ax.set_yticks(positions, [r.feature for r in shown], fontsize=7)
    ax.axvline(1.0, color=_COLORS["error"], linestyle="--", linewidth=1, label="error threshold")
    ax.set_xlim(0, 3.0)
    ax.set_xlabel("score / error threshold (worst judged measure)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def samples(results: Sequence[FeatureDrift]) -> list[DriftSample]:
    """Prometheus samples: every judged measure's score with its thresholds."""
    out = []
    for r in results:
        for m, t in r.thresholds.items():
            if t is not None and m in r.scores:
                out.append(DriftSample(r.feature, m, float(min(r.scores[m], 1e308)), t.warn, t.error))
    return out
