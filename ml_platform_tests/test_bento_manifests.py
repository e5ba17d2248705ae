"""The Bento's Kubernetes manifests (``deploy/bento``): valid, consistent, and locked down.

Offline: there is no ``kubectl``/``kustomize`` binary here, so the test renders the kustomizations
itself: the base (files listed in ``resources``, then the namespace) and the GPU overlay (the base
as a ``resources`` folder, then its strategic merge ``patches``). The renderer implements exactly
those kustomize features, and a strategic merge only for the lists it knows the merge key of
(containers and env by ``name``, ...); any other kustomization key, patch form or list fails the
test rather than rendering something kustomize would not. Every manifest of both is validated
against the Kubernetes OpenAPI schema with kubernetes-validate, in strict mode and at the version
``test_k8s_jobs.py`` uses. Then it checks what the deployment relies on: probes on BentoML's /livez
and /readyz at the container port, Service/HPA/PDB/NetworkPolicy aimed at the Deployment's pods, a
non-root read-only pod whose only writable paths are /tmp, BentoML's home and the prediction log
(on the shared claim, at the folder the settings resolve and the Dagster side reads), cost labels,
a pinned image, credentials only through secretKeyRef, that the GPU overlay asks for one GPU on the
GPU nodes as the training steps do (``ml_platform/defs/k8s.py``) and changes nothing else, and that
Prometheus' ``ml-platform-serving`` job discovers every pod (its relabel rules, simulated here, keep
the Deployment's pod template and scrape port 3000 /metrics). Every failure names the file, kind,
name and field.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ml_platform.defs.k8s import (
    ASSET_LABEL,
    DELAY_MODEL,
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    K8S_CONFIG_TAG,
    MODEL_LABEL,
    TEAM_LABEL,
    k8s_tags,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "bento" / "base"
KUSTOMIZATION = BASE / "kustomization.yaml"
GPU_OVERLAY = ROOT / "deploy" / "bento" / "overlays" / "gpu"
#: What is rendered: the base, and the overlays (each applied instead of the base).
VARIANTS = {"base": BASE, "gpu": GPU_OVERLAY}
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
HELM_VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
DOCKERFILE = ROOT / "Dockerfile"
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
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches"}
#: Keys of a ``patches`` entry the rendering implements: a strategic merge patch file, targeted by
#: its own apiVersion, kind, name and namespace (no ``target``, inline ``patch`` or ``options``).
PATCH_ENTRY_KEYS = {"path"}
_POD_SPEC = ("spec", "template", "spec")
#: Lists a strategic merge patch merges item by item, by the ``patchMergeKey`` of their Kubernetes
#: type (``*``: any item of the list above). New items are appended, as kustomize does.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    (*_POD_SPEC, "containers"): "name",
    (*_POD_SPEC, "initContainers"): "name",
    (*_POD_SPEC, "volumes"): "name",
    (*_POD_SPEC, "containers", "*", "env"): "name",
    (*_POD_SPEC, "containers", "*", "volumeMounts"): "mountPath",
}
#: Lists without a patch strategy in the Kubernetes API: the patch's list replaces the resource's.
REPLACED_LISTS: set[tuple[str, ...]] = {(*_POD_SPEC, "tolerations")}
#: An environment variable or ConfigMap key that names a credential.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|REDIS_URL", re.IGNORECASE)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Manifest:
    #: The file the document comes from, relative to the checkout.
    file: str
    doc: dict[str, Any]
    #: The patch files merged into it, in order.
    patched_by: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name"))

    def at(self, field: str = "") -> str:
        """Where a finding is: file (and patches), kind/name and the field."""
        where = " + ".join((self.file, *self.patched_by)) + f" {self.kind}/{self.name}"
        return f"{where} {field}" if field else where


def _relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _kustomization(folder: Path = BASE) -> dict[str, Any]:
    path = folder / "kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{_relative(path)}: not a mapping"
    return data


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        assert isinstance(doc, dict), f"{_relative(path)}: a document is not a mapping"
        yield doc


def _resource_id(doc: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What kustomize identifies a resource (and a patch's target) by; no namespace is `default`."""
    meta = doc.get("metadata", {})
    return (
        str(doc.get("apiVersion")),
        str(doc.get("kind")),
        str(meta.get("name")),
        meta.get("namespace") or "default",
    )


