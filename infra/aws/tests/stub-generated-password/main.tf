# Stand-in for modules/generated-password in the offline plan tests (same variables and output):
# the mock AWS provider of Terraform 1.11 cannot stand in for the ephemeral resource of the real
# module. ml_platform_tests/test_infra.py copies infra/aws to a temporary folder and puts this file
# in place of modules/generated-password/main.tf there; the real module is checked by
# `terraform validate`. Its value is ephemeral too (from an ephemeral variable), as the real one.

terraform {
  required_version = ">= 1.11.0, < 2.0.0"
}

variable "length" {
  type        = number
  description = "Password length."
  default     = 40
}

variable "stub_value" {
  type        = string
  description = "What the stub returns instead of a generated password."
  default     = "stub-password-for-offline-plan-tests"
  ephemeral   = true
}

output "password" {
  description = "A fixed stand-in for the generated password (ephemeral)."
  value       = var.stub_value
  ephemeral   = true
  sensitive   = true
}
