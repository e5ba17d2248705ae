# `terraform test` with a mocked AWS provider: plans the whole configuration offline (no AWS
# account, no credentials, no network) and checks what the plan would create, plus that the
# variable validations reject what they must.
#
# Not runnable in infra/aws as it is: Terraform 1.11's mock providers refuse ephemeral resources,
# so ml_platform_tests/test_infra.py runs it in a temporary copy where modules/generated-password
# is replaced by tests/stub-generated-password (same interface), with
#   terraform init -backend=false && terraform test -var-file=terraform.tfvars.example

mock_provider "aws" {
  override_during = plan

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      identity = [{ oidc = [{ issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE" }] }]
      vpc_config = {
        cluster_security_group_id = "sg-0123456789abcdef0"
      }
      certificate_authority = [{ data = "Q0E=" }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      url = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
      arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
    }
  }

  mock_resource "aws_eks_node_group" {
    defaults = {
      resources = [{ autoscaling_groups = [{ name = "eks-gpu-spot-example" }] }]
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/example"
    }
  }

  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::example-bucket"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:example"
    }
  }

  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:example"
    }
  }

  mock_resource "aws_db_instance" {
    defaults = {
      address            = "ml-platform-prod.example.eu-west-1.rds.amazonaws.com"
      master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds-master" }]
    }
  }
}

run "plan_with_the_example_variables" {
  command = plan

  assert {
    condition     = aws_eks_node_group.gpu.capacity_type == "SPOT" && aws_eks_node_group.gpu.scaling_config[0].min_size == 0
    error_message = "The GPU node group must be SPOT and scale from 0."
  }

  assert {
    condition     = aws_eks_node_group.gpu.labels["nvidia.com/gpu.present"] == "true"
    error_message = "GPU nodes must carry the label nvidia.com/gpu.present=true (ml_platform/defs/k8s.py selects it)."
  }

  assert {
    condition     = length([for t in aws_eks_node_group.gpu.taint : t if t.key == "nvidia.com/gpu" && t.effect == "NO_SCHEDULE"]) == 1
    error_message = "GPU nodes must carry the taint nvidia.com/gpu:NoSchedule (GPU steps tolerate it)."
  }

  assert {
    condition     = aws_eks_cluster.main.vpc_config[0].endpoint_private_access && !aws_eks_cluster.main.vpc_config[0].endpoint_public_access
    error_message = "With no public CIDRs the EKS endpoint must be private only."
  }

  assert {
    condition     = length(aws_eks_cluster.main.enabled_cluster_log_types) == 5
    error_message = "All five control-plane log types must be enabled."
  }

  assert {
    condition     = !aws_db_instance.main.publicly_accessible && aws_db_instance.main.storage_encrypted && aws_db_instance.main.deletion_protection && aws_db_instance.main.manage_master_user_password
    error_message = "RDS must be private, encrypted, deletion-protected, with an RDS-managed master password."
  }

  assert {
    condition     = length(aws_subnet.private) == 3 && length(aws_nat_gateway.main) == 1
    error_message = "Three private subnets and one NAT gateway expected from the example variables."
  }

  assert {
    condition     = aws_iam_role.irsa["ml_platform"].name == "ml-platform-prod-ml-platform"
    error_message = "IRSA role of the ml-platform service account: unexpected name."
  }

  assert {
    condition     = output.gpu_taint == "nvidia.com/gpu=true:NoSchedule"
    error_message = "The gpu_taint output must describe the taint GPU steps tolerate."
  }

  assert {
    condition     = output.irsa_service_accounts["ml_platform"] == "ml-platform/ml-platform" && output.irsa_service_accounts["serving"] == "ml-platform/ml-platform-serving" && output.irsa_service_accounts["lakefs"] == "lakefs/lakefs"
    error_message = "IRSA roles must trust the service accounts of the Helm values and the Bento."
  }

  assert {
    condition     = aws_secretsmanager_secret.ml_platform_env.name == "ml-platform-prod/ml-platform-env" && aws_secretsmanager_secret.dagster_postgresql.name == "ml-platform-prod/dagster-postgresql-secret"
    error_message = "Secrets Manager names must end with the Kubernetes Secret names of the Helm values."
  }

  assert {
    condition     = aws_s3_bucket.data.bucket == "ml-platform-prod-data-123456789012" && output.lakefs_storage_namespace == "s3://${aws_s3_bucket.data.id}/lakefs/ml-platform"
    error_message = "lakeFS storage namespace: unexpected bucket or prefix."
  }
}

run "public_endpoint_only_for_listed_cidrs" {
  command = plan

  variables {
    cluster_endpoint_public_access_cidrs = ["203.0.113.0/24"]
  }

  assert {
    condition     = aws_eks_cluster.main.vpc_config[0].endpoint_public_access && tolist(aws_eks_cluster.main.vpc_config[0].public_access_cidrs) == tolist(["203.0.113.0/24"])
    error_message = "The public endpoint must open for the listed CIDRs only."
  }
}

run "rejects_an_open_public_endpoint" {
  command = plan

  variables {
    cluster_endpoint_public_access_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.cluster_endpoint_public_access_cidrs]
}

run "rejects_multi_gpu_and_arm_instance_types" {
  command = plan

  variables {
    gpu_instance_types = ["p4d.24xlarge", "g5g.xlarge"]
  }

  expect_failures = [var.gpu_instance_types]
}

run "rejects_zones_of_another_region" {
  command = plan

  variables {
    availability_zones = ["us-east-1a", "us-east-1b"]
  }

  expect_failures = [var.availability_zones]
}

run "rejects_a_team_tag_that_is_no_label_value" {
  command = plan

  variables {
    team = "ML Platform!"
  }

  expect_failures = [var.team]
}
