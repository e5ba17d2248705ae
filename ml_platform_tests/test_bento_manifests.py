"""The Bento's Kubernetes manifests (``deploy/bento/base``): valid, consistent, and locked down.

Offline: there is no ``kubectl``/``kustomize`` binary here, so the test renders the kustomization
itself (it only lists files and sets the namespace; the test fails if it grows anything else) and
validates every manifest against the Kubernetes OpenAPI schema with kubernetes-validate, in strict
mode and at the version ``test_k8s_jobs.py`` uses. Then it checks what the deployment relies on:
probes on BentoML's /livez and /readyz at the container port, Service/HPA/PDB/NetworkPolicy aimed
at the Deployment's pods, a non-root read-only pod, cost labels, a pinned image, credentials only
through secretKeyRef, and that Prometheus' ``ml-platform-serving`` job discovers every pod (its
relabel rules, simulated here, keep the Deployment's pod template and scrape port 3000 /metrics).
Every failure names the file, kind, name and field.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ml_platform.defs.k8s import ASSET_LABEL, DELAY_MODEL, MODEL_LABEL, TEAM_LABEL

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "bento" / "base"
KUSTOMIZATION = BASE / "kustomization.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
HELM_VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
DEPLOY_README = ROOT / "deploy" / "README.md"
K8S_JOBS_TEST = Path(__file__).with_name("test_k8s_jobs.py")

#: The Kubernetes version the manifests are validated against: the one test_k8s_jobs.py uses.
K8S_VERSION = "1.30.0"
SCRAPE_JOB = "ml-platform-serving"
#: The container port of a `bentoml containerize` image (EXPOSE 3000, BENTOML_PORT's default).
BENTO_PORT = 3000
#: `bentoml containerize`'s user (USER bentoml, bento__uid_gid 1034 in BentoML 1.4's templates).
BENTO_UID = 1034
#: The cost split labels of the serving pods (the step pods carry the same keys).
COST_LABELS = {TEAM_LABEL: "ml-platform", ASSET_LABEL: "delay_service", MODEL_LABEL: DELAY_MODEL}
KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
#: Kustomization keys the test's rendering implements; anything else would go unrendered.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources"}
#: An environment variable or ConfigMap key that names a credential.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|REDIS_URL", re.IGNORECASE)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Manifest:
    file: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name"))

    def at(self, field: str = "") -> str:
        """Where a finding is: file, kind/name and the field."""
        where = f"deploy/bento/base/{self.file} {self.kind}/{self.name}"
        return f"{where} {field}" if field else where


def _kustomization() -> dict[str, Any]:
    data = yaml.safe_load(KUSTOMIZATION.read_text())
    assert isinstance(data, dict), f"{KUSTOMIZATION}: not a mapping"
    return data


def _render() -> list[Manifest]:
    """What ``kubectl apply -k deploy/bento/base`` would apply: the listed files, in the namespace."""
    kustomization = _kustomization()
    namespace = kustomization.get("namespace")
    manifests = []
    for entry in kustomization.get("resources", []):
        path = BASE / entry
        assert path.is_file(), f"kustomization.yaml resources: {entry!r} is not a file of {BASE}"
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"deploy/bento/base/{entry}: a document is not a mapping"
            if namespace:
                doc.setdefault("metadata", {})["namespace"] = namespace
            manifests.append(Manifest(entry, doc))
    return manifests


MANIFESTS = _render()


def _one(kind: str) -> Manifest:
    found = [m for m in MANIFESTS if m.kind == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/bento/base, found {[m.at() for m in found]}"
    return found[0]


def _pod(deployment: Manifest) -> dict[str, Any]:
    template: dict[str, Any] = deployment.doc["spec"]["template"]
    return template


def _containers(deployment: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = _pod(deployment)["spec"]
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group, [])):
            yield f"spec.template.spec.{group}[{i}] ({container.get('name')})", container


def _main_container(deployment: Manifest) -> tuple[str, dict[str, Any]]:
    containers = _pod(deployment)["spec"]["containers"]
    assert len(containers) == 1, deployment.at(f"spec.template.spec.containers: {len(containers)}, want 1")
    return f"spec.template.spec.containers[0] ({containers[0].get('name')})", containers[0]


def _container_port(container: Mapping[str, Any], port: int | str, where: str) -> int:
    """The container port a probe or Service targets (by number, or by the port's name)."""
    ports = container.get("ports", [])
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in ports), f"{where}: port {port} is not a container port"
        return port
    named = [p["containerPort"] for p in ports if p.get("name") == port]
    assert named, f"{where}: no container port named {port!r} (ports: {ports})"
    return int(named[0])


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels form, or a Service's plain map) matches ``labels``."""
    match = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    assert match is not None, f"matchExpressions are not evaluated by this test: {selector}"
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# --- the kustomization ---------------------------------------------------------------------------


