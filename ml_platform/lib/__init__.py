"""Pure, typed logic of the platform. Nothing under ``lib`` imports dagster."""
