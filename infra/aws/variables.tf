# Inputs. Every variable has a type, a description and, where a wrong value would only fail late
# (at apply, or worse, at run time in the cluster), a validation. No variable takes a secret: the
# database passwords are generated (secrets.tf) and the RDS master password is managed by RDS.

# --- naming, region, cost tags ----------------------------------------------------------------

variable "region" {
  type        = string
  description = "AWS region of every resource, e.g. eu-west-1."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1 or us-east-2."
  }
}

variable "name" {
  type        = string
  description = "Prefix of every resource name (cluster, buckets, database, secrets)."
  default     = "ml-platform"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of a-z, 0-9 and '-', starting with a letter (it prefixes S3 bucket names)."
  }
}

variable "environment" {
  type        = string
  description = "Deployment environment; part of resource names and of the cost tags."
  default     = "prod"

  validation {
    condition     = contains(["prod", "staging", "dev"], var.environment)
    error_message = "environment must be one of prod, staging, dev."
  }
}

variable "team" {
  type        = string
  description = "Value of the ml-platform/team cost tag on every AWS resource; the same value as the pods' ml-platform/team label (MLP_COST_TEAM, default ml-platform)."
  default     = "ml-platform"

  validation {
    condition     = can(regex("^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$", var.team))
    error_message = "team must be a valid Kubernetes label value (<= 63 characters of [a-zA-Z0-9._-], alphanumeric at both ends), so the AWS tag and the pod label can be joined."
  }
}

variable "extra_tags" {
  type        = map(string)
  description = "More tags for every resource (e.g. a cost center). Cannot override the ml-platform/* tags."
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.extra_tags) : !startswith(key, "ml-platform/")])
    error_message = "extra_tags must not set ml-platform/* keys: those come from team and environment."
  }
}

# --- network ----------------------------------------------------------------------------------

variable "vpc_cidr" {
  type        = string
  description = "CIDR block of the VPC (a /16 is split into /20 private and /24 public subnets)."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of size /16 or larger."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones of the subnets, EFS mount targets and NAT gateway(s), by name (e.g. eu-west-1a). Named, not counted: a zone AWS adds later never moves a subnet."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must name 2 or 3 distinct zones (EKS and RDS Multi-AZ need at least two)."
  }

  validation {
    condition     = alltrue([for az in var.availability_zones : startswith(az, var.region) && can(regex("^[a-z0-9-]+[a-z]$", az))])
    error_message = "availability_zones must be zone names of var.region (e.g. eu-west-1a for eu-west-1)."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all private subnets (cheaper; egress fails while its AZ is down) instead of one per availability zone."
  default     = true
}

# --- EKS --------------------------------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version (minor), e.g. 1.32. Upgrade one minor at a time."
  default     = "1.32"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.32."
  }
}

variable "cluster_endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the EKS API's public endpoint. Empty (the default): the public endpoint is off and the API is reachable only from inside the VPC (VPN, bastion, CI runner in the VPC)."
  default     = []

  validation {
    condition     = alltrue([for cidr in var.cluster_endpoint_public_access_cidrs : can(cidrhost(cidr, 0)) && !contains(["0.0.0.0/0", "::/0"], cidr)])
    error_message = "cluster_endpoint_public_access_cidrs must be valid CIDR blocks, none of them 0.0.0.0/0 or ::/0."
  }
}

variable "cluster_admin_principal_arns" {
  type        = list(string)
  description = "IAM role or user ARNs granted cluster admin through EKS access entries (AmazonEKSClusterAdminPolicy). The identity running terraform gets no implicit admin."

  validation {
    condition     = length(var.cluster_admin_principal_arns) > 0 && alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", arn))])
    error_message = "cluster_admin_principal_arns must list at least one IAM role or user ARN (arn:aws:iam::123456789012:role/...)."
  }
}

variable "system_instance_types" {
  type        = list(string)
  description = "On-demand instance types of the system node group (Dagster webserver, daemon, code server, run pods and CPU step pods)."
  default     = ["m6i.xlarge"]

  validation {
    condition     = length(var.system_instance_types) > 0
    error_message = "system_instance_types must not be empty."
  }
}

variable "system_node_count" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Size of the system node group: min, desired (initial; the cluster autoscaler changes it afterwards) and max nodes."
  default     = { min = 2, desired = 2, max = 6 }

  validation {
    condition     = var.system_node_count.min >= 1 && var.system_node_count.min <= var.system_node_count.desired && var.system_node_count.desired <= var.system_node_count.max
    error_message = "system_node_count must satisfy 1 <= min <= desired <= max."
  }
}