def test_kustomization_lists_every_file_of_the_folder_and_nothing_else():
    kustomization = _kustomization()
    extra = set(kustomization) - KUSTOMIZATION_KEYS
    assert not extra, (
        f"kustomization.yaml: keys {sorted(extra)} are not rendered by this test; "
        f"extend _render() before using them"
    )
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1", "kustomization.yaml apiVersion"
    assert kustomization["kind"] == "Kustomization", "kustomization.yaml kind"
    resources = kustomization.get("resources", [])
    assert len(resources) == len(set(resources)), f"kustomization.yaml resources: duplicates in {resources}"
    on_disk = {p.name for p in BASE.iterdir() if p.name != KUSTOMIZATION.name}
    assert not {p for p in BASE.iterdir() if p.is_dir()}, f"{BASE}: subfolders are not rendered"
    assert set(resources) == on_disk, (
        f"kustomization.yaml resources vs files of deploy/bento/base: "
        f"not listed {sorted(on_disk - set(resources))}, "
        f"listed but missing {sorted(set(resources) - on_disk)}"
    )


def test_one_manifest_of_each_kind_and_no_secret():
    kinds = sorted(m.kind for m in MANIFESTS)
    assert sorted(KINDS) == kinds, f"deploy/bento/base kinds: {kinds}, want one each of {sorted(KINDS)}"
    # the Secret is created out of band (deploy/README.md); a committed one would hold values
    assert not [m.at() for m in MANIFESTS if m.kind == "Secret"]


def test_k8s_version_is_the_one_of_the_k8s_jobs_test():
    match = re.search(r'^K8S_VERSION = "([^"]+)"', K8S_JOBS_TEST.read_text(), re.MULTILINE)
    assert match, f"{K8S_JOBS_TEST.name}: no K8S_VERSION"
    assert match.group(1) == K8S_VERSION, f"{K8S_JOBS_TEST.name} validates against {match.group(1)}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m.kind}/{m.name}")
def test_every_manifest_is_valid_kubernetes(manifest: Manifest):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest.doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest.at(path)}: {exc.message}")


