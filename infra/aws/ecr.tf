# ECR: the registry of the ml_platform image (deploy/README.md "Image"). Tags are immutable, as the
# Helm values require ("a unique tag per build, never `latest`": runs use the image of the code
# server that launched them), images are scanned on push and encrypted with the ecr key.

resource "aws_ecr_repository" "ml_platform" {
  name                 = local.prefix
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this["ecr"].arn
  }
}

# Untagged layers (a failed push, a manifest replaced by a multi-arch index) go after 14 days.
# Tagged images are never expired here: an old run or registered model may name its image.
resource "aws_ecr_lifecycle_policy" "ml_platform" {
  repository = aws_ecr_repository.ml_platform.name

  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Expire untagged images after 14 days"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = 14
      }
      action = { type = "expire" }
    }]
  })
}
