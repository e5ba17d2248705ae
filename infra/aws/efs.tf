# EFS: the ReadWriteMany volume behind the `ml-platform-storage` claim of the Helm values (the Delta
# tables under MLP_ROOT_DIR/storage, shared by the code server, run pods and step pods). Encrypted
# at rest (KMS) and in transit (the EFS CSI driver mounts with TLS), backed up daily by AWS Backup,
# reachable from the cluster's nodes only. One access point pins every file to the image's user
# (10001:10001, deploy/README.md "Image").

resource "aws_efs_file_system" "storage" {
  creation_token   = "${local.prefix}-storage"
  encrypted        = true
  kms_key_id       = aws_kms_key.this["efs"].arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  # Partitions nobody read for 30 days move to Infrequent Access (about a tenth of the storage
  # price); the first read brings a file back.
  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  lifecycle_policy {
    transition_to_primary_storage_class = "AFTER_1_ACCESS"
  }

  tags = { Name = "${local.prefix}-storage" }
}

resource "aws_efs_backup_policy" "storage" {
  file_system_id = aws_efs_file_system.storage.id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_security_group" "efs" {
  name        = "${local.prefix}-efs"
  description = "NFS from the EKS nodes only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.prefix}-efs" }
}

resource "aws_vpc_security_group_ingress_rule" "efs_from_eks" {
  security_group_id            = aws_security_group.efs.id
  description                  = "NFS from the EKS cluster security group (nodes)"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
}

resource "aws_efs_mount_target" "storage" {
  count = length(local.azs)

  file_system_id  = aws_efs_file_system.storage.id
  subnet_id       = aws_subnet.private[count.index].id
  security_groups = [aws_security_group.efs.id]
}

resource "aws_efs_access_point" "storage" {
  file_system_id = aws_efs_file_system.storage.id

  posix_user {
    uid = 10001
    gid = 10001
  }

  root_directory {
    path = "/ml-platform-storage"

    creation_info {
      owner_uid   = 10001
      owner_gid   = 10001
      permissions = "0750"
    }
  }

  tags = { Name = "${local.prefix}-storage" }
}