def test_namespace_is_the_platforms():
    helm = yaml.safe_load(HELM_VALUES.read_text())
    platform = helm["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]
    assert _kustomization()["namespace"] == platform, f"kustomization.yaml namespace vs {HELM_VALUES.name}"
    # each file names it too, for `kubectl apply -f <file>`
    for path in sorted(BASE.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        for doc in filter(None, yaml.safe_load_all(path.read_text())):
            manifest = Manifest(path.name, doc)
            assert doc["metadata"].get("namespace") == platform, manifest.at("metadata.namespace")


def test_label_keys_and_values_are_valid():
    for manifest in MANIFESTS:
        labels = dict(manifest.doc["metadata"].get("labels", {}))
        if manifest.kind == "Deployment":
            labels |= _pod(manifest)["metadata"].get("labels", {})
        for key, value in labels.items():
            assert _LABEL_KEY.match(key) and _LABEL_VALUE.match(value), manifest.at(f"label {key}={value}")


# --- the Deployment --------------------------------------------------------------------------------


def test_probes_hit_bentoml_health_endpoints_on_the_container_port():
    deployment = _one("Deployment")
    where, container = _main_container(deployment)
    ports = [p["containerPort"] for p in container.get("ports", [])]
    assert ports == [BENTO_PORT], deployment.at(f"{where}.ports: {ports}, want [{BENTO_PORT}]")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("BENTOML_PORT") == str(BENTO_PORT), deployment.at(f"{where}.env BENTOML_PORT")
    for probe, path in (
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ):
        spec = container.get(probe)
        assert spec, deployment.at(f"{where}.{probe}: missing")
        get = spec.get("httpGet")
        assert get, deployment.at(f"{where}.{probe}: not an httpGet probe")
        assert get["path"] == path, deployment.at(f"{where}.{probe}.httpGet.path: {get['path']}, want {path}")
        assert get.get("scheme", "HTTP") == "HTTP", deployment.at(f"{where}.{probe}.httpGet.scheme")
        port = _container_port(container, get["port"], deployment.at(f"{where}.{probe}.httpGet.port"))
        assert port == BENTO_PORT, deployment.at(f"{where}.{probe}.httpGet.port: {port}")
    startup = container["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= 120, deployment.at(f"{where}.startupProbe: {budget}s to load the model, want >= 120")


def test_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities():
    deployment = _one("Deployment")
    spec = _pod(deployment)["spec"]
    pod_ctx = spec.get("securityContext", {})
    assert pod_ctx.get("runAsNonRoot") is True, deployment.at(
        "spec.template.spec.securityContext.runAsNonRoot"
    )
    assert pod_ctx.get("runAsUser") == BENTO_UID, deployment.at(
        f"spec.template.spec.securityContext.runAsUser: {pod_ctx.get('runAsUser')}, want {BENTO_UID}"
    )
    assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", deployment.at(
        "spec.template.spec.securityContext.seccompProfile"
    )
    assert spec.get("automountServiceAccountToken") is False, deployment.at(
        "spec.template.spec.automountServiceAccountToken"
    )
    assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, deployment.at("host*")
    for where, container in _containers(deployment):
        ctx = container.get("securityContext", {})
        field = f"{where}.securityContext"
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, deployment.at(
            f"{field}.runAsNonRoot"
        )
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        assert isinstance(uid, int) and uid > 0, deployment.at(
            f"{field}.runAsUser: {uid!r}, want a numeric UID"
        )
        assert ctx.get("readOnlyRootFilesystem") is True, deployment.at(f"{field}.readOnlyRootFilesystem")
        assert ctx.get("allowPrivilegeEscalation") is False, deployment.at(
            f"{field}.allowPrivilegeEscalation"
        )
        assert ctx.get("privileged") is not True, deployment.at(f"{field}.privileged")
        caps = ctx.get("capabilities", {})
        assert caps.get("drop") == ["ALL"], deployment.at(f"{field}.capabilities.drop: {caps.get('drop')}")
        assert not caps.get("add"), deployment.at(f"{field}.capabilities.add: {caps.get('add')}")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", deployment.at(f"{field}.seccompProfile")


def test_writable_paths_are_empty_dirs():
    """/tmp and BentoML's home must be writable with a read-only root filesystem."""
    deployment = _one("Deployment")
    where, container = _main_container(deployment)
    volumes = {v["name"]: v for v in _pod(deployment)["spec"].get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    home = env.get("BENTOML_HOME")
    assert home, deployment.at(f"{where}.env BENTOML_HOME: unset (the image's home is read-only)")
    assert not home.startswith("/home/bentoml"), deployment.at(
        f"{where}.env BENTOML_HOME={home}: a mount there would hide the bento "
        f"(BENTO_PATH=/home/bentoml/bento)"
    )
    for path in ("/tmp", home):
        mount = mounts.get(path)
        assert mount, deployment.at(f"{where}.volumeMounts: nothing writable at {path}")
        volume = volumes.get(mount["name"], {})
        assert "emptyDir" in volume and not mount.get("readOnly"), deployment.at(
            f"spec.template.spec.volumes {mount['name']}: want a writable emptyDir at {path}"
        )
    for path, mount in mounts.items():
        if "persistentVolumeClaim" in volumes.get(mount["name"], {}):
            assert mount.get("readOnly") is True, deployment.at(f"{where}.volumeMounts {path}: not readOnly")


def test_model_artifacts_are_the_claim_the_dagster_side_writes():
    """Production logs MLflow artifacts on the shared claim (MLP_MLFLOW_ARTIFACT_ROOT's default)."""
    helm = yaml.safe_load(HELM_VALUES.read_text())
    (user,) = helm["dagster-user-deployments"]["deployments"]
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"] for v in user["volumes"] if "persistentVolumeClaim" in v
    ]
    (storage,) = [m["mountPath"] for m in user["volumeMounts"]]
    deployment = _one("Deployment")
    where, container = _main_container(deployment)
    volumes = {v["name"]: v for v in _pod(deployment)["spec"]["volumes"]}
    claims = {
        m["mountPath"]: (volumes[m["name"]]["persistentVolumeClaim"]["claimName"], m.get("subPath", ""))
        for m in container.get("volumeMounts", [])
        if "persistentVolumeClaim" in volumes.get(m["name"], {})
    }
    artifacts = f"{storage}/mlartifacts"
    assert claims.get(artifacts) == (claim, "mlartifacts"), deployment.at(
        f"{where}.volumeMounts: want claim {claim!r} subPath mlartifacts at {artifacts}, got {claims}"
    )


def test_cost_labels_are_on_the_pod_template():
    deployment = _one("Deployment")
    labels = _pod(deployment)["metadata"].get("labels", {})
    for key, value in COST_LABELS.items():
        assert labels.get(key) == value, deployment.at(
            f"spec.template.metadata.labels[{key}]: {labels.get(key)!r}, want {value!r}"
        )


def test_image_is_pinned_by_a_tag_never_latest():
    deployment = _one("Deployment")
    for where, container in _containers(deployment):
        image = container["image"]
        name, _, digest = image.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        assert tag or digest, deployment.at(f"{where}.image {image!r}: no tag (means latest)")
        assert tag != "latest", deployment.at(f"{where}.image {image!r}: latest")
        assert not tag or _IMAGE_TAG.match(tag), deployment.at(f"{where}.image {image!r}: invalid tag")
        assert container.get("imagePullPolicy") in {"IfNotPresent", "Always"}, deployment.at(
            f"{where}.imagePullPolicy"
        )


def test_every_container_has_requests_and_limits():
    deployment = _one("Deployment")
    for where, container in _containers(deployment):
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(part, {}))
            assert not missing, deployment.at(f"{where}.resources.{part}: no {sorted(missing)}")


def test_credentials_come_only_from_secret_key_refs():
    deployment = _one("Deployment")
    configmap = _one("ConfigMap")
    for where, container in _containers(deployment):
        for ref in container.get("envFrom", []):
            assert "secretRef" not in ref, deployment.at(
                f"{where}.envFrom: name each secret key (secretKeyRef)"
            )
            name = ref.get("configMapRef", {}).get("name")
            assert name == configmap.name, deployment.at(
                f"{where}.envFrom configMapRef {name!r}: not in base"
            )
        for env in container.get("env", []):
            field = f"{where}.env {env['name']}"
            if SECRET_NAME.search(env["name"]):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                assert ref and "value" not in env, deployment.at(
                    f"{field}: a credential must be a secretKeyRef"
                )
                assert ref.get("name") and ref.get("key"), deployment.at(f"{field}.valueFrom.secretKeyRef")
            if "value" in env:
                assert not urlsplit(str(env["value"])).password, deployment.at(f"{field}: password in a URL")
    for key, value in configmap.doc.get("data", {}).items():
        assert not SECRET_NAME.search(key), configmap.at(f"data.{key}: a credential in a ConfigMap")
        assert not urlsplit(str(value)).password, configmap.at(f"data.{key}: password in a URL")


def test_configmap_names_the_registry_model_and_alias():
    data = _one("ConfigMap").doc["data"]
    uri = urlsplit(data["MLP_MLFLOW_TRACKING_URI"])
    assert uri.scheme and uri.hostname and uri.password is None, "configmap.yaml data.MLP_MLFLOW_TRACKING_URI"
    assert data["MLP_REGISTERED_MODEL"] == DELAY_MODEL, "configmap.yaml data.MLP_REGISTERED_MODEL"
    assert data["MLP_SERVING_MODEL_ALIAS"] == "champion", "configmap.yaml data.MLP_SERVING_MODEL_ALIAS"


def test_the_secret_the_pod_reads_is_documented():
    """No Secret is committed: its name and every key the pod reads are in deploy/README.md."""
    readme = DEPLOY_README.read_text()
    deployment = _one("Deployment")
    for where, container in _containers(deployment):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                for word in (ref["name"], ref["key"]):
                    assert word in readme, deployment.at(
                        f"{where}.env {env['name']}: {word!r} not in deploy/README.md"
                    )


def test_service_account_exists_without_token():
    deployment = _one("Deployment")
    account = _one("ServiceAccount")
    name = _pod(deployment)["spec"].get("serviceAccountName")
    assert name == account.name, deployment.at(f"spec.template.spec.serviceAccountName {name!r}")
    assert account.doc.get("automountServiceAccountToken") is False, account.at(
        "automountServiceAccountToken"
    )


def test_rollout_keeps_capacity_and_spreads_pods():
    deployment = _one("Deployment")
    spec = deployment.doc["spec"]
    strategy = spec.get("strategy", {})
    assert strategy.get("type") == "RollingUpdate", deployment.at("spec.strategy.type")
    assert strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0, deployment.at(
        "spec.strategy.rollingUpdate.maxUnavailable"
    )
    assert _selects(spec["selector"], _pod(deployment)["metadata"]["labels"]), deployment.at("spec.selector")
    pod = _pod(deployment)["spec"]
    labels = _pod(deployment)["metadata"]["labels"]
    spread = [c["labelSelector"] for c in pod.get("topologySpreadConstraints", [])]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    anti_selectors = [
        term.get("podAffinityTerm", term)["labelSelector"]
        for kind in (
            "requiredDuringSchedulingIgnoredDuringExecution",
            "preferredDuringSchedulingIgnoredDuringExecution",
        )
        for term in anti.get(kind, [])
    ]
    selectors = spread + anti_selectors
    assert selectors, deployment.at("spec.template.spec: no topologySpreadConstraints or podAntiAffinity")
    for selector in selectors:
        assert _selects(selector, labels), deployment.at(
            f"spread/anti-affinity selector {selector}: not its pods"
        )
    grace = pod.get("terminationGracePeriodSeconds")
    assert isinstance(grace, int), deployment.at("spec.template.spec.terminationGracePeriodSeconds: unset")
    for where, container in _containers(deployment):
        command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if command[:1] == ["sleep"]:
            assert grace > int(command[1]), deployment.at(f"{where}: preStop sleep >= grace period {grace}")


# --- what points at the Deployment -----------------------------------------------------------------


def test_service_selects_the_pods_and_targets_the_container_port():
    deployment = _one("Deployment")
    service = _one("Service")
    _, container = _main_container(deployment)
    spec = service.doc["spec"]
    assert spec.get("type", "ClusterIP") == "ClusterIP", service.at("spec.type")
    pod_labels = _pod(deployment)["metadata"]["labels"]
    assert _selects(spec["selector"], pod_labels), service.at(
        f"spec.selector {spec['selector']}: not the pods"
    )
    assert spec["selector"] == deployment.doc["spec"]["selector"]["matchLabels"], service.at(
        "spec.selector: differs from the Deployment's spec.selector.matchLabels"
    )
    (port,) = spec["ports"]
    assert port.get("name") == "http" and port["port"] == BENTO_PORT, service.at(f"spec.ports[0]: {port}")
    target = _container_port(
        container, port.get("targetPort", port["port"]), service.at("spec.ports[0].targetPort")
    )
    assert target == BENTO_PORT, service.at(f"spec.ports[0].targetPort: container port {target}")


def test_hpa_scales_the_deployment_on_cpu():
    deployment = _one("Deployment")
    hpa = _one("HorizontalPodAutoscaler")
    spec = hpa.doc["spec"]
    ref = spec["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment.name), (
        hpa.at(f"spec.scaleTargetRef {ref}")
    )
    cpu = [
        m["resource"]["target"]
        for m in spec.get("metrics", [])
        if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu and cpu[0]["type"] == "Utilization" and 0 < cpu[0]["averageUtilization"] <= 100, hpa.at(
        "spec.metrics: no CPU utilisation target"
    )
    assert spec.get("minReplicas", 1) >= 2, hpa.at("spec.minReplicas: want >= 2 (one pod may be disrupted)")
    assert spec["maxReplicas"] >= spec["minReplicas"], hpa.at("spec.maxReplicas")
    assert "replicas" not in deployment.doc["spec"], deployment.at(
        "spec.replicas: the HPA owns it; a value resets the scale on every apply"
    )
    _, container = _main_container(deployment)
    assert "cpu" in container["resources"]["requests"], deployment.at(
        "cpu request (the HPA's utilisation base)"
    )


def test_pdb_protects_the_pods_without_blocking_drains():
    deployment = _one("Deployment")
    pdb = _one("PodDisruptionBudget")
    hpa = _one("HorizontalPodAutoscaler")
    spec = pdb.doc["spec"]
    assert _selects(spec["selector"], _pod(deployment)["metadata"]["labels"]), pdb.at(
        "spec.selector: not the pods"
    )
    min_available = spec.get("minAvailable")
    assert isinstance(min_available, int) and 1 <= min_available < hpa.doc["spec"]["minReplicas"], pdb.at(
        f"spec.minAvailable {min_available}: want 1 .. HPA minReplicas - 1"
    )


def test_network_policy_admits_the_port_and_lets_out_dns_redis_postgres():
    deployment = _one("Deployment")
    policy = _one("NetworkPolicy")
    spec = policy.doc["spec"]
    assert _selects(spec["podSelector"], _pod(deployment)["metadata"]["labels"]), policy.at(
        "spec.podSelector"
    )
    assert set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, policy.at("spec.policyTypes")
    ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule.get("ports", [])}
    assert ingress_ports == {BENTO_PORT}, policy.at(
        f"spec.ingress ports {ingress_ports}, want {{{BENTO_PORT}}}"
    )
    assert all(rule.get("from") for rule in spec["ingress"]), policy.at(
        "spec.ingress: a rule open to everyone"
    )
    egress = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule.get("ports", [])}
    for needed in ((53, "UDP"), (53, "TCP"), (6379, "TCP"), (5432, "TCP")):
        assert needed in egress, policy.at(f"spec.egress: no {needed[0]}/{needed[1]}")
    assert all(rule.get("ports") for rule in spec["egress"]), policy.at(
        "spec.egress: a rule open to every port"
    )