variable "gpu_instance_types" {
  type        = list(string)
  description = "Spot instance types of the GPU node group, all x86_64 NVIDIA types with one GPU (the Dagster queue runs one GPU run at a time). Several types widen the spot pools the node group can draw from."
  default     = ["g5.xlarge", "g6.xlarge", "g5.2xlarge", "g4dn.xlarge"]

  validation {
    condition     = length(var.gpu_instance_types) > 0 && alltrue([for t in var.gpu_instance_types : can(regex("^(g4dn|g5|g6|g6e|gr6)\\.(xlarge|2xlarge|4xlarge|8xlarge|16xlarge)$", t))])
    error_message = "gpu_instance_types must be single-GPU x86_64 NVIDIA instance types (g4dn, g5, g6, g6e, gr6; xlarge to 16xlarge)."
  }
}

variable "gpu_max_nodes" {
  type        = number
  description = "Maximum number of GPU spot nodes. The minimum is always 0: no GPU node runs (or costs) while no GPU step is pending."
  default     = 1

  validation {
    condition     = var.gpu_max_nodes >= 1 && var.gpu_max_nodes <= 10 && floor(var.gpu_max_nodes) == var.gpu_max_nodes
    error_message = "gpu_max_nodes must be an integer from 1 to 10."
  }
}

variable "node_disk_size_gib" {
  type        = map(number)
  description = "Root volume size (GiB, gp3, encrypted) per node group: system and gpu (the CUDA image and its layers are large)."
  default     = { system = 80, gpu = 150 }

  validation {
    condition     = alltrue([for group in ["system", "gpu"] : contains(keys(var.node_disk_size_gib), group) && lookup(var.node_disk_size_gib, group, 0) >= 40])
    error_message = "node_disk_size_gib must give system and gpu, each at least 40 GiB."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the CloudWatch log groups (EKS control plane, VPC flow logs, RDS)."
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value of at least one year (365, 400, 545, 731, ...)."
  }
}

# --- Kubernetes names (must match deploy/helm/values-production.yaml) -------------------------

variable "k8s_namespace" {
  type        = string
  description = "Namespace of the Dagster release and of the run and step pods (values-production.yaml: MLP_K8S_NAMESPACE, runLauncher jobNamespace)."
  default     = "ml-platform"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a valid Kubernetes namespace name."
  }
}

variable "k8s_service_account" {
  type        = string
  description = "Service account of the Dagster pods, run pods and step pods (values-production.yaml: serviceAccount.name; MLP_K8S_SERVICE_ACCOUNT). Its IRSA role reads and writes the MLflow artifact bucket."
  default     = "ml-platform"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.k8s_service_account))
    error_message = "k8s_service_account must be a valid Kubernetes service account name."
  }
}

variable "k8s_serving_service_account" {
  type        = string
  description = "Service account of the Bento (deploy/bento/base/deployment.yaml: serviceAccountName). Its IRSA role only reads the MLflow artifact bucket."
  default     = "ml-platform-serving"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.k8s_serving_service_account))
    error_message = "k8s_serving_service_account must be a valid Kubernetes service account name."
  }
}

variable "lakefs_namespace" {
  type        = string
  description = "Namespace of the lakeFS server (values-production.yaml MLP_LAKEFS_ENDPOINT: http://lakefs.lakefs.svc.cluster.local/api/v1, release lakefs in namespace lakefs)."
  default     = "lakefs"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.lakefs_namespace))
    error_message = "lakefs_namespace must be a valid Kubernetes namespace name."
  }
}

variable "lakefs_service_account" {
  type        = string
  description = "Service account of the lakeFS server pods (lakeFS chart serviceAccount.name). Its IRSA role reads and writes the lakeFS data bucket."
  default     = "lakefs"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.lakefs_service_account))
    error_message = "lakefs_service_account must be a valid Kubernetes service account name."
  }
}

variable "db_host_in_cluster" {
  type        = string
  description = "Host name the pods use for PostgreSQL (values-production.yaml postgresql.postgresqlHost). An ExternalName Service of that name points it at the RDS endpoint (README.md step 3), so the Helm values and the Bento's config stay as they are."
  default     = "postgres.ml-platform.svc.cluster.local"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.db_host_in_cluster))
    error_message = "db_host_in_cluster must be a DNS name."
  }
}

# --- RDS PostgreSQL ---------------------------------------------------------------------------

variable "db_engine_version" {
  type        = string
  description = "PostgreSQL major version of the RDS instance (minor versions are upgraded automatically in the maintenance window)."
  default     = "16"

  validation {
    condition     = contains(["15", "16", "17"], var.db_engine_version)
    error_message = "db_engine_version must be 15, 16 or 17 (the parameter group family follows it)."
  }
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class. Dagster's run and event storage, MLflow's registry and Optuna's trials are small: a burstable class is enough to start."
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "db_instance_class must look like db.t4g.medium."
  }
}

