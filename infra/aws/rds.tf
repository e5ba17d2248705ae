# RDS PostgreSQL: one instance, three databases and roles (dagster, mlflow, optuna; created by the
# bootstrap of README.md step 3). Private subnets only, reachable from the cluster's nodes only,
# encrypted at rest (KMS) and in transit (rds.force_ssl), backed up, protected from deletion. The
# master password is generated and rotated by RDS in Secrets Manager (manage_master_user_password):
# it never appears in this code, the plan or the state.

locals {
  db_identifier = local.prefix
  db_log_types  = ["postgresql", "upgrade"]
}

resource "aws_db_subnet_group" "main" {
  name        = local.db_identifier
  description = "Private subnets of ${local.prefix}"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_security_group" "rds" {
  name        = "${local.prefix}-rds"
  description = "PostgreSQL from the EKS nodes only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.prefix}-rds" }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_eks" {
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from the EKS cluster security group (nodes and pods)"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
}

resource "aws_db_parameter_group" "main" {
  name        = "${local.db_identifier}-pg${var.db_engine_version}"
  family      = "postgres${var.db_engine_version}"
  description = "${local.prefix}: TLS only, connection and slow-query logging"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  # statements slower than 1 s (not every statement: the Dagster event log writes a lot)
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Created before the instance, so that its logs get this retention and key.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(local.db_log_types)

  name              = "/aws/rds/instance/${local.db_identifier}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

data "aws_iam_policy_document" "rds_monitoring_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${local.prefix}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_trust.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "main" {
  identifier     = local.db_identifier
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  storage_type          = "gp3"
  allocated_storage     = var.db_allocated_storage_gib
  max_allocated_storage = max(var.db_max_allocated_storage_gib, var.db_allocated_storage_gib)
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this["rds"].arn

  # The instance's first database; mlflow and optuna are created by the bootstrap (README.md).
  db_name  = "dagster"
  username = "mlp_admin"
  # RDS generates the master password, keeps it in Secrets Manager (encrypted with the secrets
  # key) and rotates it; read it from the secret named by output rds_master_user_secret_arn.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this["secrets"].arn

  iam_database_authentication_enabled = true

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az
  port                   = 5432
  parameter_group_name   = aws_db_parameter_group.main.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  backup_retention_period  = var.db_backup_retention_days
  backup_window            = "02:00-03:00"
  maintenance_window       = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot    = true
  delete_automated_backups = false

  # Destroying the database takes two deliberate steps: set deletion_protection = false here and
  # apply, then destroy; a final snapshot is taken even then.
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.db_identifier}-final"

  # No RDS Extended Support (billed per vCPU-hour): a major version past its end of standard
  # support is upgraded instead.
  engine_lifecycle_support    = "open-source-rds-extended-support-disabled"
  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = false

  enabled_cloudwatch_logs_exports       = local.db_log_types
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this["rds"].arn
  performance_insights_retention_period = 7

  tags = { Name = local.db_identifier }

  depends_on = [aws_cloudwatch_log_group.rds]
}
