"""``delay_bento`` through Dagster: the Bento of a promoted week, its metadata, and the Bento served.

The model is the serving tests' real trained one (``world``, ~15 s once per session), registered
again under this module's own model name in the same MLflow. The weekly upstream records
(``delay_model``, ``model_evaluation``, ``model_promotion``) are reported to a sqlite instance as
the graph writes them (the graph itself is run by ``ml_platform_tests/defs/test_model_graph.py``,
whose weekly job now ends with ``delay_bento``), so the test pays for one ``bentoml build`` and one
server start, not a training. Then ``mlp serve`` serves the champion's Bento on a free loopback
port and answers with the week's version; Ctrl-C (SIGINT to its process group) stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import mlflow
import pytest

from ml_platform.definitions import MODEL_JOB, build_definitions
from ml_platform.defs.serving import bento as asset
from ml_platform.lib import metadata as keys
from ml_platform.lib.online import build_snapshot, open_online_store
from ml_platform.lib.serving.bento import BENTO_NAME, LOCK_FILE, TORCH_CPU_INDEX, bentoml_command, bentoml_env
from ml_platform.settings import PlatformSettings
from ml_platform_tests.conftest import QUIET, failure_messages, latest
from ml_platform_tests.serving.conftest import MODEL_NAME, SNAPSHOT_DAY, ServingWorld, body_of, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WEEK, REJECTED_WEEK = "2013-01-21", "2013-01-28"
REGISTERED = "bento_test_model"
SMALL: dict[str, Any] = {
    "training_window_weeks": 2,
    "validation_days": 3,
    "partition_end": "2013-02-04",
    "executor": "in_process",
    "git_commit": "test",
}


@dataclass(frozen=True)
class BentoWorld:
    root: Path
    settings: PlatformSettings
    instance: dg.DagsterInstance
    version: str
    rejected_version: str
    run_id: str


def _report(instance: dg.DagsterInstance, asset_name: str, partition: str, metadata: dict[str, Any]) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset_name, partition=partition, metadata=metadata)
    )


def _week(instance: dg.DagsterInstance, week: str, version: str, run_id: str, *, passed: bool) -> None:
    """The records a weekly model run leaves: the model, its gates, and (when they passed) the promotion."""
    _report(
        instance,
        "delay_model",
        week,
        {
            keys.MLFLOW_MODEL_NAME: REGISTERED,
            keys.MLFLOW_MODEL_VERSION: version,
            keys.MLFLOW_RUN_ID: run_id,
            keys.MLFLOW_RUN_URL: dg.MetadataValue.url(f"http://127.0.0.1:5000/#/runs/{run_id}"),
        },
    )
    gate = {"name": "beats_naive_baseline", "passed": passed, "detail": "roc_auc 0.61 vs baseline 0.64"}
    _report(
        instance,
        "model_evaluation",
        week,
        {
            keys.MLFLOW_MODEL_VERSION: version,
            keys.MLFLOW_RUN_ID: run_id,
            keys.EVALUATION_PASSED: passed,
            keys.EVALUATION_GATES: dg.MetadataValue.json([gate]),
        },
    )
    if passed:
        _report(
            instance,
            "model_promotion",
            week,
            {keys.MLFLOW_MODEL_VERSION: version, keys.REGISTRY_DECISION: "promote"},
        )


@pytest.fixture(scope="module")
def bento_world(world: ServingWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoWorld]:
    root = tmp_path_factory.mktemp("bento")
    shutil.copy(ROOT / "dagster.yaml", root / "dagster.yaml")
    (root / ".dagster").mkdir()
    client = mlflow.MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    trained = client.get_model_version(MODEL_NAME, world.packaged.model_version)
    client.create_registered_model(REGISTERED)
    version = str(client.create_model_version(REGISTERED, trained.source, run_id=trained.run_id).version)
    rejected = str(client.create_model_version(REGISTERED, trained.source, run_id=trained.run_id).version)
    client.set_registered_model_alias(REGISTERED, "champion", version)
    client.set_registered_model_alias(REGISTERED, "challenger", rejected)
    settings = PlatformSettings(  # type: ignore[call-arg]
        root_dir=root, registered_model=REGISTERED, mlflow_tracking_uri=world.tracking_uri, **SMALL
    )
    store = open_online_store(None, settings.online_store_path)
    store.write(build_snapshot(SNAPSHOT_DAY, world.features, world.weather))
    store.close()
    with dg.DagsterInstance.local_temp(
        tempdir=str(root / ".dagster"), overrides={"telemetry": {"enabled": False}}
    ) as instance:
        _week(instance, WEEK, version, str(trained.run_id), passed=True)
        _week(instance, REJECTED_WEEK, rejected, str(trained.run_id), passed=False)
        yield BentoWorld(root, settings, instance, version, rejected, str(trained.run_id))


def _materialize(bw: BentoWorld, week: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(bw.settings).resolve_job_def(MODEL_JOB)
    return job.execute_in_process(
        partition_key=week,
        instance=bw.instance,
        run_config=QUIET,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(asset.NAME)],
    )


def _bentoml_get(home: Path, tag: str) -> dict[str, Any]:
    out = subprocess.run(
        [bentoml_command(), "get", tag, "-o", "json"],
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="module")
def built(bento_world: BentoWorld) -> dg.AssetMaterialization:
    started = time.perf_counter()
    result = _materialize(bento_world, WEEK)
    assert result.success, failure_messages(result)
    print(f"delay_bento[{WEEK}] materialized in {time.perf_counter() - started:.1f} s")
    return latest(bento_world.instance, asset.NAME, WEEK)


def test_the_bento_of_the_promoted_week_records_its_model_run_and_lock(
    bento_world: BentoWorld, built: dg.AssetMaterialization
) -> None:
    meta = built.metadata
    home = bento_world.settings.bentoml_home
    tag = str(meta[asset.BENTO_TAG].value)
    assert tag.startswith(f"{BENTO_NAME}:v{bento_world.version}-")
    assert built.tags["dagster/data_version"] == tag
    assert str(meta[keys.MLFLOW_MODEL_VERSION].value) == bento_world.version
    assert str(meta[keys.MLFLOW_MODEL_NAME].value) == REGISTERED
    assert str(meta[keys.MLFLOW_RUN_ID].value) == bento_world.run_id
    assert bento_world.run_id in str(meta[keys.MLFLOW_RUN_URL].value)
    assert meta[asset.ALIASES_AT_BUILD].value == ["champion"]
    model_tag = str(meta[asset.BENTO_MODEL_TAG].value)
    assert model_tag == f"delay_model:v{bento_world.version}-{bento_world.run_id[:12]}"
    upstream = {u["asset"]: u for u in meta[keys.LINEAGE_UPSTREAM].value}  # type: ignore[union-attr]
    assert upstream["delay_model"]["model_version"] == bento_world.version
    assert upstream["model_promotion"]["decision"] == "promote"

    # the Bento is in the platform's BENTOML_HOME, with its labels, the model and the argument
    path = Path(str(meta[asset.BENTO_PATH].value))
    assert path == home / "bentos" / BENTO_NAME / tag.split(":")[1] and path.is_dir()
    info = _bentoml_get(home, tag)
    assert info["labels"] == meta[asset.BENTO_LABELS].value
    assert info["labels"] == {
        "ml-platform/model": "delay_model",  # the service's own label
        "model_name": REGISTERED,
        "model_version": bento_world.version,
        "mlflow_run_id": bento_world.run_id,
        "git_commit": "test",
        "dagster_run_id": meta[asset.BENTO_LABELS].value["dagster_run_id"],  # type: ignore[index]
        "partition": WEEK,
    }
    # the service references the packaged model; the argument is stored in the Bento
    assert [m["tag"] for m in info["services"][0]["models"]] == [model_tag]
    assert info["args"] == {"model_tag": model_tag}
    assert (home / "models" / "delay_model" / model_tag.split(":")[1]).is_dir()

    # only the package's source and the lock; the recorded sha256 is the lock's
    src = path / "src"
    assert (src / "ml_platform" / "serving" / "service.py").is_file()
    assert not (src / "ml_platform_tests").exists() and not list(src.rglob("*.pyc"))
    assert not list(src.rglob("*.sqlite")) and not list(src.rglob("*.db"))
    lock = (src / LOCK_FILE).read_bytes()
    assert hashlib.sha256(lock).hexdigest() == meta[asset.LOCK_SHA256].value
    pins = [line for line in lock.decode().splitlines() if "==" in line and not line.startswith("#")]
    assert len(pins) == meta[asset.LOCK_PINS].value
    assert "torch==2.13.0" in pins and "bentoml==1.4.40" in pins
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in lock.decode()
    installed = (path / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in installed and TORCH_CPU_INDEX in installed
    # the image: BentoML's python:3.11-slim, user bentoml with UID/GID 1034 (deploy/bento/base)
    assert info["image"]["base_image"] == "python:3.11-slim"
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert "ARG BENTO_USER_UID=1034" in dockerfile and "USER bentoml" in dockerfile
    assert {"name": "UV_INDEX_STRATEGY", "value": "unsafe-best-match", "stage": "build"} in info["envs"]


def test_rematerializing_the_same_content_reuses_the_bento(
    bento_world: BentoWorld, built: dg.AssetMaterialization
) -> None:
    result = _materialize(bento_world, WEEK)
    assert result.success, failure_messages(result)
    again = latest(bento_world.instance, asset.NAME, WEEK).metadata
    assert again[asset.BENTO_TAG].value == built.metadata[asset.BENTO_TAG].value
    assert again[asset.BENTO_REUSED].value is True
    bentos = bento_world.settings.bentoml_home / "bentos" / BENTO_NAME
    assert len([p for p in bentos.iterdir() if p.is_dir()]) == 1  # and the `latest` pointer


def test_a_version_that_failed_its_gates_gets_no_bento(bento_world: BentoWorld) -> None:
    result = _materialize(bento_world, REJECTED_WEEK)
    assert not result.success
    message = failure_messages(result)
    assert f"v{bento_world.rejected_version} failed its evaluation gates" in message
    assert "beats_naive_baseline" in message and "gets no Bento" in message
    records = bento_world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset.NAME), asset_partitions=[REJECTED_WEEK]), limit=1
    ).records
    assert records == []


def _serve_env(bw: BentoWorld) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "BENTOML_", "DAGSTER_"))},
        "MLP_ROOT_DIR": str(bw.root),
        "MLP_REGISTERED_MODEL": REGISTERED,
        "MLP_MLFLOW_TRACKING_URI": bw.settings.mlflow_tracking_uri or "",
        "MLP_GIT_COMMIT": "test",
        "MLP_PARTITION_END": "2013-02-04",
    }


def _ctrl_c(process: subprocess.Popen[bytes]) -> int:
    """Ctrl-C to the process group of ``process`` (as a terminal sends it); its exit code within 60 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@pytest.mark.live
