# What the Helm values, the in-cluster steps of README.md and docs/deploy.md need. No output is a
# secret: passwords live only in Secrets Manager (outputs name the secrets, never their values).

output "region" {
  description = "AWS region of everything below."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.main.name
}

output "cluster_endpoint" {
  description = "EKS API endpoint (private unless cluster_endpoint_public_access_cidrs is set)."
  value       = aws_eks_cluster.main.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the EKS API (public data, for kubeconfig)."
  value       = aws_eks_cluster.main.certificate_authority[0].data
}

output "update_kubeconfig_command" {
  description = "Writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${aws_eks_cluster.main.name}"
}

output "ecr_repository_url" {
  description = "Image repository for deploy/helm/values-production.yaml (dagster-user-deployments...image.repository and MLP_K8S_IMAGE)."
  value       = aws_ecr_repository.ml_platform.repository_url
}

output "irsa_role_arns" {
  description = "IRSA role per service account, keyed as in iam.tf (ml_platform, serving, lakefs, external_secrets, cluster_autoscaler, vpc_cni, efs_csi): the value of each service account's eks.amazonaws.com/role-arn annotation."
  value       = { for key, role in aws_iam_role.irsa : key => role.arn }
}

output "irsa_service_accounts" {
  description = "The namespace/name each IRSA role trusts, keyed like irsa_role_arns."
  value       = { for key, sa in local.irsa_service_accounts : key => "${sa.namespace}/${sa.service_account}" }
}

output "helm_values_overlay" {
  description = "A second values file for the Dagster chart (helm ... -f deploy/helm/values-production.yaml -f <this>): the IRSA annotation of the ml-platform service account. Maps only, so it merges with the production values without replacing any list."
  value = yamlencode({
    serviceAccount = {
      annotations = {
        "eks.amazonaws.com/role-arn" = aws_iam_role.irsa["ml_platform"].arn
      }
    }
  })
}

output "data_bucket" {
  description = "lakeFS data bucket (the block store of the lakeFS server)."
  value       = aws_s3_bucket.data.id
}

output "lakefs_storage_namespace" {
  description = "Storage namespace of the lakeFS repository ml-platform (docs/lakefs.md \"Production\": lakectl repo create lakefs://ml-platform <this>)."
  value       = "s3://${aws_s3_bucket.data.id}/lakefs/ml-platform"
}

output "artifacts_bucket" {
  description = "MLflow artifact bucket."
  value       = aws_s3_bucket.artifacts.id
}

output "mlflow_artifact_root" {
  description = "MLP_MLFLOW_ARTIFACT_ROOT for artifacts in S3 (in ml-platform-env only when mlflow_artifacts_on_s3 is true)."
  value       = "s3://${aws_s3_bucket.artifacts.id}/mlflow"
}

output "access_logs_bucket" {
  description = "Bucket of the S3 server access logs."
  value       = aws_s3_bucket.access_logs.id
}

output "rds_address" {
  description = "RDS endpoint host name: the target of the ExternalName Service behind db_host_in_cluster (README.md step 3)."
  value       = aws_db_instance.main.address
}

output "rds_port" {
  description = "RDS port."
  value       = aws_db_instance.main.port
}

output "db_host_in_cluster" {
  description = "The host name ml-platform-env and the Helm values use for PostgreSQL."
  value       = var.db_host_in_cluster
}

output "rds_master_user_secret_arn" {
  description = "Secrets Manager secret (managed and rotated by RDS) with the master user's password."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "secret_names" {
  description = "Secrets Manager secret names: ml_platform_env + ml_platform_lakefs become the Kubernetes Secret ml-platform-env, dagster_postgresql becomes dagster-postgresql-secret, lakefs_server + lakefs_auth_encrypt_key become lakefs-server (README.md step 5); db_app_users serves the database bootstrap."
  value = {
    ml_platform_env         = aws_secretsmanager_secret.ml_platform_env.name
    ml_platform_lakefs      = aws_secretsmanager_secret.ml_platform_lakefs.name
    dagster_postgresql      = aws_secretsmanager_secret.dagster_postgresql.name
    lakefs_server           = aws_secretsmanager_secret.lakefs_server.name
    lakefs_auth_encrypt_key = aws_secretsmanager_secret.lakefs_auth_encrypt_key.name
    db_app_users            = aws_secretsmanager_secret.db_app_users.name
  }
}

output "efs_volume_handle" {
  description = "volumeHandle of the PersistentVolume behind the ml-platform-storage claim (<file system>::<access point>)."
  value       = "${aws_efs_file_system.storage.id}::${aws_efs_access_point.storage.id}"
}

output "gpu_node_selector" {
  description = "Label of the GPU spot nodes; ml_platform/defs/k8s.py selects it for GPU steps."
  value       = { (local.gpu_node_label_key) = local.gpu_node_label_value }
}

output "gpu_taint" {
  description = "Taint of the GPU spot nodes; GPU steps tolerate it (key nvidia.com/gpu, operator Exists, NoSchedule)."
  value       = "${local.gpu_taint_key}=${local.gpu_taint_value}:NoSchedule"
}
