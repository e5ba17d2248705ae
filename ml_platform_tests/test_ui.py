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
    partitionKeysByDimension { partitionKeys }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    assetMaterializations(partitions: ["2013-01-02"]) {
      partition
      metadataEntries { label }
    }
  }
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
def test_webserver_shows_groups_partitions_checks_and_lineage(make_settings, tmp_path, monkeypatch):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    settings = make_settings()
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # restored after the test
    with open_instance(settings) as instance:
        run_days(settings, instance, ["2013-01-01", "2013-01-02"])
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), "MLP_ROOT_DIR": str(tmp_path)}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            str(ROOT / "workspace.yaml"),
            "-p",
            str(port),
        ],
        cwd=settings.dagster_home,
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
    }
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
