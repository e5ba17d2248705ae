# IAM roles for service accounts (IRSA): each role can be assumed only by one Kubernetes service
# account of one namespace, through the cluster's OIDC provider (StringEquals on both `sub` and
# `aud`), and carries only what that workload does.

resource "aws_iam_openid_connect_provider" "eks" {
  url            = aws_eks_cluster.main.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  # No thumbprint_list: IAM trusts the EKS OIDC issuers through its own CA library.

  tags = { Name = "${local.cluster_name}-irsa" }
}

locals {
  oidc_issuer = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")

  # role key => the one service account that may assume it. The ml_platform and serving entries
  # are the names of deploy/helm/values-production.yaml and deploy/bento (variables.tf).
  irsa_service_accounts = {
    # Dagster webserver, daemon, code server, run pods and step pods (serviceAccount.name,
    # MLP_K8S_SERVICE_ACCOUNT): MLflow artifacts read/write.
    ml_platform = {
      namespace       = var.k8s_namespace
      service_account = var.k8s_service_account
    }
    # The Bento: MLflow artifacts read only.
    serving = {
      namespace       = var.k8s_namespace
      service_account = var.k8s_serving_service_account
    }
    # The lakeFS server (chart lakefs/lakefs, release lakefs): its block store is the data bucket.
    lakefs = {
      namespace       = var.lakefs_namespace
      service_account = var.lakefs_service_account
    }
    # External Secrets Operator (chart external-secrets/external-secrets, release and namespace
    # external-secrets): copies the secrets of secrets.tf into Kubernetes Secrets.
    external_secrets = {
      namespace       = "external-secrets"
      service_account = "external-secrets"
    }
    # Cluster autoscaler (chart autoscaler/cluster-autoscaler, README.md step 4).
    cluster_autoscaler = {
      namespace       = "kube-system"
      service_account = "cluster-autoscaler"
    }
    # The VPC CNI add-on (aws-node DaemonSet).
    vpc_cni = {
      namespace       = "kube-system"
      service_account = "aws-node"
    }
    # The EFS CSI driver's controller (the add-on; also gives its pods the region without IMDS,
    # which the hop limit of 1 keeps from pods).
    efs_csi = {
      namespace       = "kube-system"
      service_account = "efs-csi-controller-sa"
    }
  }
}

data "aws_iam_policy_document" "irsa_trust" {
  for_each = local.irsa_service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa_service_accounts

  name                 = "${local.prefix}-${replace(each.key, "_", "-")}"
  description          = "IRSA: ${each.value.namespace}/${each.value.service_account} on ${local.cluster_name}"
  assume_role_policy   = data.aws_iam_policy_document.irsa_trust[each.key].json
  max_session_duration = 3600
}

# --- ml_platform: MLflow artifacts, read and write --------------------------------------------

data "aws_iam_policy_document" "ml_platform" {
  statement {
    sid       = "ListArtifactBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }

  statement {
    sid = "ReadWriteArtifacts"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }

  statement {
    sid       = "UseTheS3KeyThroughS3Only"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this["s3"].arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "ml_platform" {
  name   = "mlflow-artifacts-read-write"
  role   = aws_iam_role.irsa["ml_platform"].id
  policy = data.aws_iam_policy_document.ml_platform.json
}

# --- serving: MLflow artifacts, read only -----------------------------------------------------

data "aws_iam_policy_document" "serving" {
  statement {
    sid       = "ListArtifactBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }

  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }

  statement {
    sid       = "DecryptThroughS3Only"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this["s3"].arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "serving" {
  name   = "mlflow-artifacts-read"
  role   = aws_iam_role.irsa["serving"].id
  policy = data.aws_iam_policy_document.serving.json
}

# --- lakefs: the data bucket, read and write ---------------------------------------------------

data "aws_iam_policy_document" "lakefs" {
  statement {
    sid       = "ListDataBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.data.arn]
  }

  statement {
    sid = "ReadWriteObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.data.arn}/*"]
  }

  statement {
    sid       = "UseTheS3KeyThroughS3Only"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this["s3"].arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "lakefs" {
  name   = "lakefs-data-read-write"
  role   = aws_iam_role.irsa["lakefs"].id
  policy = data.aws_iam_policy_document.lakefs.json
}

# --- external_secrets: the secrets that become Kubernetes Secrets ------------------------------

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid = "ReadTheClusterSecretsOnly"
    actions = [
      "secretsmanager:GetSecretValue",
      "secretsmanager:DescribeSecret",
    ]
    # not db_app_users: the database bootstrap reads that one, no pod
    resources = [
      aws_secretsmanager_secret.ml_platform_env.arn,
      aws_secretsmanager_secret.ml_platform_lakefs.arn,
      aws_secretsmanager_secret.dagster_postgresql.arn,
      aws_secretsmanager_secret.lakefs_server.arn,
      aws_secretsmanager_secret.lakefs_auth_encrypt_key.arn,
    ]
  }

  statement {
    sid       = "DecryptThroughSecretsManagerOnly"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this["secrets"].arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "external_secrets" {
  name   = "read-ml-platform-secrets"
  role   = aws_iam_role.irsa["external_secrets"].id
  policy = data.aws_iam_policy_document.external_secrets.json
}

# --- cluster_autoscaler: resize this cluster's node groups only -------------------------------

data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    # Describe actions cannot be limited to resources (IAM has no resource type for them).
    resources = ["*"]
  }

  statement {
    sid       = "DescribeThisClustersNodeGroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:${var.region}:${local.account_id}:nodegroup/${local.cluster_name}/*/*"]
  }

  statement {
    sid = "ResizeThisClustersGroupsOnly"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/*"]

    # EKS tags the Auto Scaling groups of its managed node groups with the cluster's name.
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${local.cluster_name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "resize-node-groups"
  role   = aws_iam_role.irsa["cluster_autoscaler"].id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

# --- vpc_cni: the AWS-managed policy of the add-on --------------------------------------------

resource "aws_iam_role_policy_attachment" "vpc_cni" {
  role       = aws_iam_role.irsa["vpc_cni"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
}

# --- efs_csi: the AWS-managed policy of the EFS CSI driver ------------------------------------

resource "aws_iam_role_policy_attachment" "efs_csi" {
  role       = aws_iam_role.irsa["efs_csi"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
}
