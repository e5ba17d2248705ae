# EKS: the cluster (private endpoint, control-plane logs, KMS envelope encryption of Secrets), a
# system node group on demand, and a GPU node group on spot instances that scales from 0.

locals {
  cluster_public_endpoint = length(var.cluster_endpoint_public_access_cidrs) > 0
  cluster_log_types       = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

# Created before the cluster, so that the control-plane logs get this retention and key (EKS would
# otherwise create the group itself, unencrypted and kept forever).
resource "aws_cloudwatch_log_group" "eks" {
  name              = "/aws/eks/${local.cluster_name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

data "aws_iam_policy_document" "eks_cluster_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "eks_cluster" {
  name               = "${local.prefix}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_cluster_trust.json
}

resource "aws_iam_role_policy_attachment" "eks_cluster" {
  role       = aws_iam_role.eks_cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "main" {
  name     = local.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.eks_cluster.arn

  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    # Off unless CIDRs are given; then only from those CIDRs (never 0.0.0.0/0: variables.tf).
    endpoint_public_access = local.cluster_public_endpoint
    public_access_cidrs    = local.cluster_public_endpoint ? var.cluster_endpoint_public_access_cidrs : null
  }

  # Kubernetes Secrets (the ml-platform-env copy made by External Secrets, service account tokens)
  # are envelope-encrypted with the eks key.
  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.this["eks"].arn
    }
  }

  enabled_cluster_log_types = local.cluster_log_types

  # Access entries only (no aws-auth ConfigMap); the identity running terraform gets no implicit
  # admin: cluster_admin_principal_arns are the admins.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = false
  }

  # STANDARD support only: a version past standard support is upgraded by AWS instead of being
  # billed at the extended-support rate (6x the control-plane price).
  upgrade_policy {
    support_type = "STANDARD"
  }

  tags = { Name = local.cluster_name }

  depends_on = [
    aws_iam_role_policy_attachment.eks_cluster,
    aws_cloudwatch_log_group.eks,
  ]
}

resource "aws_eks_access_entry" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.main.name
  principal_arn = aws_eks_access_entry.admin[each.value].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }
}

# --- nodes ------------------------------------------------------------------------------------

data "aws_iam_policy_document" "eks_node_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# The nodes' own role: join the cluster and pull images, nothing else. The VPC CNI gets its ENI
# permissions through IRSA (iam.tf), not from this role; pods cannot reach the instance metadata
# service (hop limit 1 below), so they cannot borrow this role either.
resource "aws_iam_role" "eks_node" {
  name               = "${local.prefix}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.eks_node_trust.json
}

resource "aws_iam_role_policy_attachment" "eks_node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])

  role       = aws_iam_role.eks_node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# Launch templates: IMDSv2 only with hop limit 1, encrypted gp3 root volumes, and the cost tags on
# the instances and volumes (an Auto Scaling group does not pass the provider's default tags on).
# No image_id and no security groups: EKS picks the AMI of the node group's ami_type and attaches
# the cluster security group.
resource "aws_launch_template" "node" {
  for_each = {
    system = var.node_disk_size_gib["system"]
    gpu    = var.node_disk_size_gib["gpu"]
  }

  name                   = "${local.prefix}-${each.key}"
  description            = "EKS ${each.key} nodes of ${local.cluster_name}"
  update_default_version = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = each.value
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  dynamic "tag_specifications" {
    for_each = toset(["instance", "volume", "network-interface"])

    content {
      resource_type = tag_specifications.value
      tags = merge(local.tags, {
        Name                    = "${local.prefix}-${each.key}"
        "ml-platform/node-pool" = each.key
      })
    }
  }

  tags = { Name = "${local.prefix}-${each.key}" }
}

