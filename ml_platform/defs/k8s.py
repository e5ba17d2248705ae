"""What each asset's step needs from Kubernetes, as ``dagster-k8s/config`` op tags.

Plain dictionaries only: this module does not import dagster-k8s (nor kubernetes), so loading
the Definitions stays fast. ``dagster_k8s.k8s_job_executor`` reads the tags of each *step* (op tags,
not run tags), so they apply however the run was launched: UI, backfill, sensor or schedule.

Cost split: every step pod carries ``ml-platform/asset`` and ``ml-platform/model`` from these tags
and ``ml-platform/team`` from the executor's ``labels`` (``MLP_COST_TEAM``, see
``ml_platform.definitions``). The partition is not a pod label: the pod's ``dagster/run-id`` label
leads to the run, whose ``dagster/partition`` tag names it (docs/architecture.md).
"""

from __future__ import annotations

import re
from typing import Any, Literal

Size = Literal["small", "medium", "train"]

TEAM_LABEL = "ml-platform/team"
MODEL_LABEL = "ml-platform/model"
ASSET_LABEL = "ml-platform/asset"
ACCELERATOR_TAG = "ml_platform/accelerator"
K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
#: The ``ml-platform/model`` value of steps that serve every model (the data and monitoring layers).
SHARED = "shared"
#: The model whose cost the training, evaluation, promotion, scoring and monitoring steps carry.
DELAY_MODEL = "delay_model"

#: Container requests and limits per size (``train``: delay_model, whose Optuna search runs inside).
SIZES: dict[str, dict[str, dict[str, str]]] = {
    "small": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    "medium": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "train": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
}

_LABEL_VALUE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$")


def label_value(value: str) -> str:
    """``value`` as a valid Kubernetes label value (<= 63 chars of [a-zA-Z0-9._-], alphanumeric ends)."""
    cleaned = re.sub(r"[^a-zA-Z0-9._-]", "-", value.lower())[:63].strip("._-")
    if not _LABEL_VALUE.match(cleaned):  # pragma: no cover - the substitution above guarantees it
        raise ValueError(f"cannot make a Kubernetes label value of {value!r}")
    return cleaned


def k8s_tags(asset: str, size: Size, gpus: int = 0, model: str | None = None) -> dict[str, Any]:
    """Op tags declaring what ``asset``'s step needs; the Kubernetes executor turns them into its pod.

    ``gpus`` > 0 adds an ``nvidia.com/gpu`` limit, a toleration of the GPU nodes' taint and a node
    selector. ``ml_platform/accelerator`` lets the UI and run queues tell GPU steps apart.
    """
    resources = {kind: dict(values) for kind, values in SIZES[size].items()}
    pod_spec: dict[str, Any] = {}
    if gpus:
        resources["limits"][GPU_RESOURCE] = str(gpus)
        pod_spec = {
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "node_selector": dict(GPU_NODE_SELECTOR),
        }
    labels = {ASSET_LABEL: label_value(asset), MODEL_LABEL: label_value(model or SHARED)}
    config: dict[str, Any] = {
        "container_config": {"resources": resources},
        "pod_template_spec_metadata": {"labels": labels},
        "job_metadata": {"labels": dict(labels)},
    }
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return {ACCELERATOR_TAG: "gpu" if gpus else "cpu", K8S_CONFIG_TAG: config}


def resource_tags(gpus: int, model: str = DELAY_MODEL) -> dict[str, Any]:
    """The training step's tags (kept for callers of the former ``training.assets.resource_tags``)."""
    return k8s_tags(model, "train", gpus=gpus, model=model)
