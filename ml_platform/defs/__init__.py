"""Dagster wiring only: thin assets and checks that call ``lib``."""