# System nodes, on demand: the Dagster webserver (2 + read-only), daemon, code server, run pods and
# CPU step pods, CoreDNS, the cluster autoscaler, External Secrets.
resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.main.name
  node_group_name = "system"
  node_role_arn   = aws_iam_role.eks_node.arn
  subnet_ids      = aws_subnet.private[*].id

  ami_type       = "AL2023_x86_64_STANDARD"
  capacity_type  = "ON_DEMAND"
  instance_types = var.system_instance_types

  launch_template {
    id      = aws_launch_template.node["system"].id
    version = aws_launch_template.node["system"].latest_version
  }

  scaling_config {
    min_size     = var.system_node_count.min
    desired_size = var.system_node_count.desired
    max_size     = var.system_node_count.max
  }

  update_config {
    max_unavailable = 1
  }

  # EKS replaces nodes that report unhealthy (for GPU nodes: NVIDIA XID errors, lost GPUs).
  node_repair_config {
    enabled = true
  }

  labels = {
    "ml-platform/node-pool" = "system"
    "ml-platform/team"      = var.team
  }

  tags = { Name = "${local.prefix}-system" }

  lifecycle {
    # the cluster autoscaler owns the node count after creation
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [
    aws_iam_role_policy_attachment.eks_node,
    aws_eks_addon.vpc_cni,
    aws_eks_addon.kube_proxy,
  ]
}

# GPU nodes, on spot, from 0: the training step of delay_model (MLP_TRAINING_GPUS > 0) asks for
# `nvidia.com/gpu`, tolerates the taint below and selects the label below (ml_platform/defs/k8s.py);
# the cluster autoscaler starts a node for it and removes the node when it has been idle. Nothing
# else is scheduled here: every other pod lacks the toleration.
resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.main.name
  node_group_name = "gpu-spot"
  node_role_arn   = aws_iam_role.eks_node.arn
  subnet_ids      = aws_subnet.private[*].id

  # Amazon Linux 2023 with the NVIDIA driver and container toolkit; the NVIDIA device plugin
  # (README.md step 4) advertises `nvidia.com/gpu`.
  ami_type       = "AL2023_x86_64_NVIDIA"
  capacity_type  = "SPOT"
  instance_types = var.gpu_instance_types

  launch_template {
    id      = aws_launch_template.node["gpu"].id
    version = aws_launch_template.node["gpu"].latest_version
  }

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.gpu_max_nodes
  }

  update_config {
    max_unavailable = 1
  }

  # EKS replaces nodes that report unhealthy (for GPU nodes: NVIDIA XID errors, lost GPUs).
  node_repair_config {
    enabled = true
  }

  labels = {
    (local.gpu_node_label_key) = local.gpu_node_label_value
    "ml-platform/node-pool"    = "gpu"
    "ml-platform/team"         = var.team
  }

  taint {
    key    = local.gpu_taint_key
    value  = local.gpu_taint_value
    effect = "NO_SCHEDULE"
  }

  tags = { Name = "${local.prefix}-gpu-spot" }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [
    aws_iam_role_policy_attachment.eks_node,
    aws_eks_addon.vpc_cni,
    aws_eks_addon.kube_proxy,
  ]
}

# Scale from zero: with no GPU node running, the cluster autoscaler learns what a new node would
# offer from these tags of the node group's Auto Scaling group (EKS does not put node group labels
# and taints there itself).
resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = {
    "k8s.io/cluster-autoscaler/node-template/label/${local.gpu_node_label_key}" = local.gpu_node_label_value
    "k8s.io/cluster-autoscaler/node-template/label/ml-platform/node-pool"       = "gpu"
    "k8s.io/cluster-autoscaler/node-template/taint/${local.gpu_taint_key}"      = "${local.gpu_taint_value}:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"          = "1"
  }

  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}

# --- add-ons ----------------------------------------------------------------------------------

# The VPC CNI and kube-proxy exist before the nodes (the nodes need them to become Ready).
resource "aws_eks_addon" "vpc_cni" {
  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = "vpc-cni"
  service_account_role_arn    = aws_iam_role.irsa["vpc_cni"].arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
}

resource "aws_eks_addon" "kube_proxy" {
  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = "kube-proxy"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
}

resource "aws_eks_addon" "coredns" {
  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = "coredns"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_eks_node_group.system]
}

# The EFS CSI driver mounts the shared volume (efs.tf) for the ml-platform-storage claim (statically
# provisioned on a fixed access point; the controller's role would also allow dynamic volumes).
resource "aws_eks_addon" "efs_csi" {
  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = "aws-efs-csi-driver"
  service_account_role_arn    = aws_iam_role.irsa["efs_csi"].arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_eks_node_group.system]
}
