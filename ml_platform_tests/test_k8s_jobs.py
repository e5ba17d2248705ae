"""The Kubernetes executor: every asset's step becomes a valid Job manifest with the pod it declares.

The manifests are built with dagster-k8s's own code path (``K8sContainerContext`` merged with the
step's ``dagster-k8s/config`` tags, then ``construct_dagster_k8s_job``, as ``K8sStepHandler`` does)
and validated against the Kubernetes OpenAPI schema by kubernetes-validate. The step tags come from
the execution plan of the job that runs the asset, so whatever launches a run of that job (the UI,
a backfill, the retrain sensor, a schedule) gets the same pods: the tags are op tags, not run tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
from dagster._core.execution.api import create_execution_plan

from ml_platform.definitions import DATA_JOB, MODEL_JOB, MONITORING_JOB, build_definitions
from ml_platform.defs.k8s import ASSET_LABEL, GPU_RESOURCE, MODEL_LABEL, TEAM_LABEL, k8s_tags
from ml_platform.defs.monitoring.sensors import SENSOR
from ml_platform.settings import PlatformSettings

K8S_VERSION = "1.30.0"
DAY = "2013-03-04"  # a Monday: a daily and a weekly partition key
GPU_ASSETS = {"delay_model"}
#: What the Helm chart's K8sRunLauncher hands the step handler besides the executor's config.
RUN_LAUNCHER = SimpleNamespace(
    job_image=None,
    dagster_home="/opt/dagster/dagster_home",
    instance_config_map="dagster-instance",
    postgres_password_secret="dagster-postgresql-secret",
)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _k8s_settings(make_settings: Callable[..., PlatformSettings], **overrides: Any) -> PlatformSettings:
    return make_settings(
        executor="k8s", k8s_namespace="mlp-prod", k8s_image="registry/mlp:abc123", **overrides
    )


def _executor_config(defs: dg.Definitions) -> dict[str, Any]:
    """The k8s executor's resolved config, as its ``init_context.executor_config`` will be."""
    executor = defs.executor
    assert isinstance(executor, dg.ExecutorDefinition) and executor.name == "k8s"
    resolved = executor.config_schema.resolve_config({})  # type: ignore[attr-defined]
    assert resolved.success, resolved.errors
    return dict(resolved.value["config"])


def _step_tags(job: dg.JobDefinition, partition: str = DAY, **run_tags: str) -> dict[str, Mapping[str, str]]:
    """Step key -> the tags the step handler reads (``StepHandlerContext.step_tags``)."""
    plan = create_execution_plan(job, tags={"dagster/partition": partition, **run_tags})
    return {step.key: step.tags or {} for step in plan.get_all_steps_in_topo_order()}


def _all_step_tags(defs: dg.Definitions) -> dict[str, Mapping[str, str]]:
    tags: dict[str, Mapping[str, str]] = {}
    for name in (DATA_JOB, MODEL_JOB, MONITORING_JOB, "deploy_job"):
        tags.update(_step_tags(defs.resolve_job_def(name)))
    return tags


