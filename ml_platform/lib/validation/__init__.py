"""Pandera (polars backend) schemas and the split of a day into valid and quarantined rows."""