def test_mlp_serve_serves_the_champions_bento_until_ctrl_c(
    bento_world: BentoWorld, built: dg.AssetMaterialization, world: ServingWorld
) -> None:
    port = free_port()
    log_path = bento_world.root / "mlp-serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlp")), "serve", "--port", str(port)],
            env=_serve_env(bento_world),
            cwd=bento_world.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C signals the whole foreground group
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert process.poll() is None, log_path.read_text(errors="replace")[-6000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail(f"not ready in 120 s:\n{log_path.read_text(errors='replace')[-6000:]}")
            row = world.known_flights(1).row(0, named=True)
            response = httpx.post(
                f"{url}/predict", json=body_of(row), headers={"X-Request-ID": "mlp-serve-1"}, timeout=30
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["model_name"] == REGISTERED
            assert answer["model_version"] == bento_world.version
            assert response.headers["X-Model-Version"] == bento_world.version
        finally:
            code = _ctrl_c(process)
    printed = log_path.read_text(errors="replace")
    tag = str(built.metadata[asset.BENTO_TAG].value)
    assert f"{REGISTERED} v{bento_world.version}" in printed and tag in printed, printed[-3000:]
    assert (
        f"URL: http://127.0.0.1:{port}" in printed
        and f"curl -s -X POST http://127.0.0.1:{port}/predict" in printed
    )
    assert f"snapshot of {SNAPSHOT_DAY}" in printed
    assert f"Bento {tag};" in printed, printed[-3000:]  # the service's start-up line names its Bento
    assert code == 0 and "stopped." in printed, printed[-3000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1.0)
    # the served Bento's log line names exactly that Bento (mlp lineage <request id> follows it)
    (line,) = _log_lines(bento_world.settings.prediction_log_dir, "mlp-serve-1")
    assert line["bento_tag"] == tag and line["model_version"] == bento_world.version


def _log_lines(folder: Path, request_id: str) -> list[dict[str, Any]]:
    """The prediction-log lines of ``request_id`` under ``folder`` (the server has stopped: all written)."""
    return [
        line
        for path in sorted(folder.glob("*/*.jsonl"))
        for line in map(json.loads, path.read_text().splitlines())
        if line["request_id"] == request_id
    ]


def test_mlp_serve_says_what_to_run_when_the_champion_has_no_bento(
    world: ServingWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ml_platform.cli import app
    from ml_platform.instance import open_instance

    name = "bento_test_unbuilt"
    client = mlflow.MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    trained = client.get_model_version(MODEL_NAME, world.packaged.model_version)
    client.create_registered_model(name)
    version = str(client.create_model_version(name, trained.source, run_id=trained.run_id).version)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    for var in [v for v in os.environ if v.startswith("MLP_")]:
        monkeypatch.delenv(var)
    env = {"MLP_ROOT_DIR": str(tmp_path), "MLP_MLFLOW_TRACKING_URI": world.tracking_uri}
    for var, value in {**env, "MLP_REGISTERED_MODEL": name, "DAGSTER_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(var, value)
    runner = CliRunner()

    # registered, no champion yet
    out = runner.invoke(app, ["serve"])
    assert out.exit_code == 1 and f"{name} has no champion yet" in out.output, out.output

    # a champion whose week was trained, but no Bento built for it
    client.set_registered_model_alias(name, "champion", version)
    settings = PlatformSettings()
    instance = open_instance(settings)
    _report(instance, "delay_model", WEEK, {keys.MLFLOW_MODEL_VERSION: version, keys.MLFLOW_RUN_ID: "r"})
    out = runner.invoke(app, ["serve"])
    assert out.exit_code == 1, out.output
    text = " ".join(out.output.split())
    assert f"No Bento of the champion, {name} v{version}, yet." in text
    assert f"materialize delay_bento[{WEEK}]" in text

    # nothing registered at all
    monkeypatch.setenv("MLP_REGISTERED_MODEL", "bento_test_nothing")
    out = runner.invoke(app, ["serve"])
    assert out.exit_code == 1 and "is not registered" in out.output


@pytest.mark.live
def test_the_demo_serves_the_champion_asks_three_flights_and_stops_it(
    bento_world: BentoWorld, built: dg.AssetMaterialization, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`make demo`'s last step: the champion's Bento answers with its version, then stops."""
    from ml_platform.cli import DEMO_FLIGHTS, _demo_serve
    from ml_platform.settings import PlatformSettings

    for name in [n for n in os.environ if n.startswith(("MLP_", "BENTOML_"))]:
        monkeypatch.delenv(name)
    for name, value in _serve_env(bento_world).items():
        if name.startswith("MLP_"):
            monkeypatch.setenv(name, value)
    _demo_serve(PlatformSettings())
    printed = capsys.readouterr().out
    tag = str(built.metadata[asset.BENTO_TAG].value)
    assert tag in printed and f"flights of {SNAPSHOT_DAY}" in printed, printed
    assert printed.count(f"{REGISTERED} v{bento_world.version}") == len(DEMO_FLIGHTS), printed
    assert "Bento stopped (exit code 0)" in printed, printed


@pytest.mark.live
def test_the_deployment_asset_deploys_the_champions_bento_through_the_supervisor(
    bento_world: BentoWorld, built: dg.AssetMaterialization, world: ServingWorld
) -> None:
    """`mlp deploy serve` runs; the `deployment` asset (and its sensor) put the champion's Bento behind it."""
    from ml_platform.defs.serving import deployment
    from ml_platform.lib.deploy.events import DeploymentLog
    from ml_platform.lib.deploy.supervisor import read_status, supervisor_running

    bw = bento_world
    tag = str(built.metadata[asset.BENTO_TAG].value)
    record = asset.bento_record(bw.instance, REGISTERED, bw.version)
    assert record is not None
    definitions = build_definitions(bw.settings)
    job = definitions.resolve_job_def(deployment.JOB)

    def deploy(**config: Any) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(
            instance=bw.instance,
            run_config={**QUIET, "ops": {deployment.NAME: {"config": config}}},
            raise_on_error=False,
        )

    # the sensor asks for a deployment of the Bento built while its version was champion, once
    sensor = definitions.get_sensor_def(deployment.SENSOR)
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=bw.instance))
    [request] = first.run_requests or []
    assert request.run_key == f"deploy:{tag}"
    assert request.run_config["ops"][deployment.NAME]["config"]["model_version"] == bw.version
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=bw.instance, cursor=first.cursor))
    assert not again.run_requests

    port = free_port()
    log_path = bw.root / "mlp-deploy-serve.log"
    status_path = bw.settings.deployment_dir / "status.json"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlp")), "deploy", "serve", "--port", str(port)],
            env=_serve_env(bw),
            cwd=bw.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not supervisor_running(read_status(status_path)):
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
                time.sleep(0.2)

            result = deploy(strategy="blue_green", reason="first deploy of the test")
            assert result.success, failure_messages(result)
            [mat] = result.asset_materializations_for_node(deployment.NAME)
            meta = {k: v.value for k, v in mat.metadata.items()}
            assert meta[deployment.APPLIED] == "applied", log_path.read_text()[-4000:]
            assert meta[deployment.ROUTER_URL] == f"http://127.0.0.1:{port}"
            assert meta[deployment.MODE] == "single" and meta[deployment.GENERATION] == 1
            assert meta[asset.BENTO_TAG] == tag and meta[keys.MLFLOW_MODEL_VERSION] == bw.version
            assert meta[keys.LINEAGE_UPSTREAM] == [
                {
                    "asset": asset.NAME,
                    "partition": WEEK,
                    "run_id": record.run_id,
                    "bento_tag": tag,
                    "model_version": bw.version,
                    "role": "champion",
                }
            ]
            champion = meta[deployment.PROCESSES]["champion"]
            assert champion["healthy"] is True and champion["bento_tag"] == tag and champion["pid"] > 0
            assert meta[deployment.REQUESTED_BY] == f"dagster:run {result.run_id}"

            row = world.known_flights(1).row(0, named=True)
            answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body_of(row), timeout=30)
            assert answer.status_code == 200, answer.text
            assert (
                answer.headers["X-Model-Version"] == bw.version
                and answer.headers["X-Served-By"] == "champion"
            )
            request_id = answer.json()["request_id"]

            unchanged = deploy()
            assert unchanged.success, failure_messages(unchanged)
            [mat] = unchanged.asset_materializations_for_node(deployment.NAME)
            assert str(mat.metadata[deployment.PLAN].value).startswith("unchanged")
            assert mat.metadata[deployment.GENERATION].value == 1

            # the rejected week built no Bento: nothing is deployed from a guess
            refused = deploy(model_version=bw.rejected_version)
            assert not refused.success
            assert f"no {asset.NAME} materialization built {REGISTERED} v{bw.rejected_version}" in (
                failure_messages(refused)
            )
            no_canary = deploy(rollback=True)
            assert not no_canary.success and "no challenger to roll back" in failure_messages(no_canary)

            shown = subprocess.run(
                [str(Path(sys.executable).with_name("mlp")), "deploy", "status"],
                env=_serve_env(bw),
                cwd=bw.root,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            assert f"serves http://127.0.0.1:{port}" in shown.stdout and "deploy" in shown.stdout
        finally:
            code = _ctrl_c(process)
    printed = log_path.read_text(errors="replace")
    assert code == 0 and "stopped." in printed, printed[-3000:]
    status = read_status(status_path)
    assert status is not None and status["stopped"] and not supervisor_running(status)
    # the Bento the supervisor deployed logged its own tag with the prediction
    (line,) = _log_lines(bw.settings.prediction_log_dir, request_id)
    assert line["bento_tag"] == tag and line["model_version"] == bw.version
    events = DeploymentLog(bw.settings.deployment_log_table).events()
    assert [(e.action, e.bento_tag, e.model_version) for e in events] == [
        ("deploy", tag, bw.version),
        ("stop", tag, bw.version),
    ]
    assert (
        events[0].actor == f"dagster:run {result.run_id}" and events[0].reason == "first deploy of the test"
    )
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/-/router", timeout=1.0)
