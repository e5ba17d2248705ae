# Terraform and provider versions, pinned exactly: a provider upgrade is a reviewed change of this
# file (then `terraform init -upgrade` and commit the new .terraform.lock.hcl).
#
# Terraform >= 1.11 is required for the write-only `secret_string_wo` arguments (secrets.tf): the
# generated database passwords never enter the plan or the state.
terraform {
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "= 5.100.0"
    }
  }

  # State in S3 with S3-native locking (Terraform >= 1.10). Partial configuration: the bucket, key
  # and region come from `terraform init -backend-config=backend.hcl` (see backend.hcl.example and
  # README.md "Apply"). The state holds no password (see secrets.tf), but it does hold ARNs,
  # endpoints and the cluster CA: keep its bucket private, versioned and encrypted.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  # Every taggable AWS resource carries the cost tags (locals.tags, main.tf). EC2 instances and
  # volumes launched by the node groups' Auto Scaling groups do not inherit provider tags: the
  # launch templates (eks.tf) tag them explicitly.
  default_tags {
    tags = local.tags
  }
}
