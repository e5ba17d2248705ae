"""The Prometheus rules, scrape config and Grafana dashboard under deploy/, against the metric names.

Every ``mlp_*`` name in a PromQL expression must be one of ``ALL_METRICS`` and every name there
must be used somewhere; the exposition the drift report writes and the serving metrics must parse
as Prometheus text with the expected names, labels and values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.lib.monitoring import metrics as m
from ml_platform.lib.monitoring.metrics import (
    ALL_METRICS,
    DriftSample,
    drift_exposition,
    serving_metrics,
    write_textfile,
)

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alert-rules.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ml_platform.json"

HISTOGRAMS = frozenset({m.REQUEST_LATENCY, m.PREDICTION, m.PREDICTION_PROBABILITY})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: A metric name in PromQL: ``mlp_`` not preceded by a name character.
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])mlp_[A-Za-z0-9_:]*")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
DURATION = re.compile(r"^\d+[smhdw]$")


def metric_base(name: str) -> str:
    """The metric a series name belongs to: histogram series lose ``_bucket``/``_sum``/``_count``."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def names_in(expr: str) -> set[str]:
    """The metrics an expression reads (string literals such as label values are skipped)."""
    code = STRING_LITERAL.sub('""', expr)
    return {metric_base(name) for name in METRIC_NAME.findall(code)}


def rules() -> dict[str, Any]:
    loaded = yaml.safe_load(RULES.read_text())
    assert isinstance(loaded, dict)
    return loaded


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def rule_exprs() -> dict[str, str]:
    return {
        rule.get("alert") or rule["record"]: rule["expr"] for g in rules()["groups"] for rule in g["rules"]
    }


def panel_exprs() -> dict[str, str]:
    return {
        f"panel {panel['id']} {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel["targets"]
    }


# --- the metric names ------------------------------------------------------------------------------


def test_all_metrics_lists_every_name() -> None:
    expected = {
        "mlp_feature_drift_score",
        "mlp_feature_drift_severity",
        "mlp_feature_drift_threshold",
        "mlp_drift_report_timestamp_seconds",
        "mlp_drift_report_partition_timestamp_seconds",
        "mlp_champion_age_days",
        "mlp_retrain_requests_total",
        "mlp_live_metric",
        "mlp_live_degradation_ratio",
        "mlp_requests_total",
        "mlp_request_latency_seconds",
        "mlp_request_errors_total",
        "mlp_prediction_delay_minutes",
        "mlp_prediction_delay_probability",
        "mlp_stale_predictions_total",
    }
    assert expected == ALL_METRICS
    assert m.DRIFT_METRICS | m.SERVING_METRICS == ALL_METRICS
    assert not m.DRIFT_METRICS & m.SERVING_METRICS


def test_metric_name_parsing() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(mlp_request_latency_seconds_bucket{x="mlp_no"}[5m])))'
        " / mlp_requests_total + mlp_feature_drift_score_count"
    )
    assert names_in(expr) == {
        "mlp_request_latency_seconds",
        "mlp_requests_total",
        "mlp_feature_drift_score_count",
    }


def test_every_referenced_name_is_defined() -> None:
    undefined = {
        where: sorted(names_in(expr) - ALL_METRICS)
        for where, expr in {**rule_exprs(), **panel_exprs()}.items()
        if names_in(expr) - ALL_METRICS
    }
    assert not undefined, f"mlp_* names not in ALL_METRICS: {undefined}"
    # prometheus_client exposes no _sum for a histogram with negative buckets (the delay one).
    for where, expr in {**rule_exprs(), **panel_exprs()}.items():
        assert f"{m.PREDICTION}_sum" not in expr, where


def test_every_defined_name_is_used() -> None:
    used = set().union(*(names_in(expr) for expr in [*rule_exprs().values(), *panel_exprs().values()]))
    assert ALL_METRICS - used == set(), "metrics no rule or panel uses"
    # The dashboard alone shows every metric.
    shown = set().union(*(names_in(expr) for expr in panel_exprs().values()))
    assert ALL_METRICS - shown == set(), "metrics no panel shows"


