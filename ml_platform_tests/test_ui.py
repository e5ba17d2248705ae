"""The Dagster webserver, on the instance the demo fills, serves the graph, checks and lineage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ml_platform.instance import open_instance
from ml_platform_tests.conftest import run_days

ROOT = Path(__file__).resolve().parents[1]

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    kinds
    dependencyKeys { path }
    partitionKeysByDimension { partitionKeys }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    assetMaterializations(partitions: ["2013-01-02"]) {
      partition
      metadataEntries { label }
    }
  }
}
"""

PERMISSIONS = "{ permissions { permission value } }"
LAUNCH = """
mutation {
  launchPipelineExecution(executionParams: {
    selector: {repositoryLocationName: "ml_platform", repositoryName: "__repository__",
               pipelineName: "deploy_job"},
    runConfigData: "{}"
  }) { __typename }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(port: int, query: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.live
def test_webserver_shows_groups_partitions_checks_and_lineage(make_settings, tmp_path, monkeypatch):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    settings = make_settings()
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # restored after the test
    with open_instance(settings) as instance:
        run_days(settings, instance, ["2013-01-01", "2013-01-02"])
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "MLP_ROOT_DIR": str(tmp_path)}
    # the auditors' read-only UI (`make audit-ui`), on the same instance, from the project root
    shutil.copy(ROOT / "workspace.yaml", tmp_path / "workspace.yaml")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlp")), "audit-ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        data = None
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, QUERY)["data"]
                if data and data["assetNodes"]:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data and data["assetNodes"], "the webserver did not serve the asset graph within 120 s"
        # read-only: the webserver grants no mutation, and refuses a launch
        permissions = {
            p["permission"]: p["value"] for p in _graphql(port, PERMISSIONS)["data"]["permissions"]
        }
        assert permissions["launch_pipeline_execution"] is False and not any(permissions.values()), (
            permissions
        )
        refused = _graphql(port, LAUNCH)["data"]["launchPipelineExecution"]
        assert refused["__typename"] == "UnauthorizedError", refused
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {n["groupName"] for n in nodes.values()} == {
        "ingest",
        "validation",
        "features",
        "training",
        "evaluation",
        "registry",
        "monitoring",
        "predictions",
        "serving",
    }
    serving = {name for name, n in nodes.items() if n["groupName"] == "serving"}
    assert {"online_features", "prediction_log", "delay_bento", "deployment"} <= serving, serving
    # the deployment hangs off the Bento, the Bento off the promotion: the graph leads back to the model
    assert [d["path"] for d in nodes["deployment"]["dependencyKeys"]] == [["delay_bento"]]
    assert ["model_promotion"] in [d["path"] for d in nodes["delay_bento"]["dependencyKeys"]]
    drift_checks = nodes["drift_report"]["assetChecksOrError"]["checks"]
    assert {c["name"]: c["blocking"] for c in drift_checks} == {"no_feature_drift": False}
    gates = nodes["model_evaluation"]["assetChecksOrError"]["checks"]
    assert {c["name"]: c["blocking"] for c in gates} == {
        "beats_naive_baseline": True,
        "not_worse_than_champion": True,
    }
    features = nodes["flight_features"]
    assert len(features["partitionKeysByDimension"][0]["partitionKeys"]) == 365
    assert {c["name"]: c["blocking"] for c in features["assetChecksOrError"]["checks"]} == {
        "no_look_ahead": True,
        "complete": True,
        "targets_consistent": True,
    }
    (materialization,) = features["assetMaterializations"]
    labels = {e["label"] for e in materialization["metadataEntries"]}
    assert {
        "lineage/upstream",
        "lineage/code_version",
        "lineage/git_commit",
        "storage/table_version",
        "storage/content_hash",
        "dagster/row_count",
    } <= labels


MODEL_WEEK = "2013-01-21"
MODEL_QUERY = """
{
  assetNodes(assetKeys: [{path: ["delay_model"]}, {path: ["model_evaluation"]},
                         {path: ["model_promotion"]}]) {
    assetKey { path }
    assetMaterializations(partitions: ["WEEK"]) {
      metadataEntries {
        label
        ... on UrlMetadataEntry { url }
        ... on TextMetadataEntry { text }
        ... on MarkdownMetadataEntry { mdStr }
      }
    }
    assetChecksOrError {
      ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } }
    }
  }
}
""".replace("WEEK", MODEL_WEEK)


@pytest.mark.slow
@pytest.mark.live
def test_a_model_week_launched_like_the_ui_does_shows_window_mlflow_links_checks_and_plots(
    make_settings, tmp_path, monkeypatch
):
    """`mlp ui` (dagster dev: webserver, daemon, multiprocess executor) runs a model week end to end."""
    from dagster_graphql import DagsterGraphQLClient

    from ml_platform.definitions import DATA_JOB, build_definitions
    from ml_platform.demo import days, run_partitions

    for name in ("dagster.yaml", "workspace.yaml"):  # a project root, as `make ui` runs in
        shutil.copy(ROOT / name, tmp_path / name)
    small = {
        "training_window_weeks": "2",
        "validation_days": "3",
        "hpo_trials": "2",
        "max_epochs": "4",
        "gate_metrics": '["roc_auc"]',
    }
    settings = make_settings(**{k: json.loads(v) if v.startswith("[") else v for k, v in small.items()})
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    with open_instance(settings) as instance:
        job = build_definitions(settings).resolve_job_def(DATA_JOB)
        outcomes = run_partitions(
            instance, job, days(settings.partition_start, settings.partition_start.replace(day=27))
        )
        assert all(o.success for o in outcomes), [o.error for o in outcomes if not o.success]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env.update({"MLP_ROOT_DIR": str(tmp_path), "MLP_GIT_COMMIT": "test"})
    env.update({f"MLP_{k.upper()}": v for k, v in small.items()})
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlp")), "ui", "--port", str(port)],
        env=env,
        stdout=(tmp_path / "ui.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id, last_error = None, None
        while run_id is None and time.monotonic() < deadline:
            try:
                run_id = client.submit_job_execution(
                    "weekly_model_job", tags={"dagster/partition": MODEL_WEEK}
                )
            except Exception as exc:  # the webserver and code server are still starting
                last_error = exc
                time.sleep(2)
        assert run_id, (
            f"dagster dev did not accept the run within 120 s: {last_error!r}\n"
            + (tmp_path / "ui.log").read_text()[-3000:]
        )
        status, deadline = None, time.monotonic() + 300
        while time.monotonic() < deadline:
            status = client.get_run_status(run_id).value
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", f"run {run_id} ended {status}"
        nodes = {
            "/".join(n["assetKey"]["path"]): n for n in _graphql(port, MODEL_QUERY)["data"]["assetNodes"]
        }
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)

    def entries(asset: str) -> dict[str, dict[str, str]]:
        (materialization,) = nodes[asset]["assetMaterializations"]
        return {e["label"]: e for e in materialization["metadataEntries"]}

    model = entries("delay_model")
    assert model["training/window"]["text"].startswith("2013-01-07..2013-01-20 (14 feature partitions)")
    assert model["mlflow/run_url"]["url"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert "/#/models/delay_model/versions/" in model["mlflow/model_version_url"]["url"]
    evaluation = entries("model_evaluation")
    for plot in ("residuals", "calibration", "metrics_over_time"):
        assert evaluation[f"evaluation/plot_{plot}"]["mdStr"].startswith(f"![{plot}](data:image/png;base64,")
    checks = nodes["model_evaluation"]["assetChecksOrError"]["checks"]
    assert {c["name"]: (c["blocking"], c["executionForLatestMaterialization"]["status"]) for c in checks} == {
        "beats_naive_baseline": (True, "SUCCEEDED"),
        "not_worse_than_champion": (True, "SUCCEEDED"),
    }
    assert entries("model_promotion")["registry/decision"]["text"] == "promote"
