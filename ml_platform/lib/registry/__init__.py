"""The model registry: MLflow aliases, governed promotion and its audit log."""