# --- Prometheus: pod discovery and relabelling, simulated ------------------------------------------

#: Characters Prometheus' Kubernetes discovery replaces with ``_`` in label/annotation names.
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
#: Go's regexp.Expand references in a ``replacement``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``.
_GO_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+)|\$)")
POD_IP = "10.244.1.17"
POD_NAME = "ml-platform-serving-7c9d8f6b5d-x2x9q"


def _scrape_job() -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == SCRAPE_JOB]
    assert len(jobs) == 1, f"{PROMETHEUS.name}: job {SCRAPE_JOB!r} x{len(jobs)}"
    job: dict[str, Any] = jobs[0]
    return job


def _yaml_text(value: object) -> str:
    """A YAML scalar as Prometheus reads it into a string field (an unquoted `true` stays `true`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _expand(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: an unknown group or name expands to the empty string."""

    def reference(ref: re.Match[str]) -> str:
        if ref.group(0) == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        try:
            return match.group(int(name) if name.isdigit() else name) or ""
        except IndexError:
            return ""

    return _GO_REFERENCE.sub(reference, template)


def _relabel(labels: Mapping[str, str], rules: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """Prometheus' ``relabel_configs`` for the actions the job uses; ``None`` when the target is dropped.

    The regex is anchored at both ends (Prometheus wraps it in ``^(?s:...)$``), the source labels'
    values are joined by ``separator`` (``;``), a missing label reads as empty, and a replace whose
    result is empty removes the target label.
    """
    result = dict(labels)
    for rule in rules:
        action = str(rule.get("action", "replace")).lower()
        regex = re.compile(_yaml_text(rule.get("regex", "(.*)")), re.DOTALL)
        separator = _yaml_text(rule.get("separator", ";"))
        value = separator.join(result.get(name, "") for name in rule.get("source_labels", []))
        match = regex.fullmatch(value)
        if action == "keep":
            if match is None:
                return None
        elif action == "drop":
            if match is not None:
                return None
        elif action == "replace":
            if match is not None:
                target = _expand(rule["target_label"], match)
                replaced = _expand(_yaml_text(rule.get("replacement", "$1")), match)
                if replaced:
                    result[target] = replaced
                else:
                    result.pop(target, None)
        else:
            pytest.fail(f"{PROMETHEUS.name}: relabel action {action!r} is not simulated by this test")
    return result


def _discovered(
    pod: Mapping[str, Any], namespace: str, *, ip: str, name: str, phase: str
) -> list[dict[str, str]]:
    """The targets Prometheus' ``role: pod`` discovery makes of a pod: one per container port."""
    meta = pod["metadata"]
    common = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_ready": "true" if phase == "Running" else "false",
    }
    for kind, values in (("label", meta.get("labels", {})), ("annotation", meta.get("annotations", {}))):
        for key, value in values.items():
            common[f"__meta_kubernetes_pod_{kind}_{_UNSAFE.sub('_', key)}"] = str(value)
            common[f"__meta_kubernetes_pod_{kind}present_{_UNSAFE.sub('_', key)}"] = "true"
    targets = []
    for group, init in (("containers", "false"), ("initContainers", "true")):
        for container in pod["spec"].get(group, []):
            per_container = {
                **common,
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_init": init,
            }
            ports = container.get("ports", [])
            if not ports and init == "false":
                # no declared port: Prometheus targets the bare pod IP
                targets.append({**per_container, "__address__": ip})
            for port in ports:
                targets.append(
                    {
                        **per_container,
                        "__address__": f"{ip}:{port['containerPort']}",
                        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                        "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                    }
                )
    return targets


def _scraped(
    job: Mapping[str, Any],
    pod: Mapping[str, Any],
    namespace: str,
    *,
    ip: str = POD_IP,
    name: str = POD_NAME,
    phase: str = "Running",
) -> list[dict[str, str]]:
    """What the job scrapes of a pod: the relabelled targets, ``__meta_*`` gone, duplicates merged."""
    initial = {
        "job": job["job_name"],
        "__scheme__": job.get("scheme", "http"),
        "__metrics_path__": job.get("metrics_path", "/metrics"),
    }
    kept: list[dict[str, str]] = []
    for target in _discovered(pod, namespace, ip=ip, name=name, phase=phase):
        labels = _relabel({**initial, **target}, job.get("relabel_configs", []))
        if labels is None:
            continue
        labels = {k: v for k, v in labels.items() if not k.startswith("__meta_")}
        labels.setdefault("instance", labels["__address__"])
        if labels not in kept:
            kept.append(labels)
    return kept


def test_relabel_simulation_follows_prometheus_semantics():
    rules = [
        {"source_labels": ["a", "b"], "regex": "x;(.*)", "target_label": "c", "replacement": "${1}-$$"},
        {"source_labels": ["missing"], "regex": "", "action": "keep"},
        {"source_labels": ["a"], "regex": "x", "target_label": "a", "replacement": "$9"},
    ]
    assert _relabel({"a": "x", "b": "y"}, rules) == {"b": "y", "c": "y-$"}
    # anchored: "x" does not match "xx"
    assert _relabel({"a": "xx"}, [{"source_labels": ["a"], "regex": "x", "action": "keep"}]) is None
    assert _relabel({"a": "xx"}, [{"source_labels": ["a"], "regex": "x", "action": "drop"}]) == {"a": "xx"}
    assert _relabel({}, [{"target_label": "s", "replacement": "v"}]) == {"s": "v"}


def test_prometheus_serving_job_scrapes_every_pod_of_the_deployment():
    """deploy/prometheus/prometheus.yml's pod discovery and relabel rules keep the Bento's pods, each
    on its own IP, port 3000 and /metrics: one series per pod, not one random pod behind the Service.
    """
    job = _scrape_job()
    deployment = _one("Deployment")
    pod = _pod(deployment)
    _, container = _main_container(deployment)
    namespace = deployment.doc["metadata"]["namespace"]
    where = f"{PROMETHEUS.name} job {SCRAPE_JOB}"

    assert "static_configs" not in job, f"{where}: a static target (the Service) reaches one random pod"
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod", f"{where}: kubernetes_sd_configs role {sd['role']!r}, want pod"
    assert namespace in sd.get("namespaces", {}).get("names", []), (
        f"{where}: discovers namespaces {sd.get('namespaces')}, not the Deployment's {namespace!r}"
    )

    annotations = pod["metadata"].get("annotations", {})
    field = "spec.template.metadata.annotations"
    assert annotations.get("prometheus.io/scrape") == "true", deployment.at(f"{field}[prometheus.io/scrape]")
    assert annotations.get("prometheus.io/path") == "/metrics", deployment.at(f"{field}[prometheus.io/path]")
    assert annotations.get("prometheus.io/scheme", "http") == "http", deployment.at(
        f"{field}[prometheus.io/scheme]"
    )
    assert annotations.get("prometheus.io/port") == str(BENTO_PORT), deployment.at(
        f"{field}[prometheus.io/port]"
    )

    targets = _scraped(job, pod, namespace)
    assert len(targets) == 1, f"{where}: {len(targets)} targets for one pod of {deployment.at()}: {targets}"
    (target,) = targets
    host, _, port = target["__address__"].rpartition(":")
    assert host == POD_IP and port == str(BENTO_PORT), f"{where}: scrapes {target['__address__']}"
    assert _container_port(container, int(port), deployment.at("ports")) == BENTO_PORT
    assert target["__metrics_path__"] == "/metrics", f"{where}: path {target['__metrics_path__']}"
    assert target["__scheme__"] == "http", f"{where}: scheme {target['__scheme__']}"
    assert target["job"] == SCRAPE_JOB, f"{where}: the alert rules select job={SCRAPE_JOB!r}"
    assert (target["namespace"], target["pod"]) == (namespace, POD_NAME), f"{where}: {target}"
    assert target["service"] == "delay-model", f"{where}: static label service: {target}"
    assert "model_version" not in target, f"{where}: a target label model_version renames the series'"

    # Two replicas are two targets, told apart by instance and pod.
    other = _scraped(job, pod, namespace, ip="10.244.2.5", name="ml-platform-serving-7c9d8f6b5d-q8r4t")
    assert len(other) == 1 and other[0]["instance"] != target["instance"], f"{where}: {other}"


@pytest.mark.parametrize(
    "change",
    [
        "no scrape annotation",
        "scrape annotation false",
        "another app",
        "no app label",
        "evicted pod",
        "pending pod",
    ],
)
def test_prometheus_serving_job_drops_other_pods(change: str):
    job = _scrape_job()
    deployment = _one("Deployment")
    pod = copy.deepcopy(_pod(deployment))
    namespace = deployment.doc["metadata"]["namespace"]
    labels = pod["metadata"]["labels"]
    annotations = pod["metadata"].setdefault("annotations", {})
    phase = "Running"
    if change == "no scrape annotation":
        del annotations["prometheus.io/scrape"]
    elif change == "scrape annotation false":
        annotations["prometheus.io/scrape"] = "false"
    elif change == "another app":
        labels["app.kubernetes.io/name"] = "another-app"
    elif change == "no app label":
        del labels["app.kubernetes.io/name"]
    elif change == "evicted pod":
        phase = "Failed"
    else:
        phase = "Pending"
    assert _scraped(job, pod, namespace, phase=phase) == [], (
        f"{PROMETHEUS.name} job {SCRAPE_JOB}: scrapes a pod with {change}"
    )
