"""Every Prometheus metric of the platform: its name, labels, and the code that writes it.

This module is the one place that names them. The alert rules (``deploy/prometheus/alert-rules.yml``)
and the Grafana dashboard (``deploy/grafana/ml_platform.json``) refer to these names only, which
``ml_platform_tests/test_deploy_observability.py`` checks in both directions.

Two producers write them:

* the batch side (Dagster assets and sensors) writes gauges to a file in the text exposition format
  (:func:`drift_exposition` + :func:`write_textfile`), which node-exporter's textfile collector
  serves: a daily job has no process for Prometheus to scrape;
* the serving side (the Bento) registers :func:`serving_metrics` on its registry and exposes them at
  ``/metrics``.

Labels, by metric (``model_version`` is the MLflow registry version the value belongs to):

==========================  ==========  =====================================================
name                        type        labels
==========================  ==========  =====================================================
FEATURE_DRIFT_SCORE         gauge       feature, measure (psi, ks, tvd, missing), model_version
FEATURE_DRIFT_SEVERITY      gauge       feature, model_version (0 ok, 1 warn, 2 error)
DRIFT_THRESHOLD             gauge       feature, measure, level (warn, error)
DRIFT_REPORT_TIMESTAMP      gauge       -- (unix seconds the latest report was written)
DRIFT_REPORT_PARTITION      gauge       -- (midnight UTC of the day the report covers)
MODEL_AGE_DAYS              gauge       model_version (of the champion)
RETRAIN_REQUESTS            counter     cause (drift, freshness, degradation)
LIVE_METRIC                 gauge       metric, model_version
LIVE_DEGRADATION            gauge       metric, model_version
REQUESTS                    counter     model_version, endpoint, status (HTTP code, "200")
REQUEST_LATENCY             histogram   model_version, endpoint
REQUEST_ERRORS              counter     model_version, endpoint, kind (exception class)
PREDICTION                  histogram   model_version
PREDICTION_PROBABILITY      histogram   model_version
STALE_PREDICTIONS           counter     model_version, endpoint
==========================  ==========  =====================================================

``STALE_PREDICTIONS`` counts predictions answered with ``stale: true``: the flight departs more than
the feature-freshness budget after the online snapshot's cutoff (``ml_platform.lib.online.freshness``).
Its rate over ``PREDICTION``'s count is the stale share the alert rules watch.

``LIVE_DEGRADATION`` is the relative worsening of a metric measured on live (labelled) traffic
against the same metric at evaluation time, positive when worse: ``(live - evaluation) /
evaluation`` for metrics where lower is better (RMSE, Brier), the opposite sign otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ml_platform.lib.files import write_atomic

# --- drift and model metrics (batch side: the textfile) -------------------------------------------
FEATURE_DRIFT_SCORE: Final = "mlp_feature_drift_score"
FEATURE_DRIFT_SEVERITY: Final = "mlp_feature_drift_severity"
DRIFT_THRESHOLD: Final = "mlp_feature_drift_threshold"
DRIFT_REPORT_TIMESTAMP: Final = "mlp_drift_report_timestamp_seconds"
DRIFT_REPORT_PARTITION: Final = "mlp_drift_report_partition_timestamp_seconds"
MODEL_AGE_DAYS: Final = "mlp_champion_age_days"
RETRAIN_REQUESTS: Final = "mlp_retrain_requests_total"
LIVE_METRIC: Final = "mlp_live_metric"
LIVE_DEGRADATION: Final = "mlp_live_degradation_ratio"

# --- serving metrics (the Bento's /metrics) -------------------------------------------------------
REQUESTS: Final = "mlp_requests_total"
REQUEST_LATENCY: Final = "mlp_request_latency_seconds"
REQUEST_ERRORS: Final = "mlp_request_errors_total"
PREDICTION: Final = "mlp_prediction_delay_minutes"
PREDICTION_PROBABILITY: Final = "mlp_prediction_delay_probability"
STALE_PREDICTIONS: Final = "mlp_stale_predictions_total"

DRIFT_METRICS: Final = frozenset(
    {
        FEATURE_DRIFT_SCORE,
        FEATURE_DRIFT_SEVERITY,
        DRIFT_THRESHOLD,
        DRIFT_REPORT_TIMESTAMP,
        DRIFT_REPORT_PARTITION,
        MODEL_AGE_DAYS,
        RETRAIN_REQUESTS,
        LIVE_METRIC,
        LIVE_DEGRADATION,
    }
)
SERVING_METRICS: Final = frozenset(
    {REQUESTS, REQUEST_LATENCY, REQUEST_ERRORS, PREDICTION, PREDICTION_PROBABILITY, STALE_PREDICTIONS}
)
#: Every metric name of the platform as Prometheus stores it (counters with their ``_total``;
#: histograms by base name, without ``_bucket``/``_sum``/``_count``).
ALL_METRICS: Final[frozenset[str]] = DRIFT_METRICS | SERVING_METRICS

#: Severity codes of :data:`FEATURE_DRIFT_SEVERITY`.
SEVERITY_CODES: Final[Mapping[str, int]] = {"ok": 0, "warn": 1, "error": 2}
#: Causes of :data:`RETRAIN_REQUESTS`.
RETRAIN_CAUSES: Final = ("drift", "freshness", "degradation")

#: Latency buckets (seconds) for a service that answers in a few milliseconds.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Predicted arrival delay buckets (minutes); negative delays are early arrivals. With a negative
#: bucket prometheus_client exposes no ``_sum`` for the histogram (it would not be monotonic): only
#: ``_bucket`` and ``_count``, so dashboards show quantiles, not a mean.
DELAY_BUCKETS: Final = (-30.0, -15.0, -5.0, 0.0, 5.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0)
#: Predicted probability-of-delay buckets.
PROBABILITY_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@dataclass(frozen=True)
class ServingMetrics:
    """The serving metrics, registered on one registry (the Bento's)."""

    requests: Counter
    request_latency: Histogram
    request_errors: Counter
    prediction: Histogram
    prediction_probability: Histogram
    stale_predictions: Counter

    def observe_request(self, *, model_version: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(model_version=model_version, endpoint=endpoint, status=str(status)).inc()
        self.request_latency.labels(model_version=model_version, endpoint=endpoint).observe(seconds)

    def observe_error(self, *, model_version: str, endpoint: str, kind: str) -> None:
        """Count one failed request; ``kind`` is a short class of the failure (the exception name)."""
        self.request_errors.labels(model_version=model_version, endpoint=endpoint, kind=kind).inc()

    def observe_prediction(self, *, model_version: str, delay_minutes: float, probability: float) -> None:
        """Record one prediction of both heads."""
        self.prediction.labels(model_version=model_version).observe(delay_minutes)
        self.prediction_probability.labels(model_version=model_version).observe(probability)

    def observe_stale(self, *, model_version: str, endpoint: str, count: int = 1) -> None:
        """Count predictions answered with ``stale: true`` (features older than the budget)."""
        self.stale_predictions.labels(model_version=model_version, endpoint=endpoint).inc(count)


def serving_metrics(registry: CollectorRegistry) -> ServingMetrics:
    """Create the serving metrics on ``registry`` (call once per registry: names must be unique)."""
    return ServingMetrics(
        requests=Counter(
            REQUESTS,
            "Prediction requests answered, by HTTP status.",
            ("model_version", "endpoint", "status"),
            registry=registry,
        ),
        request_latency=Histogram(
            REQUEST_LATENCY,
            "Time to answer a prediction request, in seconds.",
            ("model_version", "endpoint"),
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        request_errors=Counter(
            REQUEST_ERRORS,
            "Prediction requests that failed, by kind of failure.",
            ("model_version", "endpoint", "kind"),
            registry=registry,
        ),
        prediction=Histogram(
            PREDICTION,
            "Predicted arrival delay, in minutes.",
            ("model_version",),
            registry=registry,
            buckets=DELAY_BUCKETS,
        ),
        prediction_probability=Histogram(
            PREDICTION_PROBABILITY,
            "Predicted probability that a flight is delayed.",
            ("model_version",),
            registry=registry,
            buckets=PROBABILITY_BUCKETS,
        ),
        stale_predictions=Counter(
            STALE_PREDICTIONS,
            "Predictions answered with stale online features (departure beyond the freshness budget).",
            ("model_version", "endpoint"),
            registry=registry,
        ),
    )


@dataclass(frozen=True)
class DriftSample:
    """One drift score of one feature, with the thresholds it was judged against."""

    feature: str
    measure: str
    score: float
    warn: float
    error: float


def _unix_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError(f"written_at must be timezone-aware, got {moment!r}")
    return moment.timestamp()


def drift_exposition(
    samples: Sequence[DriftSample],
    severities: Mapping[str, int],
    *,
    model_version: str,
    partition_day: date,
    written_at: datetime,
) -> str:
    """The drift report of one day in the text exposition format (node-exporter's textfile collector).

    ``samples`` hold one score per (feature, measure); ``severities`` the code of each feature
    (:data:`SEVERITY_CODES`). ``written_at`` must be timezone-aware. Raises ValueError on a repeated
    (feature, measure) or an unknown severity code.
    """
    registry = CollectorRegistry()
    score = Gauge(
        FEATURE_DRIFT_SCORE,
        "Drift score of a model input feature against the champion's training-window profile.",
        ("feature", "measure", "model_version"),
        registry=registry,
    )
    severity = Gauge(
        FEATURE_DRIFT_SEVERITY,
        "Drift severity of a feature: 0 ok, 1 warn, 2 error.",
        ("feature", "model_version"),
        registry=registry,
    )
    threshold = Gauge(
        DRIFT_THRESHOLD,
        "Threshold a drift score is judged against, by level (warn, error).",
        ("feature", "measure", "level"),
        registry=registry,
    )
    report_ts = Gauge(
        DRIFT_REPORT_TIMESTAMP, "When the latest drift report was written, unix seconds.", registry=registry
    )
    partition_ts = Gauge(
        DRIFT_REPORT_PARTITION,
        "The day the latest drift report covers (midnight UTC), unix seconds.",
        registry=registry,
    )

    seen: set[tuple[str, str]] = set()
    for sample in samples:
        key = (sample.feature, sample.measure)
        if key in seen:
            raise ValueError(f"drift sample repeated: feature {sample.feature!r}, measure {sample.measure!r}")
        seen.add(key)
        score.labels(feature=sample.feature, measure=sample.measure, model_version=model_version).set(
            sample.score
        )
        threshold.labels(feature=sample.feature, measure=sample.measure, level="warn").set(sample.warn)
        threshold.labels(feature=sample.feature, measure=sample.measure, level="error").set(sample.error)

    codes = set(SEVERITY_CODES.values())
    for feature, code in severities.items():
        if code not in codes:
            raise ValueError(f"severity of feature {feature!r} is {code!r}, not one of {sorted(codes)}")
        severity.labels(feature=feature, model_version=model_version).set(code)

    report_ts.set(_unix_seconds(written_at))
    partition_ts.set(datetime.combine(partition_day, time(), tzinfo=UTC).timestamp())
    return generate_latest(registry).decode()


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, then ``os.replace``.

    The textfile collector never reads a half-written file (it only reads ``*.prom``; the temp file
    is named ``.<name>.*.tmp``).
    """
    write_atomic(path, text, mode=0o644)


def champion_exposition(
    model_version: str, age_days: int, retrain_requests: Mapping[str, int], *, written_at: datetime
) -> str:
    """The retrain sensor's view in the text exposition format: the champion's age and the requests.

    ``age_days`` is how many days before the latest data day the champion's training data ends;
    ``retrain_requests`` counts every request so far by cause (from the monitoring events table, so
    the counter survives restarts).
    """
    _unix_seconds(written_at)
    registry = CollectorRegistry()
    age = Gauge(
        MODEL_AGE_DAYS,
        "Days between the champion's last training day and the latest data day.",
        ("model_version",),
        registry=registry,
    )
    age.labels(model_version=model_version).set(age_days)
    requests = Counter(
        RETRAIN_REQUESTS.removesuffix("_total"),
        "Retrain requests of the retrain sensor, by cause.",
        ("cause",),
        registry=registry,
    )
    for cause in RETRAIN_CAUSES:
        requests.labels(cause=cause).inc(retrain_requests.get(cause, 0))
    unknown = sorted(set(retrain_requests) - set(RETRAIN_CAUSES))
    if unknown:
        raise ValueError(f"unknown retrain cause(s) {unknown}; expected {RETRAIN_CAUSES}")
    return generate_latest(registry).decode()


def live_exposition(
    model_version: str,
    live_metrics: Mapping[str, float],
    degradation: Mapping[str, float],
    *,
    written_at: datetime,
) -> str:
    """Live performance in the text exposition format: each metric and its degradation ratio.

    ``degradation`` is the relative worsening of the model's skill over the naive baseline since
    evaluation (> 0: worse), as :mod:`ml_platform.lib.monitoring.performance` defines it.
    """
    _unix_seconds(written_at)
    registry = CollectorRegistry()
    live = Gauge(
        LIVE_METRIC,
        "Metric of the champion on live (labelled) days.",
        ("metric", "model_version"),
        registry=registry,
    )
    ratio = Gauge(
        LIVE_DEGRADATION,
        "Relative worsening of the champion's skill over the baseline since evaluation (> 0: worse).",
        ("metric", "model_version"),
        registry=registry,
    )
    for metric, value in live_metrics.items():
        live.labels(metric=metric, model_version=model_version).set(value)
    for metric, value in degradation.items():
        ratio.labels(metric=metric, model_version=model_version).set(value)
    return generate_latest(registry).decode()