def _path_text(path: Sequence[str]) -> str:
    return ".".join(path).replace(".*", "[]")


def _strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """``patch`` merged into ``original`` as a strategic merge patch, for the lists of MERGE_KEYS
    and REPLACED_LISTS: maps merge key by key (a null deletes the key), scalars are replaced, lists
    merge by their merge key or are replaced. Anything else fails: a list whose strategy this test
    does not know, or a ``$patch``-style directive.
    """
    if isinstance(patch, dict):
        directives = [key for key in patch if str(key).startswith("$")]
        assert not directives, f"strategic merge {_path_text(path)}: directives {directives} are not rendered"
        if not isinstance(original, dict):
            original = {}
        merged = dict(original)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = _strategic_merge(original.get(key), value, (*path, str(key)))
        return merged
    if isinstance(patch, list):
        if path in REPLACED_LISTS:
            return copy.deepcopy(patch)
        assert path in MERGE_KEYS, (
            f"strategic merge {_path_text(path)}: a list whose patch strategy this test does not "
            f"render; add it to MERGE_KEYS or REPLACED_LISTS as the Kubernetes API defines it"
        )
        key = MERGE_KEYS[path]
        merged_list = [copy.deepcopy(item) for item in original or []]
        for item in patch:
            assert isinstance(item, dict) and key in item, (
                f"strategic merge {_path_text(path)}: an item without its merge key {key!r}: {item}"
            )
            same = [i for i, old in enumerate(merged_list) if old.get(key) == item[key]]
            if same:
                merged_list[same[0]] = _strategic_merge(merged_list[same[0]], item, (*path, "*"))
            else:
                merged_list.append(_strategic_merge({}, item, (*path, "*")))
        return merged_list
    return patch


def _render(folder: Path = BASE) -> list[Manifest]:
    """What ``kubectl apply -k <folder>`` would apply: the resources (files, or kustomization folders
    rendered first), then the patches, then the namespace (kustomize's order of transformers).
    """
    kustomization = _kustomization(folder)
    where = _relative(folder / "kustomization.yaml")
    extra = set(kustomization) - KUSTOMIZATION_KEYS
    assert not extra, f"{where}: keys {sorted(extra)} are not rendered by this test; extend _render()"
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), (
                f"{where} resources: {entry!r} has no kustomization.yaml"
            )
            manifests.extend(_render(path))
        else:
            assert path.is_file(), (
                f"{where} resources: {entry!r} is neither a file nor a kustomization folder"
            )
            manifests.extend(Manifest(_relative(path), doc) for doc in _documents(path))
    for entry in kustomization.get("patches", []):
        assert isinstance(entry, dict) and set(entry) == PATCH_ENTRY_KEYS, (
            f"{where} patches: {entry!r}: only {sorted(PATCH_ENTRY_KEYS)} is rendered by this test"
        )
        patch_file = folder / entry["path"]
        assert patch_file.is_file(), f"{where} patches: {entry['path']!r} is not a file"
        (patch,) = _documents(patch_file)  # a strategic merge patch: one resource's fields
        targets = [i for i, m in enumerate(manifests) if _resource_id(m.doc) == _resource_id(patch)]
        assert len(targets) == 1, (
            f"{_relative(patch_file)}: matches {len(targets)} resources by {_resource_id(patch)} (want 1)"
        )
        target = manifests[targets[0]]
        manifests[targets[0]] = Manifest(
            target.file,
            _strategic_merge(target.doc, patch),
            (*target.patched_by, _relative(patch_file)),
        )
    namespace = kustomization.get("namespace")
    if namespace:
        for manifest in manifests:
            manifest.doc.setdefault("metadata", {})["namespace"] = namespace
    return manifests