def _manifest(exc_cfg: Mapping[str, Any], step_key: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """The Job manifest ``K8sStepHandler.launch_step`` would create for this step (no cluster)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )
    from kubernetes.client import ApiClient

    # as k8s_job_executor builds its container context, then K8sStepHandler._get_container_context
    context = K8sContainerContext(
        image_pull_policy=exc_cfg.get("image_pull_policy"),
        service_account_name=exc_cfg.get("service_account_name"),
        env_secrets=exc_cfg.get("env_secrets"),
        labels=exc_cfg.get("labels"),
        namespace=exc_cfg.get("job_namespace"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc_cfg.get("step_k8s_config", {})),
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    job_config = context.get_k8s_job_config(exc_cfg.get("job_image"), RUN_LAUNCHER)
    run_id = "0c1f8a3e-5b7d-4c2a-9e61-7f4b2d9a8c10"
    job_name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "weekly_model_job", "dagster/op": step_key, "dagster/run-id": run_id},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
    )
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(job)
    return manifest


@pytest.mark.parametrize("gpus", [1, 0])
def test_every_asset_step_becomes_a_valid_job_with_its_resources_and_cost_labels(make_settings, gpus):
    import kubernetes_validate

    defs = build_definitions(_k8s_settings(make_settings, training_gpus=gpus, cost_team="Flight Ops"))
    exc_cfg = _executor_config(defs)
    steps = _all_step_tags(defs)
    assets = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert assets <= set(steps), f"assets without a step in the jobs: {assets - set(steps)}"
    for asset in sorted(assets):
        manifest = _manifest(exc_cfg, asset, steps[asset])
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        pod = manifest["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["image"] == "registry/mlp:abc123"
        assert pod["spec"]["serviceAccountName"] == "ml-platform"
        assert {"secretRef": {"name": "ml-platform-env"}} in container["envFrom"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits), asset
        for labels in (pod["metadata"]["labels"], manifest["metadata"]["labels"]):
            assert labels[TEAM_LABEL] == "flight-ops"
            assert labels[ASSET_LABEL] == asset
            assert labels[MODEL_LABEL] in {"shared", "delay_model"}
            assert all(_LABEL_KEY.match(k) and _LABEL_VALUE.match(v) for k, v in labels.items()), labels
        wants_gpu = gpus > 0 and asset in GPU_ASSETS
        assert (GPU_RESOURCE in limits) == wants_gpu, asset
        assert GPU_RESOURCE not in requests
        assert steps[asset]["ml_platform/accelerator"] == ("gpu" if wants_gpu else "cpu")
        if wants_gpu:
            assert limits[GPU_RESOURCE] == str(gpus)
            assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
                "tolerations"
            ]
            assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        else:
            assert "tolerations" not in pod["spec"] and "nodeSelector" not in pod["spec"]
    assert {a for a in assets if steps[a]["ml_platform/accelerator"] == "gpu"} == (
        GPU_ASSETS if gpus else set()
    )


def test_k8s_setting_builds_the_k8s_job_executor_from_settings(make_settings):
    settings = _k8s_settings(make_settings, k8s_env_secrets=["a", "b"], max_concurrent=5)
    defs = build_definitions(settings)
    exc_cfg = _executor_config(defs)
    assert exc_cfg["job_namespace"] == "mlp-prod"
    assert exc_cfg["job_image"] == "registry/mlp:abc123"
    assert exc_cfg["service_account_name"] == "ml-platform"
    assert exc_cfg["env_secrets"] == ["a", "b"]
    assert exc_cfg["labels"] == {TEAM_LABEL: "ml-platform"}
    assert exc_cfg["max_concurrent"] == 5
    # every job of the code location runs on it
    for name in (DATA_JOB, MODEL_JOB, MONITORING_JOB):
        assert defs.resolve_job_def(name).executor_def.name == "k8s"
    # the local executors stay as they were
    assert build_definitions(make_settings(executor="in_process")).executor is dg.in_process_executor
    assert build_definitions(make_settings(executor="multiprocess")).executor.name == "multiprocess"  # type: ignore[union-attr]


def test_sensor_and_backfill_runs_get_the_same_step_tags(make_settings):
    defs = build_definitions(_k8s_settings(make_settings, training_gpus=1))
    job = defs.resolve_job_def(MODEL_JOB)
    ui_run = _step_tags(job)
    # the retrain sensor's RunRequest targets the weekly job by name, with its own run tags
    sensor = defs.resolve_sensor_def(SENSOR)
    assert sensor.job_name == MODEL_JOB
    sensor_job = defs.resolve_job_def(sensor.job_name)
    sensor_run = _step_tags(
        sensor_job, **{"ml_platform/retrain_cause": "drift", "dagster/sensor_name": SENSOR}
    )
    assert sensor_run == ui_run
    assert ui_run["delay_model"]["ml_platform/accelerator"] == "gpu"
    # a backfill (one partition per run, possibly a subset of the job's assets) keeps the op tags
    for week in job.partitions_def.get_partition_keys()[:3]:  # type: ignore[union-attr]
        subset = job.get_subset(asset_selection={dg.AssetKey("delay_model")})
        assert _step_tags(subset, partition=week, **{"dagster/backfill": "abc"}) == {
            "delay_model": ui_run["delay_model"]
        }
    # run-level tags cannot change a step's pod: the k8s executor reads the step's tags only
    overridden = _step_tags(job, **{"dagster-k8s/config": '{"container_config": {"resources": {}}}'})
    assert overridden == ui_run


def test_k8s_tags_are_plain_data_with_valid_label_values():
    tags = k8s_tags("Some Asset/With*Odd_chars" + "x" * 80, "medium", model="Delay Model")
    labels = tags["dagster-k8s/config"]["pod_template_spec_metadata"]["labels"]
    assert all(_LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
    assert labels[MODEL_LABEL] == "delay-model"
    assert tags["ml_platform/accelerator"] == "cpu"


def test_gpu_model_runs_carry_the_run_tag_the_instance_limits(make_settings):
    """deploy/dagster allows one run tagged ml_platform/accelerator=gpu at a time: it must be a run tag."""
    gpu = build_definitions(make_settings(training_gpus=1)).resolve_job_def(MODEL_JOB)
    cpu = build_definitions(make_settings()).resolve_job_def(MODEL_JOB)
    assert gpu.tags["ml_platform/accelerator"] == "gpu"
    assert cpu.tags["ml_platform/accelerator"] == "cpu"


def test_no_job_retries_a_failed_step(make_settings):
    """A run whose worker died is retried; a failed gate or quarantine is a decision, not retried."""
    defs = build_definitions(make_settings())
    for name in (DATA_JOB, MODEL_JOB, MONITORING_JOB):
        assert defs.resolve_job_def(name).tags["dagster/retry_on_asset_or_op_failure"] == "false", name
