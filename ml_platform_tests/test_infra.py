"""``infra/aws``, the Terraform for AWS, checked offline: no AWS account, no network.

1. **Structure** (python-hcl2 parses every ``.tf`` file): what the deployment relies on is asserted
   against the code and the Helm values it must fit: the GPU spot node group carries the label and
   taint that ``ml_platform.defs.k8s`` puts on GPU steps; each S3 bucket is encrypted, versioned,
   private, TLS-only, logged and has lifecycle rules; RDS is private, encrypted, backed up and
   deletion-protected, with an RDS-managed master password; the IRSA roles trust exactly the
   service accounts of ``deploy/helm/values-production.yaml``; no literal secret anywhere;
   Terraform and provider versions are pinned; every variable has a type and a description.
2. **checkov** (``make checkov`` installs the pinned version in ``.venv-checkov``): offline checkov
   has no severities (Prisma Cloud's API assigns them), so every failed check counts as a
   high-severity finding: it must be fixed, or skipped inline with ``#checkov:skip=<id>:<reason>``
   and listed with its reason in ``infra/README.md``. A missing checkov fails the test.
3. **terraform validate and terraform test** (a mocked provider plans the whole configuration),
   only where a ``terraform`` binary and the pinned AWS provider are on disk (a plugin directory,
   ``MLP_TF_PLUGIN_DIR``, default ``/opt/tf-plugins``); skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from ml_platform.defs import k8s
from ml_platform.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
AWS = INFRA / "aws"
README = INFRA / "README.md"
HELM_VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
CHART_REFERENCE = ROOT / "deploy" / "helm" / "reference" / "dagster-values.excerpt.yaml"
BENTO_DEPLOYMENT = ROOT / "deploy" / "bento" / "base" / "deployment.yaml"
CHECKOV_REQUIREMENTS = INFRA / "checkov-requirements.txt"
CHECKOV = Path(os.environ.get("MLP_CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov")))

OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
#: ``${local.name}`` / ``${var.name}`` (also the ``(local.name)`` form of a computed map key).
REFERENCE = re.compile(r"^\$\{\(?(local|var)\.([A-Za-z0-9_]+)\)?\}$")
#: Attribute names that would hold a secret if given a literal string.
SECRET_ATTRIBUTE = re.compile(
    r"(^|_)(password|passwd|secret|secret_string|secret_key|access_key|access_key_id|token|private_key)(_|$)",
    re.I,
)
#: Of those, the ones that never hold a secret value (flags, lengths, versions, ARNs, ids, names).
NOT_A_SECRET = re.compile(
    r"^(manage_master_user_password|password_length|exclude_\w+|require_each_included_type"
    r"|secret_string_wo_version|\w+_version|(?!\w*access_key_id$)\w+_(arn|id|name)s?)$"
)
#: checkov's text for a skip comment without a reason.
NO_REASON = "No comment provided"
#: Checks that must have run and passed: proof that checkov evaluated what matters (an unresolved
#: expression makes a check silently UNKNOWN, neither passed nor failed).
MUST_PASS = {
    ("CKV_AWS_58", "aws_eks_cluster.main"),  # EKS secrets encryption
    ("CKV_AWS_37", "aws_eks_cluster.main"),  # control-plane logging
    ("CKV_AWS_38", "aws_eks_cluster.main"),  # public endpoint not open to 0.0.0.0/0
    ("CKV_AWS_16", "aws_db_instance.main"),  # RDS storage encrypted
    ("CKV_AWS_17", "aws_db_instance.main"),  # RDS not publicly accessible
    ("CKV_AWS_157", "aws_db_instance.main"),  # Multi-AZ
    ("CKV_AWS_293", "aws_db_instance.main"),  # deletion protection
    ("CKV_AWS_129", "aws_db_instance.main"),  # logs exported
    ("CKV2_AWS_60", "aws_db_instance.main"),  # copy tags to snapshots
    ("CKV_AWS_145", "aws_s3_bucket.data"),  # KMS by default
    ("CKV_AWS_145", "aws_s3_bucket.artifacts"),
    ("CKV2_AWS_6", "aws_s3_bucket.data"),  # public access block
    ("CKV2_AWS_6", "aws_s3_bucket.artifacts"),
    ("CKV2_AWS_6", "aws_s3_bucket.access_logs"),
    ("CKV_AWS_21", "aws_s3_bucket.data"),  # versioning
    ("CKV_AWS_21", "aws_s3_bucket.artifacts"),
    ("CKV_AWS_21", "aws_s3_bucket.access_logs"),
    ("CKV2_AWS_61", "aws_s3_bucket.data"),  # lifecycle configuration
    ("CKV2_AWS_61", "aws_s3_bucket.artifacts"),
    ("CKV2_AWS_61", "aws_s3_bucket.access_logs"),
    ("CKV_AWS_18", "aws_s3_bucket.data"),  # access logging
    ("CKV_AWS_18", "aws_s3_bucket.artifacts"),
    ("CKV_AWS_300", "aws_s3_bucket_lifecycle_configuration.artifacts"),  # abort multipart uploads
    ("CKV_AWS_149", "aws_secretsmanager_secret.ml_platform_env"),  # secrets under a CMK
    ("CKV_AWS_149", "aws_secretsmanager_secret.dagster_postgresql"),
    ("CKV_AWS_7", 'aws_kms_key.this["s3"]'),  # key rotation
    ("CKV_AWS_79", 'aws_launch_template.node["gpu"]'),  # IMDSv2 only
    ("CKV_AWS_341", 'aws_launch_template.node["gpu"]'),  # metadata hop limit 1
    ("CKV_AWS_51", "aws_ecr_repository.ml_platform"),  # immutable tags
    ("CKV_AWS_136", "aws_ecr_repository.ml_platform"),  # ECR encrypted with KMS
    ("CKV_AWS_42", "aws_efs_file_system.storage"),  # EFS encrypted
    ("CKV2_AWS_11", "aws_vpc.main"),  # VPC flow logs
    ("CKV2_AWS_12", "aws_vpc.main"),  # default security group closed
    ("CKV_AWS_338", "aws_cloudwatch_log_group.eks"),  # log retention >= 1 year
    ("CKV_AWS_158", "aws_cloudwatch_log_group.eks"),  # log group encrypted
}


# --- parsing -----------------------------------------------------------------------------------


def _parse(path: Path) -> dict[str, Any]:
    try:
        with path.open() as handle:
            parsed = hcl2.load(handle, serialization_options=OPTIONS)
    except Exception as error:  # any parser error is the finding
        pytest.fail(f"{path.relative_to(ROOT)} does not parse as HCL2: {error}")
    assert isinstance(parsed, dict), path
    return parsed


def _tf_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tf"))


def _all_hcl_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file() and not {".terraform"} & set(p.parts)]
    return sorted(
        p
        for p in files
        if p.suffix in {".tf", ".hcl"} or p.name.endswith((".tfvars.example", ".hcl.example"))
    )


class Config:
    """The blocks of one Terraform module (all ``*.tf`` files of one folder), by address."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.resources: dict[str, dict[str, Any]] = {}
        self.data: dict[str, dict[str, Any]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.terraform: list[dict[str, Any]] = []
        self.providers: list[tuple[str, dict[str, Any]]] = []
        self.where: dict[str, str] = {}
        for path in _tf_files(folder):
            parsed = _parse(path)
            name = path.relative_to(ROOT).as_posix()
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in parsed.get(kind, []):
                    for rtype, named in block.items():
                        for rname, body in named.items():
                            address = f"{rtype}.{rname}"
                            assert address not in target, f"{kind} {address} declared twice"
                            target[address] = body
                            self.where[f"{kind}:{address}"] = name
            for kind, target in (
                ("variable", self.variables),
                ("output", self.outputs),
                ("module", self.modules),
            ):
                for block in parsed.get(kind, []):
                    for bname, body in block.items():
                        target[bname] = body
                        self.where[f"{kind}:{bname}"] = name
            for block in parsed.get("locals", []):
                self.locals.update(block)
            self.terraform.extend(parsed.get("terraform", []))
            for block in parsed.get("provider", []):
                self.providers.extend(block.items())

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {
            address.split(".", 1)[1]: body
            for address, body in self.resources.items()
            if address.startswith(rtype + ".")
        }

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """``value`` with a whole-value ``${local.x}`` / ``${var.x}`` replaced by what it names (a
        variable by its default), recursively through lists and maps (keys too)."""
        assert depth < 20, f"reference loop at {value!r}"
        if isinstance(value, str):
            match = REFERENCE.match(value)
            if not match:
                return value
            kind, name = match.groups()
            if kind == "local":
                assert name in self.locals, f"local.{name} is not defined in {self.folder}"
                return self.resolve(self.locals[name], depth + 1)
            assert name in self.variables, f"var.{name} is not declared in {self.folder}"
            assert "default" in self.variables[name], f"var.{name} has no default to check against"
            return self.resolve(self.variables[name]["default"], depth + 1)
        if isinstance(value, list):
            return [self.resolve(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {self.resolve(k, depth + 1): self.resolve(v, depth + 1) for k, v in value.items()}
        return value

    def interpolate(self, text: str) -> str:
        """``text`` with every ``${local.x}`` / ``${var.x}`` inside it replaced by its scalar value."""
        return re.sub(r"\$\{(local|var)\.(\w+)\}", lambda m: str(self.resolve(m.group(0))), text)


@pytest.fixture(scope="module")
def config() -> Config:
    assert AWS.is_dir(), "infra/aws is missing"
    return Config(AWS)


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert isinstance(values, dict)
    return values


def _helm_env(helm: dict[str, Any]) -> dict[str, str]:
    deployments = helm["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "expected the one ml-platform user code deployment"
    return {item["name"]: item.get("value", "") for item in deployments[0].get("env", [])}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) of a parsed HCL tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")
    else:
        yield path, node


def _one(blocks: Any, what: str) -> dict[str, Any]:
    assert isinstance(blocks, list) and len(blocks) == 1, (
        f"{what}: expected exactly one block, got {blocks!r}"
    )
    block = blocks[0]
    assert isinstance(block, dict)
    return block


# --- 1. structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _all_hcl_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_hcl_file_parses(path: Path) -> None:
    _parse(path)


def test_the_expected_files_exist() -> None:
    for name in (
        "versions.tf",
        "variables.tf",
        "main.tf",
        "network.tf",
        "eks.tf",
        "s3.tf",
        "rds.tf",
        "iam.tf",
        "secrets.tf",
        "efs.tf",
        "ecr.tf",
        "outputs.tf",
        "terraform.tfvars.example",
        "backend.hcl.example",
    ):
        assert (AWS / name).is_file(), f"infra/aws/{name} is missing"


def _module_folders() -> list[Path]:
    return [AWS, *sorted(p.parent for p in (AWS / "modules").rglob("main.tf"))]


@pytest.mark.parametrize("folder", _module_folders(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_terraform_and_provider_versions_are_pinned(folder: Path) -> None:
    module = Config(folder)
    assert module.terraform, f"{folder.relative_to(ROOT)}: no terraform block"
    block = module.terraform[0]
    required = str(block.get("required_version", ""))
    assert re.search(r">=\s*1\.11\.\d+", required), (
        f"{folder.relative_to(ROOT)}: required_version {required!r} must require Terraform >= 1.11 "
        "(write-only arguments and ephemeral resources)"
    )
    providers = _one(block.get("required_providers"), f"{folder.relative_to(ROOT)} required_providers")
    assert providers, f"{folder.relative_to(ROOT)}: required_providers is empty"
    for name, spec in providers.items():
        assert spec.get("source"), f"{folder.relative_to(ROOT)}: provider {name} has no source"
        version = str(spec.get("version", ""))
        assert re.fullmatch(r"=?\s*\d+\.\d+\.\d+", version), (
            f"{folder.relative_to(ROOT)}: provider {name} version {version!r} is not an exact pin (= X.Y.Z)"
        )


def test_modules_pin_the_root_provider_version(config: Config) -> None:
    root = _one(config.terraform[0]["required_providers"], "required_providers")["aws"]["version"]
    for folder in _module_folders()[1:]:
        module = Config(folder)
        version = _one(module.terraform[0]["required_providers"], "required_providers")["aws"]["version"]
        assert version == root, f"{folder.relative_to(ROOT)} pins aws {version}, the root {root}"


@pytest.mark.parametrize(
    "folder",
    [*_module_folders(), AWS / "tests" / "stub-generated-password"],
    ids=lambda p: p.relative_to(INFRA).as_posix(),
)
def test_every_variable_has_a_type_and_a_description(folder: Path) -> None:
    module = Config(folder)
    for name, body in module.variables.items():
        where = module.where[f"variable:{name}"]
        assert body.get("type"), f"{where}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{where}: variable {name} has no description"


def test_every_non_boolean_root_variable_is_validated(config: Config) -> None:
    for name, body in config.variables.items():
        if body.get("type") in ("bool", "${bool}"):
            continue
        assert body.get("validation"), (
            f"{config.where['variable:' + name]}: variable {name} has no validation block"
        )
        for validation in body["validation"]:
            assert validation.get("condition") and validation.get("error_message"), (
                f"variable {name}: a validation needs a condition and an error_message"
            )


def test_every_output_has_a_description(config: Config) -> None:
    for name, body in config.outputs.items():
        assert str(body.get("description", "")).strip(), (
            f"{config.where['output:' + name]}: output {name} has no description"
        )


def test_the_example_variables_are_declared_and_cover_the_required_ones(config: Config) -> None:
    example = _parse(AWS / "terraform.tfvars.example")
    for name in example:
        assert name in config.variables, (
            f"terraform.tfvars.example sets {name}, which variables.tf does not declare"
        )
    required = [name for name, body in config.variables.items() if "default" not in body]
    for name in required:
        assert name in example, f"terraform.tfvars.example must set the required variable {name}"


def test_gpu_node_group_is_spot_from_zero_with_the_label_and_taint_of_gpu_steps(config: Config) -> None:
    groups = config.of_type("aws_eks_node_group")
    gpu = groups.get("gpu")
    assert gpu is not None, "eks.tf: no aws_eks_node_group.gpu"
    assert gpu.get("capacity_type") == "SPOT", (
        f"aws_eks_node_group.gpu: capacity_type {gpu.get('capacity_type')!r}, expected SPOT"
    )
    assert "NVIDIA" in str(gpu.get("ami_type")), (
        f"aws_eks_node_group.gpu: ami_type {gpu.get('ami_type')!r} is not an NVIDIA AMI"
    )
    scaling = _one(gpu.get("scaling_config"), "aws_eks_node_group.gpu scaling_config")
    assert scaling["min_size"] == 0, (
        f"aws_eks_node_group.gpu: min_size {scaling['min_size']!r}, expected 0 (no idle GPU cost)"
    )
    instance_types = config.resolve(gpu["instance_types"])
    assert instance_types, "aws_eks_node_group.gpu: no instance types"
    for itype in instance_types:
        assert re.match(r"^(g4dn|g5|g6|g6e|gr6)\.", itype), (
            f"aws_eks_node_group.gpu: {itype} is not an NVIDIA GPU instance type"
        )

    # what ml_platform.defs.k8s puts on a GPU step: node selector and toleration
    pod_spec = k8s.k8s_tags("delay_model", "train", gpus=1)[k8s.K8S_CONFIG_TAG]["pod_spec_config"]
    labels = config.resolve(gpu.get("labels", {}))
    for key, value in pod_spec["node_selector"].items():
        assert labels.get(key) == value, (
            f"aws_eks_node_group.gpu labels {labels} lack {key}={value}, "
            "the node selector of GPU steps (defs/k8s.py)"
        )
    taints = [config.resolve(t) for t in gpu.get("taint", [])]
    effects = {
        "NoSchedule": "NO_SCHEDULE",
        "NoExecute": "NO_EXECUTE",
        "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    }
    for toleration in pod_spec["tolerations"]:
        matching = [
            t
            for t in taints
            if t["key"] == toleration["key"] and t["effect"] == effects[toleration["effect"]]
        ]
        assert matching, (
            f"aws_eks_node_group.gpu taints {taints} lack the one GPU steps tolerate: {toleration}"
        )
    assert [t["key"] for t in taints] == [k8s.GPU_RESOURCE], (
        f"aws_eks_node_group.gpu: taints {taints}: "
        "a taint GPU steps do not tolerate would keep them off the node"
    )
    # nothing else lands there by accident: only the GPU group has the GPU label
    for name, group in groups.items():
        if name != "gpu":
            assert not set(pod_spec["node_selector"]) & set(config.resolve(group.get("labels", {}))), (
                f"aws_eks_node_group.{name} carries the GPU node label"
            )


def test_gpu_node_group_can_scale_from_zero(config: Config) -> None:
    tags = {
        config.interpolate(key): config.interpolate(str(value))
        for key, value in config.of_type("aws_autoscaling_group_tag")["gpu_node_template"]["for_each"].items()
    }
    prefix = "k8s.io/cluster-autoscaler/node-template"
    expected = {f"{prefix}/label/{key}": value for key, value in k8s.GPU_NODE_SELECTOR.items()}
    expected[f"{prefix}/taint/{k8s.GPU_RESOURCE}"] = "true:NoSchedule"
    expected[f"{prefix}/resources/{k8s.GPU_RESOURCE}"] = "1"
    for key, value in expected.items():
        assert tags.get(key) == value, (
            f"aws_autoscaling_group_tag.gpu_node_template: {key}={value} missing, got {tags}"
        )


def test_buckets_are_encrypted_versioned_private_tls_only_logged_with_lifecycle_rules(config: Config) -> None:
    buckets = config.of_type("aws_s3_bucket")
    assert {"data", "artifacts", "access_logs"} <= set(buckets), (
        f"expected the data, artifacts and access_logs buckets, got {sorted(buckets)}"
    )

    def companion(rtype: str, bucket: str) -> dict[str, Any]:
        found = [
            body
            for body in config.of_type(rtype).values()
            if body.get("bucket") == f"${{aws_s3_bucket.{bucket}.id}}"
        ]
        assert len(found) == 1, f"aws_s3_bucket.{bucket}: expected one {rtype}, found {len(found)}"
        return found[0]

    for name, bucket in buckets.items():
        assert bucket.get("force_destroy") is False, f"aws_s3_bucket.{name}: force_destroy must be false"
        block = companion("aws_s3_bucket_public_access_block", name)
        for flag in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        ):
            assert block.get(flag) is True, f"aws_s3_bucket.{name}: public access block {flag} is not true"
        ownership = _one(
            companion("aws_s3_bucket_ownership_controls", name)["rule"], f"{name} ownership rule"
        )
        assert ownership["object_ownership"] == "BucketOwnerEnforced", (
            f"aws_s3_bucket.{name}: ACLs are not disabled"
        )
        versioning = _one(
            companion("aws_s3_bucket_versioning", name)["versioning_configuration"], f"{name} versioning"
        )
        assert versioning["status"] == "Enabled", f"aws_s3_bucket.{name}: versioning is not Enabled"

        sse = _one(
            companion("aws_s3_bucket_server_side_encryption_configuration", name)["rule"], f"{name} SSE rule"
        )
        default = _one(sse["apply_server_side_encryption_by_default"], f"{name} SSE default")
        if name == "access_logs":
            # S3 delivers server access logs only to SSE-S3 buckets (the documented CKV_AWS_145 skip)
            assert default["sse_algorithm"] == "AES256", f"aws_s3_bucket.{name}: expected SSE-S3"
        else:
            assert default["sse_algorithm"] == "aws:kms", f"aws_s3_bucket.{name}: expected SSE-KMS"
            assert "aws_kms_key.this" in str(default.get("kms_master_key_id")), (
                f"aws_s3_bucket.{name}: not this configuration's KMS key"
            )
            assert sse.get("bucket_key_enabled") is True, (
                f"aws_s3_bucket.{name}: S3 Bucket Key off (KMS request cost)"
            )

        rules = companion("aws_s3_bucket_lifecycle_configuration", name).get("rule", [])
        assert rules and all(rule.get("status") == "Enabled" for rule in rules), (
            f"aws_s3_bucket.{name}: no enabled lifecycle rule"
        )
        assert any(rule.get("abort_incomplete_multipart_upload") for rule in rules), (
            f"aws_s3_bucket.{name}: no lifecycle rule aborts incomplete multipart uploads"
        )
        assert any(rule.get("noncurrent_version_expiration") for rule in rules), (
            f"aws_s3_bucket.{name}: no lifecycle rule expires noncurrent versions "
            "(versioning would keep them forever)"
        )
        if name != "access_logs":
            assert any(rule.get("transition") for rule in rules), (
                f"aws_s3_bucket.{name}: no storage-class transition"
            )
            logging = companion("aws_s3_bucket_logging", name)
            assert logging["target_bucket"] == "${aws_s3_bucket.access_logs.id}", (
                f"aws_s3_bucket.{name}: access logs go elsewhere"
            )

        policy = companion("aws_s3_bucket_policy", name)
        document = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", policy["policy"])
        assert document, (
            f"aws_s3_bucket.{name}: the bucket policy is not a policy document of this configuration"
        )
        statements = config.data[f"aws_iam_policy_document.{document.group(1)}"]["statement"]
        tls_only = [
            s
            for s in statements
            if s.get("effect") == "Deny"
            and any(
                c["variable"] == "aws:SecureTransport" and c["values"] == ["false"]
                for c in s.get("condition", [])
            )
            and f"${{aws_s3_bucket.{name}.arn}}" in s.get("resources", [])
            and f"${{aws_s3_bucket.{name}.arn}}/*" in s.get("resources", [])
        ]
        assert tls_only, f"aws_s3_bucket.{name}: the bucket policy does not deny requests without TLS"


def test_rds_is_private_encrypted_backed_up_and_deletion_protected(config: Config) -> None:
    db = config.of_type("aws_db_instance")["main"]
    checks = {
        "publicly_accessible": False,
        "storage_encrypted": True,
        "deletion_protection": True,
        "skip_final_snapshot": False,
        "manage_master_user_password": True,
        "iam_database_authentication_enabled": True,
        "copy_tags_to_snapshot": True,
        "auto_minor_version_upgrade": True,
    }
    for key, expected in checks.items():
        assert db.get(key) is expected, f"aws_db_instance.main: {key} = {db.get(key)!r}, expected {expected}"
    assert "password" not in db and "password_wo" not in db, (
        "aws_db_instance.main: the master password must be managed by RDS"
    )
    for key in ("kms_key_id", "master_user_secret_kms_key_id", "performance_insights_kms_key_id"):
        assert "aws_kms_key.this" in str(db.get(key)), (
            f"aws_db_instance.main: {key} is not this configuration's KMS key"
        )
    retention = config.resolve(db["backup_retention_period"])
    assert isinstance(retention, int) and retention >= 7, (
        f"aws_db_instance.main: backups kept {retention!r} days, expected >= 7"
    )
    assert config.resolve(db["multi_az"]) is True, "aws_db_instance.main: Multi-AZ off by default"

    parameters = {
        p["name"]: p["value"] for p in config.of_type("aws_db_parameter_group")["main"]["parameter"]
    }
    assert parameters.get("rds.force_ssl") == "1", (
        "aws_db_parameter_group.main: rds.force_ssl is not 1 (TLS only)"
    )

    ingress = [
        r
        for r in config.of_type("aws_vpc_security_group_ingress_rule").values()
        if r["security_group_id"] == "${aws_security_group.rds.id}"
    ]
    assert ingress, "the RDS security group has no ingress rule"
    for rule in ingress:
        assert "cidr_ipv4" not in rule and "cidr_ipv6" not in rule, f"RDS ingress by CIDR: {rule}"
        assert "cluster_security_group_id" in str(rule.get("referenced_security_group_id")), (
            f"RDS ingress not from the EKS cluster: {rule}"
        )


def test_eks_cluster_is_private_logged_and_encrypts_secrets(config: Config) -> None:
    cluster = config.of_type("aws_eks_cluster")["main"]
    vpc = _one(cluster["vpc_config"], "aws_eks_cluster.main vpc_config")
    assert vpc["endpoint_private_access"] is True, "aws_eks_cluster.main: private endpoint off"
    public = str(vpc["endpoint_public_access"])
    assert "cluster_public_endpoint" in public, (
        f"aws_eks_cluster.main: endpoint_public_access {public!r} must follow the CIDR list"
    )
    assert "var.cluster_endpoint_public_access_cidrs" in str(config.locals["cluster_public_endpoint"])
    cidrs = config.variables["cluster_endpoint_public_access_cidrs"]
    assert cidrs["default"] == [], "the public endpoint must be off by default"
    assert "0.0.0.0/0" in str(cidrs["validation"]), (
        "cluster_endpoint_public_access_cidrs must reject 0.0.0.0/0"
    )
    assert sorted(config.resolve(cluster["enabled_cluster_log_types"])) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    ), "aws_eks_cluster.main: not every control-plane log type is enabled"
    encryption = _one(cluster["encryption_config"], "aws_eks_cluster.main encryption_config")
    assert encryption["resources"] == ["secrets"], "aws_eks_cluster.main: Secrets are not envelope-encrypted"
    assert "aws_kms_key.this" in str(encryption["provider"]), (
        "aws_eks_cluster.main: not this configuration's KMS key"
    )
    access = _one(cluster["access_config"], "aws_eks_cluster.main access_config")
    assert access["bootstrap_cluster_creator_admin_permissions"] is False, (
        "the terraform identity must not become cluster admin implicitly"
    )
    for name, template in config.of_type("aws_launch_template").items():
        metadata = _one(template["metadata_options"], f"aws_launch_template.{name} metadata_options")
        assert metadata["http_tokens"] == "required" and metadata["http_put_response_hop_limit"] == 1, (
            f"aws_launch_template.{name}: pods could reach the node role through IMDS"
        )


def test_irsa_roles_trust_exactly_the_service_accounts_of_the_helm_values(
    config: Config, helm: dict[str, Any]
) -> None:
    env = _helm_env(helm)
    namespace = env["MLP_K8S_NAMESPACE"]
    assert helm["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"] == namespace
    service_account = helm["serviceAccount"]["name"]
    accounts = config.resolve(config.locals["irsa_service_accounts"])
    assert accounts["ml_platform"] == {"namespace": namespace, "service_account": service_account}, (
        f"iam.tf irsa_service_accounts.ml_platform {accounts['ml_platform']} is not the Helm values' "
        f"{namespace}/{service_account}"
    )
    # the step pods' service account (MLP_K8S_SERVICE_ACCOUNT's default) is the same
    default_sa = PlatformSettings.model_fields["k8s_service_account"].default
    assert env.get("MLP_K8S_SERVICE_ACCOUNT", default_sa) == service_account
    if BENTO_DEPLOYMENT.is_file():
        bento = yaml.safe_load(BENTO_DEPLOYMENT.read_text())
        assert accounts["serving"] == {
            "namespace": bento["metadata"]["namespace"],
            "service_account": bento["spec"]["template"]["spec"]["serviceAccountName"],
        }, f"iam.tf irsa_service_accounts.serving {accounts['serving']} is not the Bento's service account"
    endpoint = env.get("MLP_LAKEFS_ENDPOINT", "")
    host = re.match(r"^https?://([a-z0-9-]+)\.([a-z0-9-]+)\.svc", endpoint)
    if host:  # the lakeFS service's namespace is the lakeFS server's
        assert accounts["lakefs"]["namespace"] == host.group(2), (
            f"iam.tf irsa_service_accounts.lakefs namespace {accounts['lakefs']['namespace']} "
            "is not the one of "
            f"MLP_LAKEFS_ENDPOINT {endpoint}"
        )

    trust = config.data["aws_iam_policy_document.irsa_trust"]
    assert trust["for_each"] == "${local.irsa_service_accounts}"
    statement = _one(trust["statement"], "irsa_trust statement")
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert _one(statement["principals"], "irsa_trust principals")["identifiers"] == [
        "${aws_iam_openid_connect_provider.eks.arn}"
    ]
    conditions = {c["variable"]: c for c in statement["condition"]}
    sub = conditions["${local.oidc_issuer}:sub"]
    assert sub["test"] == "StringEquals", (
        "IRSA trust: the sub condition must be StringEquals (no wildcard service accounts)"
    )
    assert sub["values"] == ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    aud = conditions["${local.oidc_issuer}:aud"]
    assert aud["test"] == "StringEquals" and aud["values"] == ["sts.amazonaws.com"], (
        "IRSA trust: audience not pinned"
    )
    role = config.of_type("aws_iam_role")["irsa"]
    assert role["for_each"] == "${local.irsa_service_accounts}"
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.irsa_trust[each.key].json}"


def test_iam_policies_grant_no_wildcard_actions_and_no_wildcard_resources(config: Config) -> None:
    for address, document in config.data.items():
        if not address.startswith("aws_iam_policy_document."):
            continue
        for statement in document.get("statement", []):
            if statement.get("effect") == "Deny":
                continue
            actions = statement.get("actions", [])
            for action in actions:
                assert "*" not in action.split(":", 1)[-1] or action.split(":", 1)[-1].startswith(
                    "Describe"
                ), f"{address}: wildcard action {action} in an Allow statement"
            if "*" in statement.get("resources", []):
                assert all(re.match(r"^[a-z0-9-]+:(Describe|Get|List)", a) for a in actions), (
                    f"{address}: resource '*' for actions that are not read-only discovery: {actions}"
                )


def test_secrets_are_the_kubernetes_secrets_of_the_helm_values(config: Config, helm: dict[str, Any]) -> None:
    secrets = config.of_type("aws_secretsmanager_secret")
    env_secret = helm["dagster-user-deployments"]["deployments"][0]["envSecrets"][0]["name"]
    pg_secret = helm["global"]["postgresqlSecretName"]
    assert secrets["ml_platform_env"]["name"].endswith("/" + env_secret)
    assert secrets["dagster_postgresql"]["name"].endswith("/" + pg_secret)
    for name, secret in secrets.items():
        assert "aws_kms_key.this" in str(secret.get("kms_key_id")), (
            f"aws_secretsmanager_secret.{name}: not under this configuration's KMS key"
        )

    versions = config.of_type("aws_secretsmanager_secret_version")
    for name, version in versions.items():
        assert "secret_string" not in version and "secret_binary" not in version, (
            f"aws_secretsmanager_secret_version.{name}: use secret_string_wo (never in plan or state)"
        )
        assert "secret_string_wo" in version and "secret_string_wo_version" in version, (
            f"aws_secretsmanager_secret_version.{name}"
        )
    env_value = versions["ml_platform_env"]["secret_string_wo"]
    keys = ["MLP_MLFLOW_TRACKING_URI", "MLP_OPTUNA_STORAGE", "MLP_NOTIFY"]
    keys += [f"DAGSTER_PG_{part}" for part in ("USERNAME", "PASSWORD", "HOST", "DB", "PORT")]
    for key in keys:
        assert key in env_value, (
            f"the ml-platform-env secret lacks {key} (values-production.yaml, docs/deploy.md step 2)"
        )
    assert "postgresql-password" in versions["dagster_postgresql"]["secret_string_wo"]
    if "MLP_LAKEFS_ENDPOINT" in _helm_env(helm):
        assert "ml_platform_lakefs" in secrets, "lakeFS keys (MLP_LAKEFS_*) have no secret"
    # the host the secret names is the one the chart uses
    assert config.resolve("${var.db_host_in_cluster}") == helm["postgresql"]["postgresqlHost"]


def test_no_literal_secret_in_any_file(config: Config) -> None:
    for path in _all_hcl_files():
        text = path.read_text()
        name = path.relative_to(ROOT)
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{name}: looks like an AWS access key id"
        assert "-----BEGIN" not in text, f"{name}: contains a PEM block"
        for key_path, value in _walk(_parse(path)):
            key = re.split(r"[.\[]", key_path.split(".")[-1])[0]
            if not SECRET_ATTRIBUTE.search(key) or NOT_A_SECRET.match(key):
                continue
            if isinstance(value, str) and value and "${" not in value and "stub" not in str(name):
                pytest.fail(
                    f"{name}: {key_path} is a literal string; secrets come from generators or Secrets Manager"
                )
    example = _parse(AWS / "terraform.tfvars.example")
    for key in example:
        assert not SECRET_ATTRIBUTE.search(key), (
            f"terraform.tfvars.example sets {key}: no secret belongs there"
        )


def test_resources_carry_the_cost_tag_of_the_pods(config: Config) -> None:
    provider = dict(config.providers)["aws"]
    assert _one(provider["default_tags"], "default_tags")["tags"] == "${local.tags}"
    assert f'"{k8s.TEAM_LABEL}" = var.team' in config.locals["tags"], (
        f"local.tags must set {k8s.TEAM_LABEL} = var.team (the pods' cost label, defs/k8s.py)"
    )
    assert config.variables["team"]["default"] == PlatformSettings.model_fields["cost_team"].default, (
        "var.team's default must be MLP_COST_TEAM's default, so the AWS tag and the pod label agree"
    )
    for name, template in config.of_type("aws_launch_template").items():
        specs = template.get("dynamic", [{}])[0].get("tag_specifications", {})
        assert "local.tags" in json.dumps(specs), (
            f"aws_launch_template.{name}: instances and volumes are not cost-tagged"
        )
    for name, group in config.of_type("aws_eks_node_group").items():
        assert config.resolve(group["labels"]).get(k8s.TEAM_LABEL) == config.variables["team"]["default"], (
            f"aws_eks_node_group.{name}: nodes lack the {k8s.TEAM_LABEL} label"
        )


def test_kms_keys_rotate(config: Config) -> None:
    key = config.of_type("aws_kms_key")["this"]
    assert key["enable_key_rotation"] is True and key["deletion_window_in_days"] >= 7


def test_helm_overlay_sets_a_key_the_chart_has(config: Config) -> None:
    chart = yaml.safe_load(CHART_REFERENCE.read_text())
    assert "annotations" in chart["serviceAccount"], "the chart has no serviceAccount.annotations"
    overlay = config.outputs["helm_values_overlay"]["value"]
    assert (
        "serviceAccount" in overlay
        and "eks.amazonaws.com/role-arn" in overlay
        and 'irsa[\\"ml_platform\\"]' in json.dumps(overlay)
    )


def test_readme_names_only_existing_outputs(config: Config) -> None:
    text = README.read_text()
    named = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", text))
    assert named, "infra/README.md shows no `terraform output` command"
    missing = named - set(config.outputs)
    assert not missing, f"infra/README.md uses outputs that outputs.tf does not define: {sorted(missing)}"


# --- 2. checkov --------------------------------------------------------------------------------


def _checkov_pin() -> str:
    match = re.search(r"^checkov==(\S+)$", CHECKOV_REQUIREMENTS.read_text(), re.MULTILINE)
    assert match, "infra/checkov-requirements.txt does not pin checkov"
    return match.group(1)


@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.fail(
            f"checkov not found at {CHECKOV}: run `make checkov` (`make test` runs it first), which installs "
            f"checkov=={_checkov_pin()} into .venv-checkov; or point MLP_CHECKOV at a checkov executable"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CKV_", "BC_", "PRISMA_", "CHECKOV_"))}
    command = [
        str(CHECKOV),
        "--directory", str(INFRA),
        "--framework", "terraform",
        "--output", "json",
        "--compact",
        "--download-external-modules", "false",
        "--skip-download",
        "--skip-results-upload",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov did not print a JSON report (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    reports = report if isinstance(report, list) else [report]
    terraform = [r for r in reports if r.get("check_type") == "terraform"]
    assert len(terraform) == 1, (
        f"expected one terraform report from checkov, got {[r.get('check_type') for r in reports]}"
    )
    return terraform[0]


def _finding(result: dict[str, Any]) -> str:
    lines = result.get("file_line_range") or ["?", "?"]
    where = f"infra{result['file_path']}:{lines[0]}-{lines[1]}"
    return f"{result['check_id']} {result['resource']} ({where}): {result['check_name']}"


@pytest.mark.slow
def test_checkov_runs_the_pinned_version_and_parses_everything(checkov: dict[str, Any]) -> None:
    summary = checkov["summary"]
    assert summary["checkov_version"] == _checkov_pin(), (
        f"checkov {summary['checkov_version']} ran, infra/checkov-requirements.txt pins {_checkov_pin()}: "
        "run `make checkov`"
    )
    assert summary["parsing_errors"] == 0, (
        f"checkov could not parse: {checkov['results'].get('parsing_errors')}"
    )
    assert summary["resource_count"] >= 100, f"checkov scanned only {summary['resource_count']} resources"


@pytest.mark.slow
def test_checkov_finds_nothing_that_is_not_fixed_or_documented(checkov: dict[str, Any]) -> None:
    # Offline checkov has no severities: every failed check is treated as HIGH.
    failed = checkov["results"]["failed_checks"]
    assert not failed, (
        "checkov findings (fix them, or skip inline with #checkov:skip=<id>:<reason> "
        "and document the skip in "
        "infra/README.md):\n" + "\n".join(_finding(r) for r in failed)
    )


@pytest.mark.slow
def test_checkov_evaluated_the_checks_that_matter(checkov: dict[str, Any]) -> None:
    passed = {(r["check_id"], r["resource"]) for r in checkov["results"]["passed_checks"]}
    missing = sorted(MUST_PASS - passed)
    assert not missing, f"checks that did not pass (failed, skipped, or not evaluated): {missing}"


@pytest.mark.slow
def test_every_skip_has_a_reason_and_is_documented(checkov: dict[str, Any]) -> None:
    skipped = checkov["results"]["skipped_checks"]
    table = {
        (check, resource)
        for check, resource in re.findall(
            r"^\|\s*`?(CKV2?_[A-Z]+_\d+)`?\s*\|\s*`?([\w.\[\]\"]+)`?\s*\|", README.read_text(), re.MULTILINE
        )
    }
    reported = set()
    for result in skipped:
        reason = result["check_result"].get("suppress_comment", "")
        key = (result["check_id"], result["resource"])
        reported.add(key)
        assert reason and reason != NO_REASON and len(reason) >= 30, (
            f"skip without a written reason: {_finding(result)}"
        )
        assert key in table, (
            f"skip not documented in infra/README.md's skip table: {_finding(result)} ({reason})"
        )
    stale = sorted(table - reported)
    assert not stale, f"infra/README.md documents skips checkov no longer reports: {stale}"
    # the only skips are inline ones next to their resource (no global skip list, no config file)
    for folder in (ROOT, INFRA, AWS, Path.home()):
        for name in (".checkov.yaml", ".checkov.yml"):
            assert not (folder / name).exists(), f"{folder / name}: skips belong inline, with their reason"
    inline = len(re.findall(r"#\s*checkov:skip=", "".join(p.read_text() for p in INFRA.rglob("*.tf"))))
    assert inline == len(skipped), f"{inline} inline skip comments, checkov reported {len(skipped)} skips"


# --- 3. terraform validate / terraform test (where terraform and the pinned provider are) -------


def _provider_version(config: Config) -> str:
    return str(
        _one(config.terraform[0]["required_providers"], "required_providers")["aws"]["version"]
    ).lstrip("= ")


@pytest.fixture(scope="module")
def terraform_workdir(
    config: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    binary = os.environ.get("MLP_TERRAFORM") or shutil.which("terraform")
    plugins = Path(os.environ.get("MLP_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    provider = plugins / "registry.terraform.io" / "hashicorp" / "aws" / _provider_version(config)
    if not binary:
        pytest.skip(
            "no terraform binary (set MLP_TERRAFORM or put terraform on PATH); "
            "the hcl2 and checkov checks still ran"
        )
    if not provider.is_dir():
        pytest.skip(
            f"the pinned AWS provider is not in a local plugin directory ({provider}; set MLP_TF_PLUGIN_DIR)"
        )
    workdir = tmp_path_factory.mktemp("infra-aws")
    shutil.copytree(
        AWS,
        workdir,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"),
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))},
        "TF_IN_AUTOMATION": "1",
        "TF_CLI_CONFIG_FILE": os.devnull,
        "CHECKPOINT_DISABLE": "1",
    }
    init = [binary, "init", "-backend=false", f"-plugin-dir={plugins}", "-input=false", "-no-color"]
    result = subprocess.run(
        init, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"terraform init failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return workdir, {**env, "MLP_TERRAFORM_BINARY": binary}


@pytest.mark.slow
def test_terraform_fmt_and_validate(terraform_workdir: tuple[Path, dict[str, str]]) -> None:
    workdir, env = terraform_workdir
    binary = env["MLP_TERRAFORM_BINARY"]
    fmt = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", "-no-color"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fmt.returncode == 0, f"terraform fmt would change infra/aws:\n{fmt.stdout[-3000:]}"
    validate = subprocess.run(
        [binary, "validate", "-json", "-no-color"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(validate.stdout)
    problems = [
        f"{d['severity']}: {d['summary']} {d.get('range', {}).get('filename', '')}:"
        f"{d.get('range', {}).get('start', {}).get('line', '')} {d.get('detail', '')}"
        for d in report["diagnostics"]
    ]
    assert report["valid"], "terraform validate:\n" + "\n".join(problems)
    assert not [p for p in problems if p.startswith("error")], "\n".join(problems)


@pytest.mark.slow
def test_terraform_test_plans_with_a_mocked_provider(terraform_workdir: tuple[Path, dict[str, str]]) -> None:
    workdir, env = terraform_workdir
    # Terraform 1.11's mocks refuse ephemeral resources: the password module becomes its stub
    shutil.copy(
        workdir / "tests" / "stub-generated-password" / "main.tf",
        workdir / "modules" / "generated-password" / "main.tf",
    )
    command = [env["MLP_TERRAFORM_BINARY"], "test", "-var-file=terraform.tfvars.example", "-no-color"]
    result = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"terraform test failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert re.search(r"Success! [1-9]\d* passed, 0 failed", result.stdout), result.stdout[-2000:]