# --- the Prometheus rule file and config -----------------------------------------------------------


def test_rule_file_shape() -> None:
    loaded = rules()
    assert set(loaded) == {"groups"}
    assert loaded["groups"], "no rule groups"
    group_names = [group["name"] for group in loaded["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in loaded["groups"]:
        assert isinstance(group["name"], str) and group["name"]
        assert isinstance(group["rules"], list) and group["rules"], group["name"]
        for rule in group["rules"]:
            assert "alert" in rule, f"{group['name']}: only alerting rules here: {rule}"
            name = rule["alert"]
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            assert DURATION.match(str(rule["for"])), f"{name}: for={rule['for']!r}"
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            annotations = rule["annotations"]
            assert annotations["summary"].strip() and annotations["description"].strip(), name
            assert "{{" in annotations["summary"] + annotations["description"], f"{name}: no templating"
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"


def test_rule_file_covers_serving_and_drift() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert {
        "MlpServingHigh5xxRatio",
        "MlpServingHighErrorRatio",
        "MlpServingHighLatencyP99",
        "MlpServingNoRequests",
        "MlpServingTargetDown",
        "MlpFeatureDriftError",
        "MlpDriftReportStale",
        "MlpChampionStale",
        "MlpLiveDegradation",
    } <= set(by_name)
    assert 'status=~"5.."' in by_name["MlpServingHigh5xxRatio"]
    latency = by_name["MlpServingHighLatencyP99"]
    assert "histogram_quantile(0.99" in latency and f"{m.REQUEST_LATENCY}_bucket" in latency
    assert re.search(r">\s*0\.2\b", latency)
    assert "up{" in by_name["MlpServingTargetDown"]
    assert re.search(rf"{m.FEATURE_DRIFT_SEVERITY}\)?\s*==\s*2", by_name["MlpFeatureDriftError"])
    stale = by_name["MlpDriftReportStale"]
    assert m.DRIFT_REPORT_TIMESTAMP in stale and "26 * 3600" in stale and "absent(" in stale
    assert m.MODEL_AGE_DAYS in by_name["MlpChampionStale"]
    assert re.search(r">\s*0\.05\b", by_name["MlpLiveDegradation"])


def test_stale_online_features_alert_on_their_share_of_predictions() -> None:
    """#15 item 5: stale answers are counted by the Bento and alerted on as a share of predictions."""
    expr = {rule["alert"]: rule["expr"] for rule in alerts()}["MlpServingStaleFeatures"]
    assert f"rate({m.STALE_PREDICTIONS}{{" in expr and f"rate({m.PREDICTION}_count{{" in expr
    assert "by (model_version)" in expr and re.search(r">\s*0\.05\b", expr)
    assert m.STALE_PREDICTIONS in m.SERVING_METRICS
    assert any(m.STALE_PREDICTIONS in e for e in panel_exprs().values()), "no panel shows stale answers"


def test_prometheus_config_scrapes_serving_and_textfile() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alert-rules.yml"]
    assert (PROMETHEUS.parent / config["rule_files"][0]).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["node-exporter"]["static_configs"][0]["targets"]
    # The rules select the serving targets by their job name, and fire when none is discovered.
    target_down = rule_exprs()["MlpServingTargetDown"]
    assert 'job="ml-platform-serving"' in target_down
    assert 'absent(up{job="ml-platform-serving"})' in target_down
    # The textfile job keeps the platform's series.
    keep = jobs["node-exporter"]["metric_relabel_configs"][0]
    assert keep["action"] == "keep" and re.fullmatch(keep["regex"], m.FEATURE_DRIFT_SCORE)


def test_prometheus_scrapes_every_serving_pod() -> None:
    """Pod discovery, not the Service: one series per pod, so rate() sees no false counter resets."""
    serving = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}[
        "ml-platform-serving"
    ]
    assert "static_configs" not in serving, "a static target is the Service: one random pod per scrape"
    assert serving["metrics_path"] == "/metrics"
    (sd,) = serving["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["ml-platform"]
    relabels = serving["relabel_configs"]

    def rules_on(source: str) -> list[dict[str, Any]]:
        return [rule for rule in relabels if source in rule.get("source_labels", [])]

    keeps = {
        rule["source_labels"][0]: rule["regex"]
        for rule in relabels
        if rule.get("action") == "keep" and len(rule["source_labels"]) == 1
    }
    assert keeps == {
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "ml-platform-serving",
    }
    (address,) = rules_on("__meta_kubernetes_pod_annotation_prometheus_io_port")
    assert address["source_labels"] == ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"]
    assert address["target_label"] == "__address__" and address["replacement"] == "$1:$2"
    assert address.get("action", "replace") == "replace"
    for joined in ("10.1.2.3:8080;3000", "10.1.2.3;3000"):
        match = re.fullmatch(address["regex"], joined)
        assert match is not None and match.expand(r"\1:\2") == "10.1.2.3:3000", joined
    (path,) = rules_on("__meta_kubernetes_pod_annotation_prometheus_io_path")
    assert path["target_label"] == "__metrics_path__" and path["regex"] == "(.+)"
    assert path.get("replacement", "$1") == "$1" and path.get("action", "replace") == "replace"
    # Target labels: where a series comes from, and the static service label; never one the
    # series carry themselves (model_version would become exported_model_version).
    targets = {rule["target_label"]: rule for rule in relabels if "target_label" in rule}
    assert targets["namespace"]["source_labels"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"]["source_labels"] == ["__meta_kubernetes_pod_name"]
    assert targets["service"]["replacement"] == "delay-model" and not targets["service"].get("source_labels")
    assert "model_version" not in targets
    assert not any(rule.get("action") in {"labelmap", "labeldrop", "labelkeep"} for rule in relabels)


#: What a promtool built without Kubernetes service discovery says of ``kubernetes_sd_configs``.
NO_KUBERNETES_SD = "field kubernetes_sd_configs not found in type config.ScrapeConfig"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing = "promtool is not on PATH (Debian's package prometheus ships it; .ci/run installs it)"
        if os.environ.get("CI") == "true":  # CI checks the rules with the real tool, never skips
            pytest.fail(missing, pytrace=False)
        pytest.skip(f"{missing}; the YAML shape is checked above")
    return promtool


def _promtool_check(promtool: str, command: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", command, str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(("command", "path"), [("rules", RULES), ("config", PROMETHEUS)])
def test_promtool_check(command: str, path: Path, tmp_path: Path) -> None:
    promtool = _promtool()
    result = _promtool_check(promtool, command, path)
    if command == "config" and NO_KUBERNETES_SD in result.stdout + result.stderr:
        # Debian's promtool is built without Kubernetes service discovery. It still checks all the
        # rest (the relabel rules, the rule file it names) with the pod discovery swapped for a
        # static target; the discovery block itself is test_prometheus_scrapes_every_serving_pod's.
        config = yaml.safe_load(PROMETHEUS.read_text())
        swapped = [job for job in config["scrape_configs"] if job.pop("kubernetes_sd_configs", None)]
        assert [job["job_name"] for job in swapped] == ["ml-platform-serving"]
        for job in swapped:
            job["static_configs"] = [{"targets": ["pod-discovered-by-kubernetes:3000"]}]
        (tmp_path / path.name).write_text(yaml.safe_dump(config), encoding="utf-8")
        for rule_file in config["rule_files"]:
            shutil.copy(PROMETHEUS.parent / rule_file, tmp_path / rule_file)
        result = _promtool_check(promtool, command, tmp_path / path.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --- the Grafana dashboard -------------------------------------------------------------------------


def test_dashboard_shape() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model_version"]["datasource"]["uid"] == "${datasource}"
    assert "model_version" in str(variables["model_version"]["query"])

    panels = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title}: no target"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target.get("datasource", panel["datasource"])["uid"] == "${datasource}", title
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid), title
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] >= 1 and grid["h"] >= 1, title
        assert grid["x"] + grid["w"] <= 24, title
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{title} overlaps another panel"
        cells |= area


def test_dashboard_has_the_panels() -> None:
    exprs = " ".join(panel_exprs().values())
    titles = " ".join(panel["title"].lower() for panel in dashboard()["panels"])
    for word in (
        "request rate",
        "error ratio",
        "latency",
        "drift score",
        "severity",
        "threshold",
        "champion age",
    ):
        assert word in titles, word
    for word in ("retrain", "live metric", "degradation"):
        assert word in titles, word
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert any(panel["type"] == "heatmap" for panel in dashboard()["panels"])
    assert 'model_version=~"$model_version"' in exprs
    assert "by (cause)" in exprs


# --- the drift exposition and the textfile ---------------------------------------------------------

WRITTEN_AT = datetime(2013, 3, 2, 1, 30, 15, 500000, tzinfo=UTC)
SAMPLES = [
    DriftSample("dep_delay", "psi", 0.31, warn=0.1, error=0.25),
    DriftSample("dep_delay", "ks", 0.08, warn=0.1, error=0.2),
    DriftSample("carrier", "tvd", 0.02, warn=0.1, error=0.2),
    DriftSample("carrier", "missing", 0.0, warn=0.01, error=0.05),
]
SEVERITIES = {"dep_delay": 2, "carrier": 0}


def exposition() -> str:
    return drift_exposition(
        SAMPLES, SEVERITIES, model_version="7", partition_day=date(2013, 3, 1), written_at=WRITTEN_AT
    )


def parsed(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_drift_exposition_samples() -> None:
    text = exposition()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == {
        m.FEATURE_DRIFT_SCORE,
        m.FEATURE_DRIFT_SEVERITY,
        m.DRIFT_THRESHOLD,
        m.DRIFT_REPORT_TIMESTAMP,
        m.DRIFT_REPORT_PARTITION,
    }
    assert set(families) <= ALL_METRICS
    assert {family.type for family in families.values()} == {"gauge"}
    values = parsed(text)
    assert len(values) == 4 + 2 + 2 * 4 + 1 + 1
    assert values[key(m.FEATURE_DRIFT_SCORE, feature="dep_delay", measure="psi", model_version="7")] == 0.31
    assert values[key(m.FEATURE_DRIFT_SCORE, feature="carrier", measure="missing", model_version="7")] == 0.0
    assert values[key(m.FEATURE_DRIFT_SEVERITY, feature="dep_delay", model_version="7")] == 2
    assert values[key(m.FEATURE_DRIFT_SEVERITY, feature="carrier", model_version="7")] == 0
    assert values[key(m.DRIFT_THRESHOLD, feature="dep_delay", measure="ks", level="warn")] == 0.1
    assert values[key(m.DRIFT_THRESHOLD, feature="dep_delay", measure="ks", level="error")] == 0.2
    assert values[key(m.DRIFT_REPORT_TIMESTAMP)] == WRITTEN_AT.timestamp() == 1362187815.5
    assert values[key(m.DRIFT_REPORT_PARTITION)] == 1362096000.0  # 2013-03-01T00:00:00Z


def test_drift_exposition_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="repeated"):
        drift_exposition(
            [*SAMPLES, SAMPLES[0]],
            SEVERITIES,
            model_version="7",
            partition_day=date(2013, 3, 1),
            written_at=WRITTEN_AT,
        )
    with pytest.raises(ValueError, match="severity"):
        drift_exposition(
            SAMPLES, {"carrier": 3}, model_version="7", partition_day=date(2013, 3, 1), written_at=WRITTEN_AT
        )
    with pytest.raises(ValueError, match="timezone"):
        drift_exposition(
            SAMPLES,
            SEVERITIES,
            model_version="7",
            partition_day=date(2013, 3, 1),
            written_at=datetime(2013, 3, 2),
        )


def test_drift_exposition_empty_report() -> None:
    values = parsed(
        drift_exposition([], {}, model_version="7", partition_day=date(2013, 3, 1), written_at=WRITTEN_AT)
    )
    assert set(values) == {key(m.DRIFT_REPORT_TIMESTAMP), key(m.DRIFT_REPORT_PARTITION)}


def test_write_textfile(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "collector" / "ml_platform_drift.prom"
    text = exposition()
    write_textfile(path, text)
    assert path.read_text() == text
    assert parsed(path.read_text()) == parsed(text)
    write_textfile(path, "# replaced\n")
    assert path.read_text() == "# replaced\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temp files left behind"


def test_write_textfile_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "drift.prom"
    write_textfile(path, "old\n")
    seen: list[str] = []

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # The new content is complete in a temp file of the same folder before the rename.
        assert Path(src).parent == path.parent and Path(src).read_text() == "new\n"
        assert not Path(src).name.endswith(".prom"), "the collector would read the temp file"
        seen.append(str(src))
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_textfile(path, "new\n")
    assert seen
    assert path.read_text() == "old\n", "a failed write must leave the previous file whole"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temp file not cleaned up"


# --- the serving metrics ---------------------------------------------------------------------------


def test_serving_metrics_register_on_a_fresh_registry() -> None:
    registry = CollectorRegistry()
    serving = serving_metrics(registry)
    serving.observe_request(model_version="7", endpoint="predict", status=200, seconds=0.003)
    serving.observe_request(model_version="7", endpoint="predict", status=500, seconds=0.3)
    serving.observe_error(model_version="7", endpoint="predict", kind="ValueError")
    serving.observe_prediction(model_version="7", delay_minutes=12.5, probability=0.4)
    serving.observe_stale(model_version="7", endpoint="predict_batch", count=2)

    text = generate_latest(registry).decode()
    sample_names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    bases = {metric_base(name) for name in sample_names if not name.endswith("_created")}
    assert bases == m.SERVING_METRICS
    assert bases <= ALL_METRICS
    for name in m.SERVING_METRICS:
        assert f"# TYPE {name} " in text, name

    values = parsed(text)
    assert values[key(m.REQUESTS, model_version="7", endpoint="predict", status="200")] == 1
    assert values[key(m.REQUESTS, model_version="7", endpoint="predict", status="500")] == 1
    assert values[key(m.REQUEST_ERRORS, model_version="7", endpoint="predict", kind="ValueError")] == 1
    assert values[key(m.STALE_PREDICTIONS, model_version="7", endpoint="predict_batch")] == 2
    bucket = f"{m.REQUEST_LATENCY}_bucket"
    assert values[key(bucket, model_version="7", endpoint="predict", le="0.0005")] == 0
    assert values[key(bucket, model_version="7", endpoint="predict", le="0.005")] == 1
    assert values[key(bucket, model_version="7", endpoint="predict", le="1.0")] == 2
    # Negative buckets: prometheus_client exposes no _sum for the delay histogram.
    assert values[key(f"{m.PREDICTION}_bucket", model_version="7", le="15.0")] == 1
    assert values[key(f"{m.PREDICTION}_bucket", model_version="7", le="5.0")] == 0
    assert values[key(f"{m.PREDICTION_PROBABILITY}_sum", model_version="7")] == 0.4
    assert values[key(f"{m.PREDICTION_PROBABILITY}_count", model_version="7")] == 1

    # Names are unique per registry: the Bento creates them once.
    with pytest.raises(ValueError, match="Duplicated"):
        serving_metrics(registry)
    # A second registry is independent.
    assert serving_metrics(CollectorRegistry()) is not serving