variable "db_allocated_storage_gib" {
  type        = number
  description = "Initial gp3 storage of the database (GiB); storage autoscaling grows it up to db_max_allocated_storage_gib."
  default     = 50

  validation {
    condition     = var.db_allocated_storage_gib >= 20 && var.db_allocated_storage_gib <= 16384
    error_message = "db_allocated_storage_gib must be between 20 and 16384."
  }
}

variable "db_max_allocated_storage_gib" {
  type        = number
  description = "Upper bound of RDS storage autoscaling (GiB)."
  default     = 200

  validation {
    condition     = var.db_max_allocated_storage_gib >= 20 && var.db_max_allocated_storage_gib <= 65536
    error_message = "db_max_allocated_storage_gib must be between 20 and 65536 (and not below db_allocated_storage_gib)."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Run RDS Multi-AZ (a standby in a second AZ, automatic failover). Doubles the instance cost."
  default     = true
}

variable "db_backup_retention_days" {
  type        = number
  description = "Days of automated RDS backups (point-in-time recovery window)."
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

# --- S3 lifecycle -----------------------------------------------------------------------------

variable "artifacts_transition_days" {
  type = object({
    standard_ia  = number
    glacier_ir   = number
    noncurrent   = number
    expire_after = number
  })
  description = "MLflow artifact bucket lifecycle: current objects move to STANDARD_IA and GLACIER_IR after these many days; overwritten or deleted (noncurrent) versions are kept noncurrent days, then deleted. expire_after (0 = never) deletes current objects: leave it 0 unless old registry versions may lose their weights."
  default     = { standard_ia = 90, glacier_ir = 365, noncurrent = 30, expire_after = 0 }

  validation {
    condition = (
      var.artifacts_transition_days.standard_ia >= 30
      && var.artifacts_transition_days.glacier_ir >= var.artifacts_transition_days.standard_ia + 30
      && var.artifacts_transition_days.noncurrent >= 1
      && (var.artifacts_transition_days.expire_after == 0 || var.artifacts_transition_days.expire_after > var.artifacts_transition_days.glacier_ir + 90)
    )
    error_message = "artifacts_transition_days: standard_ia >= 30 (S3 minimum), glacier_ir >= standard_ia + 30, noncurrent >= 1, expire_after 0 or > glacier_ir + 90 (GLACIER_IR's minimum storage duration)."
  }
}

variable "data_lifecycle_days" {
  type = object({
    intelligent_tiering = number
    noncurrent          = number
  })
  description = "lakeFS data bucket lifecycle: objects move to INTELLIGENT_TIERING after intelligent_tiering days (no retrieval fees, unlike STANDARD_IA: lakeFS may read any old commit); objects lakeFS garbage collection deleted (noncurrent versions) are kept noncurrent days, then deleted."
  default     = { intelligent_tiering = 30, noncurrent = 30 }

  validation {
    condition     = var.data_lifecycle_days.intelligent_tiering >= 0 && var.data_lifecycle_days.noncurrent >= 1
    error_message = "data_lifecycle_days: intelligent_tiering >= 0, noncurrent >= 1."
  }
}

variable "access_log_retention_days" {
  type        = number
  description = "Days S3 server access logs are kept in the access-log bucket."
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 90
    error_message = "access_log_retention_days must be at least 90."
  }
}

# --- secrets ----------------------------------------------------------------------------------

variable "app_secrets_version" {
  type        = number
  description = "Version of the generated database passwords and of the secrets built from them (secrets.tf). Terraform writes the write-only secret values only when this number changes: raise it to rotate the app passwords (then run the role ALTERs of README.md \"Rotate\")."
  default     = 1

  validation {
    condition     = var.app_secrets_version >= 1 && floor(var.app_secrets_version) == var.app_secrets_version
    error_message = "app_secrets_version must be a positive integer."
  }
}

variable "notify_targets" {
  type        = list(string)
  description = "MLP_NOTIFY of ml-platform-env (alert channels). Webhook URLs are secrets: pass them with TF_VAR_notify_targets, never in a tfvars file. Ephemeral: never stored in plan or state."
  default     = ["log"]
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = length(var.notify_targets) > 0
    error_message = "notify_targets must name at least one channel (e.g. [\"log\"])."
  }
}

variable "mlflow_artifacts_on_s3" {
  type        = bool
  description = "Put MLP_MLFLOW_ARTIFACT_ROOT=s3://<artifact bucket>/mlflow into ml-platform-env, so new MLflow experiments keep their artifacts in S3. Off by default: the Bento (deploy/bento) reads artifacts from the shared volume; switch both together (README.md \"MLflow artifacts in S3\")."
  default     = false
}