RENDERED = {variant: _render(folder) for variant, folder in VARIANTS.items()}
MANIFESTS = RENDERED["base"]


def _one(kind: str, variant: str = "base") -> Manifest:
    found = [m for m in RENDERED[variant] if m.kind == kind]
    assert len(found) == 1, (
        f"expected one {kind} in {_relative(VARIANTS[variant])}, found {[m.at() for m in found]}"
    )
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
    extra = set(kustomization) - KUSTOMIZATION_KEYS - {"patches"}
    assert not extra, (
        f"kustomization.yaml: keys {sorted(extra)} are not rendered by this test; "
        f"extend _render() before using them (the base takes no patches: its overlays do)"
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


def test_gpu_overlay_is_the_base_and_its_patch():
    kustomization = _kustomization(GPU_OVERLAY)
    where = _relative(GPU_OVERLAY / "kustomization.yaml")
    extra = set(kustomization) - KUSTOMIZATION_KEYS
    assert not extra, f"{where}: keys {sorted(extra)} are not rendered by this test"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1", f"{where} apiVersion"
    assert kustomization["kind"] == "Kustomization", f"{where} kind"
    assert kustomization.get("resources") == ["../../base"], f"{where} resources: want only the base"
    assert "namespace" not in kustomization, f"{where}: the base sets the namespace"
    patches = [entry["path"] for entry in kustomization.get("patches", [])]
    assert patches, f"{where}: no patches"
    on_disk = {p.name for p in GPU_OVERLAY.iterdir() if p.name != "kustomization.yaml"}
    assert set(patches) == on_disk, f"{where} patches {patches} vs files of the folder {sorted(on_disk)}"
    for name in patches:
        for doc in _documents(GPU_OVERLAY / name):
            # kustomize finds a patch's target by its namespace too: name it as the base's files do
            assert doc["metadata"].get("namespace") == _kustomization()["namespace"], (
                f"{_relative(GPU_OVERLAY / name)} metadata.namespace"
            )


def test_strategic_merge_follows_kustomize():
    base = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "X", "value": "1"}],
                            "resources": {"limits": {"cpu": "1"}},
                        },
                        {"name": "b", "image": "b:1"},
                    ],
                    "tolerations": [{"key": "old", "operator": "Exists"}],
                    "dnsPolicy": "ClusterFirst",
                }
            }
        }
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "3"}],
                            "resources": {"limits": {GPU_RESOURCE: "1"}},
                        }
                    ],
                    "tolerations": [{"key": "new", "operator": "Exists"}],
                    "dnsPolicy": None,
                }
            }
        }
    }
    merged = _strategic_merge(base, patch)["spec"]["template"]["spec"]
    # containers and env merged by name (new items appended), maps key by key, tolerations replaced
    assert merged["containers"] == [
        {
            "name": "a",
            "env": [{"name": "X", "value": "3"}, {"name": "Y", "value": "2"}],
            "resources": {"limits": {"cpu": "1", GPU_RESOURCE: "1"}},
        },
        {"name": "b", "image": "b:1"},
    ]
    assert merged["tolerations"] == [{"key": "new", "operator": "Exists"}]
    assert "dnsPolicy" not in merged  # null deletes
    assert base["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    with pytest.raises(AssertionError, match="patch strategy"):
        _strategic_merge(base, {"spec": {"template": {"spec": {"containers": [{"name": "a", "ports": []}]}}}})
    with pytest.raises(AssertionError, match="directives"):
        _strategic_merge(base, {"spec": {"$patch": "replace"}})
    with pytest.raises(AssertionError, match="merge key"):
        _strategic_merge(base, {"spec": {"template": {"spec": {"containers": [{"image": "c"}]}}}})


@pytest.mark.parametrize(
    "manifest",
    [m for manifests in RENDERED.values() for m in manifests],
    ids=[f"{variant}-{m.kind}/{m.name}" for variant, manifests in RENDERED.items() for m in manifests],
)
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_hit_bentoml_health_endpoints_on_the_container_port(variant: str):
    deployment = _one("Deployment", variant)
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities(variant: str):
    deployment = _one("Deployment", variant)
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


#: Volume types the kubelet always mounts read-only.
_READ_ONLY_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
#: Where the platform's relative paths resolve in the ml_platform image (``ENV MLP_ROOT_DIR=...``).
_DOCKERFILE_ROOT = re.compile(r"\bMLP_ROOT_DIR=(\S+)")
#: The settings that place the prediction log under the root: the Dagster side's other settings
#: (lakeFS keys from its Secret) cannot be resolved offline and do not move the folder.
_PATH_SETTINGS = ("MLP_ROOT_DIR", "MLP_STORAGE_ROOT")


def _writable_mounts(deployment: Manifest, container: Mapping[str, Any]) -> dict[str, tuple[dict, dict]]:
    """The container's writable mounts: path -> (mount, volume)."""
    volumes = {v["name"]: v for v in _pod(deployment)["spec"].get("volumes", [])}
    writable = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        assert volume, deployment.at(f"volumeMounts {mount['mountPath']}: no volume {mount['name']!r}")
        read_only = (
            mount.get("readOnly") is True
            or volume.get("persistentVolumeClaim", {}).get("readOnly") is True
            or any(kind in volume for kind in _READ_ONLY_VOLUMES)
        )
        if not read_only:
            writable[mount["mountPath"]] = (mount, volume)
    return writable


def _container_env(variant: str, container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables with a plain value: its ConfigMaps' data (envFrom), then ``env``
    (which wins, as in Kubernetes). Secret values are unknown here and left out.
    """
    configmaps = {m.name: m.doc.get("data", {}) for m in RENDERED[variant] if m.kind == "ConfigMap"}
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        name = ref.get("configMapRef", {}).get("name")
        if name:
            assert name in configmaps, f"envFrom configMapRef {name!r}: not in {_relative(VARIANTS[variant])}"
            env |= {str(k): str(v) for k, v in configmaps[name].items()}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env.pop(var["name"], None)
    return env


def _settings(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Any:
    """The platform's settings in a process whose ``MLP_*`` environment is exactly ``env``'s."""
    from ml_platform.settings import PlatformSettings

    for key in list(os.environ):
        if key.startswith("MLP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("MLP_"):
            monkeypatch.setenv(key, value)
    return PlatformSettings()


def _prediction_log_dir(monkeypatch: pytest.MonkeyPatch, variant: str) -> str:
    """The settings' ``prediction_log_dir`` for the Bento container's environment."""
    deployment = _one("Deployment", variant)
    where, container = _main_container(deployment)
    env = _container_env(variant, container)
    # the Bento's working directory is BentoML's, not the platform's: the root must be explicit
    assert env.get("MLP_ROOT_DIR"), deployment.at(f"{where}.env MLP_ROOT_DIR: unset")
    return str(_settings(monkeypatch, env).prediction_log_dir)


def _dagster_user_deployment() -> dict[str, Any]:
    helm = yaml.safe_load(HELM_VALUES.read_text())
    (user,) = helm["dagster-user-deployments"]["deployments"]
    return dict(user)


@pytest.mark.parametrize("variant", VARIANTS)
def test_writable_paths_are_tmp_bentoml_home_and_the_prediction_log(variant: str, monkeypatch):
    """A read-only root filesystem: /tmp and BentoML's home are writable emptyDirs, the prediction
    log a folder of the shared claim; nothing else is writable.
    """
    deployment = _one("Deployment", variant)
    where, container = _main_container(deployment)
    writable = _writable_mounts(deployment, container)
    env = _container_env(variant, container)
    home = env.get("BENTOML_HOME")
    assert home, deployment.at(f"{where}.env BENTOML_HOME: unset (the image's home is read-only)")
    assert not home.startswith("/home/bentoml"), deployment.at(
        f"{where}.env BENTOML_HOME={home}: a mount there would hide the bento "
        f"(BENTO_PATH=/home/bentoml/bento)"
    )
    for path in ("/tmp", home):
        assert path in writable, deployment.at(f"{where}.volumeMounts: nothing writable at {path}")
        mount, volume = writable[path]
        assert "emptyDir" in volume, deployment.at(
            f"spec.template.spec.volumes {mount['name']}: want a writable emptyDir at {path}"
        )
    log_dir = _prediction_log_dir(monkeypatch, variant)
    assert set(writable) == {"/tmp", home, log_dir}, deployment.at(
        f"{where}.volumeMounts: writable {sorted(writable)}, want only /tmp, {home} and the "
        f"prediction log {log_dir} (every other mount readOnly)"
    )
    # the caches the environment points at are in a writable emptyDir
    for name in ("XDG_CACHE_HOME", "CUDA_CACHE_PATH"):
        if name in env:
            path = PurePosixPath(env[name])
            assert any(path.is_relative_to(p) for p in ("/tmp", home)), deployment.at(
                f"{where}.env {name}={path}: not under /tmp or {home}"
            )


@pytest.mark.parametrize("variant", VARIANTS)
def test_prediction_log_is_the_claim_folder_the_dagster_asset_reads(variant: str, monkeypatch):
    """The service appends to the settings' ``prediction_log_dir`` (MLP_ROOT_DIR/storage/...);
    that path must be a writable mount of the claim the Dagster side mounts, at the folder where
    the Dagster side's settings put its ``prediction_log`` asset's input.
    """
    deployment = _one("Deployment", variant)
    where, container = _main_container(deployment)
    log_dir = _prediction_log_dir(monkeypatch, variant)
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == log_dir]
    assert len(mounts) == 1, deployment.at(f"{where}.volumeMounts: {len(mounts)} mounts at {log_dir}, want 1")
    (mount,) = mounts
    assert log_dir in _writable_mounts(deployment, container), deployment.at(
        f"{where}.volumeMounts {log_dir}: read-only (the service appends the log there)"
    )
    shadowing = [
        m["mountPath"]
        for m in container.get("volumeMounts", [])
        if m is not mount and PurePosixPath(m["mountPath"]).is_relative_to(log_dir)
    ]
    assert not shadowing, deployment.at(f"{where}.volumeMounts {shadowing}: inside the prediction log")

    # the Dagster side: its claim, where it mounts it, and where its settings put the log
    user = _dagster_user_deployment()
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"] for v in user["volumes"] if "persistentVolumeClaim" in v
    ]
    (storage,) = user["volumeMounts"]
    assert "subPath" not in storage, f"{HELM_VALUES.name}: the Dagster side mounts the whole claim"
    root = _DOCKERFILE_ROOT.search(DOCKERFILE.read_text())
    assert root, f"{DOCKERFILE.name}: no ENV MLP_ROOT_DIR"
    dagster_env = {"MLP_ROOT_DIR": root.group(1)} | {
        e["name"]: str(e["value"]) for e in user.get("env", []) if "value" in e
    }
    dagster_log = _settings(monkeypatch, {k: v for k, v in dagster_env.items() if k in _PATH_SETTINGS})
    in_claim = PurePosixPath(dagster_log.prediction_log_dir).relative_to(storage["mountPath"])

    volume = {v["name"]: v for v in _pod(deployment)["spec"]["volumes"]}[mount["name"]]
    assert volume.get("persistentVolumeClaim", {}).get("claimName") == claim, deployment.at(
        f"spec.template.spec.volumes {mount['name']}: want the Dagster side's claim {claim!r}"
    )
    assert PurePosixPath(mount.get("subPath", "")) == in_claim, deployment.at(
        f"{where}.volumeMounts {log_dir}: subPath {mount.get('subPath')!r}, want {in_claim.as_posix()!r} "
        f"(where the Dagster side's prediction_log asset reads, {dagster_log.prediction_log_dir})"
    )
    # same path on both sides, as the MLflow artifacts' (the log names no path, but one layout)
    assert log_dir == str(dagster_log.prediction_log_dir), deployment.at(
        f"{where}: the Bento logs to {log_dir}, the Dagster side reads {dagster_log.prediction_log_dir}"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_may_write_the_dagster_sides_log_folder_without_changing_its_files(variant: str):
    """The Bento (UID 1034) joins the group that owns the claim's files (the Dagster side's
    fsGroup); no fsGroup of its own, which would make the kubelet change the group of the claim.
    """
    user = _dagster_user_deployment()
    group = user["podSecurityContext"]["fsGroup"]
    deployment = _one("Deployment", variant)
    ctx = _pod(deployment)["spec"].get("securityContext", {})
    assert "fsGroup" not in ctx, deployment.at("spec.template.spec.securityContext.fsGroup")
    assert group in ctx.get("supplementalGroups", []), deployment.at(
        f"spec.template.spec.securityContext.supplementalGroups: want the Dagster side's group {group}"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_pod_writes_its_own_log_files(variant: str, monkeypatch):
    """Two replicas never append to one file: the writer names its files <hostname>-<pid> and a
    pod's hostname is its (unique) name, unless the pod template sets one for all replicas.
    """
    from ml_platform.lib.serving import prediction_log

    deployment = _one("Deployment", variant)
    spec = _pod(deployment)["spec"]
    assert "hostname" not in spec, deployment.at("spec.template.spec.hostname: every replica would share it")
    assert spec.get("hostNetwork") is not True, deployment.at("spec.template.spec.hostNetwork")
    monkeypatch.setattr(prediction_log.socket, "gethostname", lambda: POD_NAME)
    assert prediction_log.default_file_stem() == f"{POD_NAME}-{os.getpid()}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_artifacts_are_the_claim_the_dagster_side_writes(variant: str):
    """Production logs MLflow artifacts on the shared claim (MLP_MLFLOW_ARTIFACT_ROOT's default)."""
    helm = yaml.safe_load(HELM_VALUES.read_text())
    (user,) = helm["dagster-user-deployments"]["deployments"]
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"] for v in user["volumes"] if "persistentVolumeClaim" in v
    ]
    (storage,) = [m["mountPath"] for m in user["volumeMounts"]]
    deployment = _one("Deployment", variant)
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_is_pinned_by_a_tag_never_latest(variant: str):
    deployment = _one("Deployment", variant)
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_requests_and_limits(variant: str):
    deployment = _one("Deployment", variant)
    for where, container in _containers(deployment):
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(part, {}))
            assert not missing, deployment.at(f"{where}.resources.{part}: no {sorted(missing)}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_credentials_come_only_from_secret_key_refs(variant: str):
    deployment = _one("Deployment", variant)
    configmap = _one("ConfigMap", variant)
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


# --- the GPU overlay ------------------------------------------------------------------------------

#: What the GPU overlay adds to the container's environment (and nothing else of it).
GPU_ENV = {"NVIDIA_DRIVER_CAPABILITIES", "CUDA_CACHE_PATH", "MLP_SERVING_DEVICE"}


def _gpus(deployment: Manifest) -> dict[str, tuple[object, object]]:
    """GPUs asked for per container: where -> (request, limit), only the containers that ask."""
    asked = {}
    for where, container in _containers(deployment):
        resources = container.get("resources", {})
        request = resources.get("requests", {}).get(GPU_RESOURCE)
        limit = resources.get("limits", {}).get(GPU_RESOURCE)
        if request is not None or limit is not None:
            asked[where] = (request, limit)
    return asked


def test_base_asks_for_no_gpu():
    deployment = _one("Deployment")
    pod = _pod(deployment)["spec"]
    assert not _gpus(deployment), deployment.at(f"{GPU_RESOURCE}: {_gpus(deployment)} (the base is CPU-only)")
    assert not set(pod.get("nodeSelector", {})) & set(GPU_NODE_SELECTOR), deployment.at(
        "spec.template.spec.nodeSelector: the GPU nodes"
    )
    assert not [t for t in pod.get("tolerations", []) if t.get("key") == GPU_RESOURCE], deployment.at(
        "spec.template.spec.tolerations: the GPU nodes' taint"
    )


def test_gpu_overlay_asks_for_one_gpu_on_the_gpu_nodes():
    """One ``nvidia.com/gpu``, and the GPU nodes' toleration and node selector of the platform's GPU
    steps (``ml_platform/defs/k8s.py``, ``k8s_tags(..., gpus=1)``).
    """
    step = k8s_tags(DELAY_MODEL, "small", gpus=1, model=DELAY_MODEL)[K8S_CONFIG_TAG]
    step_limit = step["container_config"]["resources"]["limits"][GPU_RESOURCE]
    deployment = _one("Deployment", "gpu")
    pod = _pod(deployment)["spec"]
    where, _ = _main_container(deployment)
    asked = _gpus(deployment)
    assert list(asked) == [where], deployment.at(
        f"{GPU_RESOURCE}: asked by {sorted(asked)}, want {where} only"
    )
    request, limit = asked[where]
    assert str(limit) == step_limit == "1", deployment.at(
        f"{where}.resources.limits[{GPU_RESOURCE}]: {limit!r}, want exactly one GPU"
    )
    # an extended resource: the request defaults to the limit, and may only equal it
    assert request is None or str(request) == str(limit), deployment.at(
        f"{where}.resources.requests[{GPU_RESOURCE}]: {request!r} != limit {limit!r}"
    )
    assert pod.get("nodeSelector") == step["pod_spec_config"]["node_selector"] == GPU_NODE_SELECTOR, (
        deployment.at(f"spec.template.spec.nodeSelector: {pod.get('nodeSelector')}, want {GPU_NODE_SELECTOR}")
    )
    assert pod.get("tolerations") == step["pod_spec_config"]["tolerations"], deployment.at(
        f"spec.template.spec.tolerations: {pod.get('tolerations')}, "
        f"want the GPU steps' {step['pod_spec_config']['tolerations']}"
    )


def test_gpu_overlay_env_leaves_the_device_to_the_device_plugin():
    deployment = _one("Deployment", "gpu")
    where, container = _main_container(deployment)
    env = _container_env("gpu", container)
    # the device plugin names the allocated GPU; `all` would expose every GPU of the node
    assert "NVIDIA_VISIBLE_DEVICES" not in env, deployment.at(f"{where}.env NVIDIA_VISIBLE_DEVICES")
    capabilities = env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(",")
    assert "compute" in capabilities, deployment.at(
        f"{where}.env NVIDIA_DRIVER_CAPABILITIES: {capabilities}, want compute (CUDA)"
    )
    # the service scores on the GPU (settings' serving_device, a value it accepts); the base on the CPU
    from ml_platform.settings import PlatformSettings

    device = env.get("MLP_SERVING_DEVICE")
    assert device == "cuda", deployment.at(f"{where}.env MLP_SERVING_DEVICE: {device}, want cuda")
    assert PlatformSettings(serving_device=device).serving_device == "cuda"
    _, base_container = _main_container(_one("Deployment", "base"))
    assert "MLP_SERVING_DEVICE" not in _container_env("base", base_container)


def test_gpu_overlay_changes_nothing_but_the_gpu_fields():
    """Every other check of the base therefore holds for the overlay too."""
    base = {(m.kind, m.name): m.doc for m in RENDERED["base"]}
    gpu = {(m.kind, m.name): m for m in RENDERED["gpu"]}
    assert set(gpu) == set(base), f"{_relative(GPU_OVERLAY)}: resources {sorted(gpu)} vs base {sorted(base)}"
    for key, manifest in gpu.items():
        doc = copy.deepcopy(manifest.doc)
        if manifest.kind == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            pod.pop("nodeSelector", None)
            pod.pop("tolerations", None)
            for container in pod["containers"]:
                for part in ("requests", "limits"):
                    container.get("resources", {}).get(part, {}).pop(GPU_RESOURCE, None)
                container["env"] = [e for e in container.get("env", []) if e["name"] not in GPU_ENV]
        assert doc == base[key], manifest.at("differs from the base beyond the GPU fields")


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
