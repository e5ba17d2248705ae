"""The production Helm values: real chart keys, and the invariants the deployment relies on.

Offline: ``deploy/helm/values-production.yaml`` is parsed with ``yaml.safe_load`` and every key
path is looked up in the vendored excerpt of the official chart's values file
(``deploy/helm/reference/dagster-values.excerpt.yaml``). No ``helm`` binary, no cluster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
REFERENCE = ROOT / "deploy" / "helm" / "reference" / "dagster-values.excerpt.yaml"

#: Keys the chart accepts in place of a key of its example entry (upstream documents
#: ``codeServerArgs`` in a comment on ``dagsterApiGrpcArgs``).
ALIASES = {"codeServerArgs": "dagsterApiGrpcArgs"}
#: A key that, holding a non-empty literal, would be a secret written into the file.
SECRET_KEY = re.compile(r"password|passwd|secret(?!s$|name$)|token|api_?key", re.IGNORECASE)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _load(VALUES)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return _load(REFERENCE)


def _unknown_keys(ours: Any, ref: Any, path: str) -> list[str]:
    """Key paths of ``ours`` the reference does not have.

    Where the reference holds an empty map, an empty list or null, the value is free-form
    (resources, env, securityContext, tag limits, ...) and is not descended into. A list of maps
    with an example entry (the user deployments) is checked entry by entry against that entry.
    """
    if isinstance(ours, dict) and isinstance(ref, dict) and ref:
        missing = []
        for key, value in ours.items():
            ref_key = key if key in ref else ALIASES.get(key, key)
            if ref_key not in ref:
                missing.append(f"{path}.{key}")
                continue
            missing += _unknown_keys(value, ref[ref_key], f"{path}.{key}")
        return missing
    if isinstance(ours, list) and isinstance(ref, list) and ref and isinstance(ref[0], dict):
        return [m for i, item in enumerate(ours) for m in _unknown_keys(item, ref[0], f"{path}[{i}]")]
    return []


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


def test_reference_is_the_modern_chart(reference: dict[str, Any]) -> None:
    assert "835892b45aaa0917bc97102968fe062155b64e19" in REFERENCE.read_text()
    assert "enableReadOnly" in reference["dagsterWebserver"]
    assert "dagster-user-deployments" in reference


def test_every_key_exists_in_the_chart(values: dict[str, Any], reference: dict[str, Any]) -> None:
    assert _unknown_keys(values, reference, "") == []


def test_the_secret_check_catches_a_password() -> None:
    planted = {"postgresql": {"postgresqlPassword": "hunter2"}}
    with pytest.raises(AssertionError, match="literal secret"):
        _check_no_literal_secrets(planted)
    with pytest.raises(AssertionError, match="URL with a password"):
        _check_no_literal_secrets({"env": [{"name": "X", "value": "postgresql://u:pw@db/x"}]})


def test_the_key_check_catches_a_typo(reference: dict[str, Any]) -> None:
    bad = {"dagsterWebserver": {"enableReadonly": True}, "dagsterDaemon": {"runMonitoring": {"x": 1}}}
    assert _unknown_keys(bad, reference, "") == [
        ".dagsterWebserver.enableReadonly",
        ".dagsterDaemon.runMonitoring.x",
    ]


def test_read_only_webserver_for_auditors(values: dict[str, Any]) -> None:
    webserver = values["dagsterWebserver"]
    assert webserver["enableReadOnly"] is True
    assert webserver["replicaCount"] >= 2
    assert webserver["resources"]["requests"]


def test_runs_launch_as_kubernetes_jobs(values: dict[str, Any]) -> None:
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert k8s["jobNamespace"] == "ml-platform"
    assert {"name": "ml-platform-env"} in k8s["envSecrets"]


def test_external_postgres_with_an_out_of_band_password(values: dict[str, Any]) -> None:
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlHost"] and pg["postgresqlDatabase"] and pg["postgresqlUsername"]
    assert "postgresqlPassword" not in pg
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def _deployment(values: dict[str, Any]) -> dict[str, Any]:
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    (deployment,) = user["deployments"]
    assert deployment["name"] == "ml-platform"
    return deployment


def test_user_deployment_runs_our_image_and_code_server(values: dict[str, Any]) -> None:
    d = _deployment(values)
    assert d["image"]["repository"].rsplit("/", 1)[-1] == "ml-platform"
    assert d["image"]["tag"] and d["image"]["tag"] != "latest"
    assert d["image"]["pullPolicy"] in {"Always", "IfNotPresent"}
    assert d["port"] == 4000
    args = d["codeServerArgs"]
    assert args[args.index("-m") + 1] == "ml_platform.definitions"
    assert d["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {e["name"]: e["value"] for e in d["env"]}
    assert env["MLP_EXECUTOR"] == "k8s"
    assert env["MLP_SENSORS_RUNNING"] == "true"
    # the k8s executor's step pods must run the image the code server runs
    image = f"{d['image']['repository']}:{d['image']['tag']}"
    assert env["MLP_K8S_IMAGE"] == image


def test_user_deployment_is_non_root(values: dict[str, Any]) -> None:
    d = _deployment(values)
    for ctx in (d["podSecurityContext"], d["securityContext"]):
        assert ctx["runAsNonRoot"] is True
        assert ctx["runAsUser"] == 10001  # the Dockerfile's USER 10001:10001
    assert d["securityContext"]["allowPrivilegeEscalation"] is False
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_run_limits_in_the_run_coordinator_only(values: dict[str, Any]) -> None:
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] >= 1
    gpu = [
        t
        for t in queued["tagConcurrencyLimits"]
        if t["key"] == "ml_platform/accelerator" and t.get("value") == "gpu"
    ]
    assert [t["limit"] for t in gpu] == [1]
    # Dagster rejects run limits in both places; the chart has no `concurrency.runs` here
    assert "concurrency" not in values


def test_daemon_monitors_and_retries_runs(values: dict[str, Any]) -> None:
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["runRetries"]["enabled"] is True and daemon["runRetries"]["maxRetries"] >= 1
    assert values["telemetry"]["enabled"] is False


def test_env_comes_from_secrets(values: dict[str, Any]) -> None:
    d = _deployment(values)
    assert {"name": "ml-platform-env"} in d["envSecrets"]
    literal = {e["name"] for e in d["env"]}
    for name in (
        "MLP_MLFLOW_TRACKING_URI",
        "MLP_OPTUNA_STORAGE",
        "MLP_NOTIFY",
        "DAGSTER_PG_PASSWORD",
        "MLP_LAKEFS_ACCESS_KEY_ID",
        "MLP_LAKEFS_SECRET_ACCESS_KEY",
    ):
        assert name not in literal, f"{name} must come from the ml-platform-env secret"


def _check_no_literal_secrets(values: dict[str, Any]) -> None:
    for path, key, value in _walk(values):
        literal = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        if isinstance(key, str) and SECRET_KEY.search(key) and literal:
            assert value in ("", None), f"{path} holds a literal secret"
        if isinstance(value, str):
            # a URL with credentials (scheme://user:pass@host)
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{path} holds a URL with a password"


def test_no_literal_secrets(values: dict[str, Any]) -> None:
    _check_no_literal_secrets(values)
    names = [e["name"] for e in _deployment(values)["env"]]
    assert [n for n in names if SECRET_KEY.search(n)] == []  # MLP_K8S_ENV_SECRETS only names Secrets
