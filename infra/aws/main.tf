# Shared names, cost tags and the KMS keys every other file encrypts with.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# The zones of var.availability_zones, checked to exist and be available in this account.
data "aws_availability_zones" "selected" {
  state = "available"

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == length(var.availability_zones)
      error_message = "Some of availability_zones are not available in this region and account: ${join(", ", setsubtract(var.availability_zones, self.names))}."
    }
  }
}

locals {
  prefix       = "${var.name}-${var.environment}"
  cluster_name = local.prefix
  account_id   = data.aws_caller_identity.current.account_id
  partition    = data.aws_partition.current.partition
  # As named in the variable (its order decides which subnet the single NAT gateway sits in);
  # data.aws_availability_zones.selected only checks that they exist.
  azs = var.availability_zones

  # Cost tags. ml-platform/team is the same key and value as the pods' ml-platform/team label
  # (ml_platform/defs/k8s.py, MLP_COST_TEAM): activate it as a cost allocation tag in the Billing
  # console and the AWS bill splits the same way as the cluster's pods.
  tags = merge(var.extra_tags, {
    "ml-platform/team"        = var.team
    "ml-platform/environment" = var.environment
    "ml-platform/managed-by"  = "terraform"
  })

  # GPU nodes: what ml_platform/defs/k8s.py puts on GPU step pods must find them. Node selector
  # `nvidia.com/gpu.present=true`; toleration `nvidia.com/gpu` (operator Exists, NoSchedule).
  gpu_node_label_key   = "nvidia.com/gpu.present"
  gpu_node_label_value = "true"
  gpu_taint_key        = "nvidia.com/gpu"
  gpu_taint_value      = "true"

  # KMS keys, one per purpose, so that a key policy or a grant never opens more than one kind of
  # data. `logs` also admits the CloudWatch Logs service (log groups of EKS, VPC flow logs, RDS).
  kms_keys = {
    eks     = "EKS secrets envelope encryption"
    s3      = "S3 objects (lakeFS data, MLflow artifacts)"
    rds     = "RDS storage and Performance Insights"
    secrets = "Secrets Manager secrets (app passwords, the RDS-managed master password)"
    logs    = "CloudWatch Logs (EKS control plane, VPC flow logs, RDS)"
    efs     = "EFS shared volume (ml-platform-storage)"
    ecr     = "ECR image repository"
  }
}

resource "aws_kms_key" "this" {
  for_each = local.kms_keys

  description             = "${local.prefix}: ${each.value}"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = 30

  # The account's IAM policies decide who uses the key (the IAM roles in iam.tf get kms actions on
  # their key only); the logs key also lets CloudWatch Logs encrypt the log groups of this account.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "AccountAdministersAndDelegatesToIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      }],
      each.key == "logs" ? [{
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
          }
        }
      }] : []
    )
  })

  tags = { Name = "${local.prefix}-${each.key}" }
}

resource "aws_kms_alias" "this" {
  for_each = local.kms_keys

  name          = "alias/${local.prefix}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}
