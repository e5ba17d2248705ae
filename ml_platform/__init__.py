"""ml_platform: the ML lifecycle as a partitioned, lineage-exact Dagster asset graph."""

__version__ = "0.1.0"
